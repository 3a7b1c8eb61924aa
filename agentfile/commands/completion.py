"""`agentfile completion bash|zsh|fish`: a shell completion script, written by shtab from the
command line's own parser, so commands and options never drift from it.

Target names come from the manifest when completing: the script runs the hidden
`agentfile list --names`, honouring a `-f FILE` or `-C DIR` already typed.
"""

from __future__ import annotations

import argparse
import sys

import shtab

from agentfile.errors import EXIT_OK

SHELLS = ("bash", "zsh", "fish")
# Positionals that name targets, by their dest in the parser.
_TARGET_DESTS = ("targets", "target")
_FUNCTION = "_agentfile_target_names"
# `-f FILE` / `-C DIR` typed on the line (before or after the command) are passed on, so the
# names come from the manifest the command will read.
_PREAMBLES = {
    "bash": f"""
# Target names from the manifest; $1 is the word being completed.
{_FUNCTION}() {{
  local i args=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "${{COMP_WORDS[i]}}" in
      -f|--file|-C|--directory) args+=("${{COMP_WORDS[i]}}" "${{COMP_WORDS[i+1]}}") ;;
    esac
  done
  compgen -W "$(agentfile "${{args[@]}}" list --names 2>/dev/null)" -- "$1"
}}
""",
    "zsh": f"""
# Target names from the manifest.
{_FUNCTION}() {{
  local -a names args
  local i
  for ((i = 2; i < CURRENT; i++)); do
    case "${{words[i]}}" in
      -f|--file|-C|--directory) args+=("${{words[i]}}" "${{words[i+1]}}") ;;
    esac
  done
  names=(${{(f)"$(agentfile "${{args[@]}}" list --names 2>/dev/null)"}})
  compadd -a names
}}
""",
    "fish": f"""
# Target names from the manifest.
function {_FUNCTION}
    set -l words (commandline -opc)
    set -l args
    for i in (seq 2 (count $words))
        switch $words[$i]
            case -f --file -C --directory
                set -a args $words[$i] $words[(math $i + 1)]
        end
    end
    agentfile $args list --names 2>/dev/null
end
""",
}
_ACTIONS = {"bash": _FUNCTION, "zsh": _FUNCTION, "fish": f"({_FUNCTION})"}


def completion(*, shell: str, parser: argparse.ArgumentParser) -> int:
    for action in _positionals(parser):
        if action.dest in _TARGET_DESTS:
            action.complete = _ACTIONS  # type: ignore[attr-defined]
    sys.stdout.write(shtab.complete(parser, shell=shell, preamble=_PREAMBLES[shell]))
    return EXIT_OK


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every positional of the parser and of its subcommands."""
    found: list[argparse.Action] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _positionals(sub)
        elif not action.option_strings:
            found.append(action)
    return found

"""Variables, fan-out and placeholders: the document and model -> concrete targets.

`${VAR}` expands when the file is loaded (manifest variables first, then the environment, as
in make; `$${` is a literal `${`). `foreach` turns one target definition into one target per
value. `{…}` placeholders are only checked here; they expand when a target runs.
"""

from __future__ import annotations

import functools
import glob as globlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfile import regular
from agentfile.errors import Problem, Span, suggest
from agentfile.manifest.lower import KeyPath, SpanTable
from agentfile.manifest.model import Foreach, Target

_VARREF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# `{name}` and `{deps.x.result}`; `${…}` belongs to the shell and other braces (`{ a; }`,
# awk's `{print $1}`) are left alone. `{{` and `}}` are literal braces.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|(?<!\$)\{([A-Za-z_][A-Za-z0-9_.\-/]*)\}")
RUNTIME_PLACEHOLDERS = ("target", "run_id", "workspace", "prompt_file")


@dataclass(frozen=True, slots=True)
class ConcreteTarget:
    """One target after fan-out: what the planner and the executor see."""

    name: str
    template: str
    definition: Target
    deps: tuple[str, ...]
    bindings: Mapping[str, str] = field(default_factory=dict)
    index: int = 0
    instance: int | None = None

    @property
    def kind(self) -> str:
        return self.definition.kind


# Variables that use each other twice per level (`V0 = "${V1}${V1}"`, ...) double at each:
# 40 levels of a few bytes would need a terabyte. No real value comes near this.
MAX_EXPANDED = 1 << 20  # characters


class Variables:
    """Expands `${VAR}` in every string of a document, recording unknown names."""

    def __init__(self, declared: Mapping[str, Any], spans: SpanTable,
                 environ: Mapping[str, str]) -> None:
        self.declared = dict(declared)
        self.spans = spans
        self.environ = environ
        self.problems: list[Problem] = []
        self._resolved: dict[str, Any] = {}
        self._resolving: list[str] = []

    def value(self, name: str, where: KeyPath) -> Any:
        if name in self._resolved:
            return self._resolved[name]
        if name in self.declared:
            if name in self._resolving:
                chain = " -> ".join([*self._resolving[self._resolving.index(name):], name])
                self._fail(("vars", name), f"variable cycle: {chain}")
                return ""
            self._resolving.append(name)
            result = self.expand(self.declared[name], ("vars", name))
            self._resolving.pop()
            self._resolved[name] = result
            return result
        if name in self.environ:
            return self.environ[name]
        hint = suggest(name, self.declared)
        self._fail(where, f"unknown variable '${{{name}}}'{hint}"
                   " (write $${ for a literal ${)")
        return ""

    def _fail(self, where: KeyPath, message: str) -> None:
        self.problems.append(Problem(span_for(self.spans, where), message))

    def expand(self, value: Any, where: KeyPath) -> Any:
        if isinstance(value, str):
            if "$" not in value:
                return value
            whole = _VARREF.fullmatch(value)
            if whole and whole.group(1):
                return self.value(whole.group(1), where)

            def one(match: re.Match[str]) -> str:
                if match.group(1) is None:
                    return "${"
                found = self.value(match.group(1), where)
                if isinstance(found, bool):
                    return "true" if found else "false"
                return str(found)

            expanded = _VARREF.sub(one, value)
            if len(expanded) > MAX_EXPANDED:
                self._fail(where, f"this value expands to more than {MAX_EXPANDED:,} "
                                  "characters: do its variables use each other over and over?")
                return ""
            return expanded
        if isinstance(value, list):
            return [self.expand(v, (*where, i)) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.expand(v, (*where, k)) for k, v in value.items()}
        return value


def expand_variables(doc: dict[str, Any], spans: SpanTable,
                     environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any],
                                                                         list[Problem]]:
    """The document with every `${VAR}` expanded; `vars` itself is kept as written."""
    env = os.environ if environ is None else environ
    declared = doc.get("vars")
    # `vars` that is not a table (a YAML string or null) defines nothing; the schema says
    # what is wrong with it, at its position.
    variables = Variables(declared if isinstance(declared, dict) else {}, spans, env)
    out = {key: value if key in ("vars", "include") else variables.expand(value, (key,))
           for key, value in doc.items()}
    return out, variables.problems


def span_for(spans: SpanTable, path: KeyPath) -> Span:
    """The span of the longest known prefix of a key path."""
    for cut in range(len(path), -1, -1):
        span = spans.get(path[:cut])
        if span is not None:
            return span
    return next(iter(spans.values()), Span("<manifest>", 1, 1))


def placeholders(text: str) -> list[str]:
    """The `{…}` placeholder names in a string (`{{` and `}}` are literal braces)."""
    if "{" not in text:
        return []
    return [m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1) is not None]


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace the given placeholders, leave the others, unescape `{{` `}}`."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]
        return values.get(name, match.group(0))

    return _PLACEHOLDER.sub(one, text)


# A value made only of these is the same text in any shell context (quoted or not, in a
# comment or a here-document): it is written as it is, so that commands and logs read plainly.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./,:=@%+-]+")


def substitute_shell(command: str,
                     values: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """`substitute` for a shell command line (SPEC 2.3: a file named `$(rm -rf ~).py` is a
    name, not a command): the command, and the environment variables it reads.

    A plain value is written as it is. Any other reaches the shell through a variable of its
    own, `AGENTFILE_VALUE_N`, written `"$V"`, `${V}` inside "…", `'"$V"'` inside '…': the shell
    never parses the value itself, so however the command around it is quoted (or misread
    here: comments, here-documents), the value cannot run as code."""
    out: list[str] = []
    env: dict[str, str] = {}
    names: dict[str, str] = {}
    for literal, name, context in _shell_template(command):
        out.append(literal)
        if name is None:
            continue
        if name not in values:
            out.append(f"{{{name}}}")
            continue
        value = values[name]
        if _PLAIN_VALUE.fullmatch(value):
            out.append(value)
            continue
        var = names.setdefault(name, f"AGENTFILE_VALUE_{len(names)}")
        env[var] = value
        out.append(f"'\"${var}\"'" if context == "'" else
                   f"${{{var}}}" if context == '"' else f'"${var}"')
    return "".join(out), env


@functools.lru_cache(maxsize=1024)  # a template is read once, however many targets use it
def _shell_template(command: str) -> tuple[tuple[str, str | None, str], ...]:
    """A command line as (literal text, placeholder or None, the quoting it stands in)."""
    parts: list[tuple[str, str | None, str]] = []
    stack: list[str] = []  # the quoting we are inside: ' " $( `
    last = 0
    for match in _PLACEHOLDER.finditer(command):
        _track_quotes(command[last:match.start()], stack)
        literal = command[last:match.start()]
        last = match.end()
        name = match.group(1)
        if name is None:  # {{ or }}: a literal brace
            parts.append((literal + match.group(0)[0], None, ""))
        else:
            parts.append((literal, name, stack[-1] if stack else ""))
    parts.append((command[last:], None, ""))
    return tuple(parts)


def _track_quotes(text: str, stack: list[str]) -> None:
    """Follow the shell's quoting through `text`, from the state in `stack` (a guess is
    enough: a value never reaches the shell as code, however this reads it)."""
    index = 0
    while index < len(text):
        char = text[index]
        top = stack[-1] if stack else ""
        if top == "'":
            if char == "'":
                stack.pop()
        elif char == "\\":
            index += 1  # the next character is escaped (outside quotes and inside "…")
        elif (top == '"' and char == '"') or (top == "`" and char == "`"):
            stack.pop()
        elif char == "$" and text[index + 1:index + 2] == "(":
            stack.append("$(")
            index += 1
        elif char == "`":
            stack.append("`")
        elif top in ("", "$(", "`") and char == "#" and (index == 0 or text[index - 1] in
                                                         " \t\n;&|("):
            end = text.find("\n", index)  # a comment: its quotes are not quotes
            index = len(text) if end < 0 else end
            continue
        elif top in ("", "$(", "`") and char in ("'", '"'):
            stack.append(char)
        elif top == "$(" and char == ")":
            stack.pop()
        index += 1


def bind_name(template: str, values: Mapping[str, str]) -> str:
    """A fan-out name with its variable bound: `migrate/{file}` -> `migrate/src/a.py`."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return values.get(name, match.group(0)) if name is not None else match.group(0)

    return _PLACEHOLDER.sub(one, template)


def fanout_stem(template: str) -> str | None:
    """The name that stands for all instances: `migrate/{file}` -> `migrate`."""
    if "{" not in template:
        return None
    stem = template.split("{", 1)[0].rstrip("/.-_")
    return stem or None


def foreach_values(foreach: Foreach, base: Path) -> list[str]:
    """The values a fan-out runs over: glob (relative to the manifest, sorted, files
    only), the non-empty non-comment lines of a file, or a literal list."""
    if foreach.values is not None:
        return list(foreach.values)
    if foreach.glob is not None:
        matches = globlib.glob(foreach.glob, root_dir=base, recursive=True)
        return sorted(m for m in matches if (base / m).is_file())
    assert foreach.lines is not None
    text = regular.read_text(base / foreach.lines)
    lines = (ln.strip() for ln in text.splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]

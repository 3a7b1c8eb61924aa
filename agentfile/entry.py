"""The `agentfile` command's entry point, kept apart from `cli` so that it loads in no time:
a Ctrl-C while the command line's modules load is an interruption like any later one
(exit 130, one line, no traceback)."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # as agentfile.errors has it; importing that is what may be cut short


def main() -> int:
    try:
        from agentfile.cli import main as cli_main
    except KeyboardInterrupt:
        print("agentfile: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return cli_main()

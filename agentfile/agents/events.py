"""What the CLI providers share: finding the CLI, reading its JSON-lines output."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from agentfile.errors import UsageError


def find_cli(program: str, variable: str, install: str) -> str:
    """The CLI's path: `$variable` if set, else `program` on PATH; else a clear error."""
    given = os.environ.get(variable)
    if given:
        found = shutil.which(given)  # a path, or a name on PATH: either must run
        if not found:
            raise UsageError(f"{variable}={given} is not a program that can be run")
        return found
    found = shutil.which(program)
    if not found:
        raise UsageError(f"the {program} provider needs its CLI: {install}, or set {variable}")
    return found


def json_line(line: str) -> dict[str, Any] | None:
    """One event, or None for a line that is not a JSON object (banners, warnings)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def number(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

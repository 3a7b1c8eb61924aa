"""What the CLI providers share: finding the CLI, reading its JSON-lines output,
writing it as lines a person reads, and the waits a provider's message names."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
from pathlib import Path
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


# What a person reads of an agent's stream (logs, the board's last line, failure lines): the
# agent's words, and each tool call as one line (`Write src/a.py`, `Bash pytest -q`).
DETAIL_CHARS = 160  # a tool call's argument, as shown; the raw stream keeps it whole


def tool_line(tool: str, detail: object, workspace: Path | None = None) -> str:
    """`Tool detail`: the detail's first line, a path inside the workspace made relative,
    clipped to DETAIL_CHARS."""
    text = str(detail or "").strip()
    lines = text.splitlines()
    first = lines[0] if lines else ""
    if workspace is not None and first.startswith("/"):
        with contextlib.suppress(ValueError):
            first = str(Path(first).relative_to(workspace)) or "."
    if len(lines) > 1:
        first += " …"
    if len(first) > DETAIL_CHARS:
        first = first[:DETAIL_CHARS - 1] + "…"
    return f"{tool} {first}".rstrip()


def prose(text: object) -> list[str]:
    """An agent's words as lines, without blank lines at either end."""
    return str(text or "").strip("\n").splitlines() if str(text or "").strip() else []


def first_of(arguments: object, keys: tuple[str, ...]) -> object:
    """The first of `keys` a tool call's arguments hold: what its line shows."""
    if not isinstance(arguments, dict):
        return ""
    for key in keys:
        if arguments.get(key):
            return arguments[key]
    return ""


SHOWN_ARGUMENTS = ("file_path", "notebook_path", "command", "pattern", "path", "absolute_path",
                   "url", "query", "description", "prompt")


def mapping(value: object) -> dict[str, Any]:
    """A field of an event that should be an object; {} when it is not."""
    return value if isinstance(value, dict) else {}


def sequence(value: object) -> list[Any]:
    """A field of an event that should be a list; [] when it is not."""
    return value if isinstance(value, list) else []


# "Please try again in 2s", "retry in 35.2s", "try again in 1m30s", "retry after 20 seconds":
# how long a provider's message asks to wait.
_WAIT = re.compile(r"(?:try again|retry) (?:in|after) ((?:\d+(?:\.\d+)?\s*(?:ms|h|m|s|"
                   r"seconds?|minutes?|hours?)\s*)+)", re.IGNORECASE)
_WAIT_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|h|m|s|seconds?|minutes?|hours?)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
# "try again at 7:02 PM", "try again at Dec 7th, 2026 1:34 AM" (Codex, in local time).
_AT = re.compile(r"try again at (?:([A-Z][a-z]{2}) (\d{1,2})(?:st|nd|rd|th)?, (\d{4}) )?"
                 r"(\d{1,2}):(\d{2})\s*([AP]M)", re.IGNORECASE)


def wait_in(text: str) -> float | None:
    """Seconds a message asks to wait ("try again in 2s"), or None."""
    found = _WAIT.search(text)
    if found is None:
        return None
    total = 0.0
    for amount, unit in _WAIT_PART.findall(found.group(1)):
        key = unit.lower()
        total += float(amount) * _UNIT_SECONDS["ms" if key == "ms" else key[0]]
    return total


def time_in(text: str, now: float) -> float | None:
    """Epoch seconds of a local time a message names ("try again at 7:02 PM"): the next such
    time when it names no date."""
    found = _AT.search(text)
    if found is None:
        return None
    month, day, year, hour, minute, half = found.groups()
    clock = int(hour) % 12 + (12 if half.upper() == "PM" else 0)
    today = datetime.datetime.fromtimestamp(now)
    if month:
        try:
            date = datetime.datetime.strptime(f"{month} {day} {year}", "%b %d %Y").date()
        except ValueError:
            return None
    else:
        date = today.date()
    moment = datetime.datetime.combine(date, datetime.time(clock, int(minute)))
    if not month and moment.timestamp() < now:
        moment += datetime.timedelta(days=1)
    return moment.timestamp()

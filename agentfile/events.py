"""Build events and the Reporter protocol (SPEC 5.6).

The core emits plain JSON-able events; reporters consume them: the run's `events.jsonl`, JSON
lines on stdout (`--json`), plain lines, or the live board in `ui.py`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

from agentfile.secrets import redact

Event = dict[str, Any]

# What each target status means for the build (SPEC 5.5).
SUCCESS = ("succeeded", "up-to-date")
STATUSES = ("succeeded", "up-to-date", "failed", "timeout", "over-budget", "oom", "conflict",
            "violation", "blocked", "interrupted")


def make_event(event: str, run_id: str, **fields: Any) -> Event:
    return {"event": event, "run": run_id, "time": round(time.time(), 3), **fields}


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class EventLog:
    """The run's `events.jsonl`, one event a line, flushed as it is written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def emit(self, event: Event) -> None:
        self.handle.write(json.dumps(redact(event), ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.handle.close()


class JsonLines:
    """`--json`: the same events on stdout."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        self.stream.write(json.dumps(redact(event), ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class Fanout:
    """Several reporters as one."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = list(reporters)

    def emit(self, event: Event) -> None:
        for reporter in self.reporters:
            reporter.emit(event)

    def close(self) -> None:
        for reporter in self.reporters:
            reporter.close()


def read_events(path: Path) -> list[Event]:
    """The events of a run, skipping a half-written last line of a running build."""
    events: list[Event] = []
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events

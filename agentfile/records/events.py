"""Build events and the Reporter protocol (SPEC 5.6).

The core emits plain JSON-able events; reporters consume them: the run's `events.jsonl`, JSON
lines on stdout (`--json`), plain lines, or the live board in `ui.py`. Reporters that write to
a file or a stream may hold lines until `flush()`, which the build's loop calls every tick and
after every failure: one write for many no-op targets' events instead of one each.
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
            "violation", "rate-limited", "blocked", "interrupted")


# One encoder for every line: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False).encode


def last_lines(detail: str | None, count: int = 5) -> list[str]:
    """The last lines of output a failure's detail quotes (after "exited with 1:"), each
    trimmed: what a failure line and the summary show of a failed target's output."""
    lines = (detail or "").splitlines()
    if not lines or not lines[0].endswith(":"):
        return []
    shown = [line.rstrip() for line in lines[1:] if line.strip()][-count:]
    return [line if len(line) <= 200 else line[:199] + "…" for line in shown]


def make_event(event: str, run_id: str, **fields: Any) -> Event:
    return {"event": event, "run": run_id, "time": round(time.time(), 3), **fields}


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class EventLog:
    """The run's `events.jsonl`, one event a line, written out at every flush."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115
        # The write that failed (a full disk): the build goes on, its events stop there.
        self.error: OSError | None = None

    def emit(self, event: Event) -> None:
        if self.error is None:
            try:
                self.handle.write(_encode(redact(event)) + "\n")
            except OSError as err:
                self.error = err

    def flush(self) -> None:
        if self.error is None:
            try:
                self.handle.flush()
            except OSError as err:
                self.error = err

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError as err:  # what could not be written out before
            self.error = self.error or err


class JsonLines:
    """`--json`: the same events on stdout."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        self.stream.write(_encode(redact(event)) + "\n")

    def flush(self) -> None:
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

    def flush(self) -> None:
        for reporter in self.reporters:
            reporter.flush()

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


def unfinished(events: list[Event]) -> dict[str, float]:
    """The targets a run had started and not finished, and when they started: what a build
    that died was running."""
    started = {e["target"]: e["time"] for e in events if e["event"] == "target_started"}
    for event in events:
        if event["event"] == "target_finished":
            started.pop(event["target"], None)
    return started

"""The Workspace a target's process runs in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Workspace:
    """A directory to run in, and what the target changed there once it is done."""

    path: Path
    mode: str
    diff: str = ""  # the changes the target produced, for `{deps.NAME.diff}`
    detail: str | None = None  # e.g. the branch holding the work
    base: str | None = None  # the commit the work started from
    foreign: tuple[str, ...] = ()  # files there before the target; never committed by it
    # When the target's processes ran (time.time() before each started, after it was gone):
    # a file changed outside these was changed by someone else (isolation.branch).
    busy: list[tuple[float, float]] = field(default_factory=list)

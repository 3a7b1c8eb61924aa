"""One build per repository at a time (SPEC 5.6).

The lock is an flock on `.agentfile/build.lock`, so it dies with its holder; the file also names
the holder (pid, run id, start time) for the message a second build prints, and for `status`,
`logs -f` and `clean`, which ask who holds it with a shared lock of a moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from agentfile.errors import UsageError

# How long a starting build keeps trying while the lock is busy: a reader's shared lock is
# held for microseconds, a build's for the whole build.
TAKE_SECONDS = 0.25


class BuildLocked(UsageError):
    """Another live build holds this repository."""


def holder(lock_file: Path) -> dict[str, Any] | None:
    """Who holds the lock, or None if nobody does (a stale file is not a holder)."""
    if not lock_file.exists():
        return None
    with _open(lock_file) as handle:
        try:  # shared: readers asking at once never see each other as a build
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _read(handle: TextIO) -> dict[str, Any]:
    """What the holder wrote of itself (empty while it is still writing it)."""
    handle.seek(0)
    try:
        return dict(json.loads(handle.read() or "{}"))
    except ValueError:
        return {}


def _take(handle: TextIO) -> bool:
    """The exclusive lock, waiting out readers' moments; False if a build holds it."""
    deadline = time.monotonic() + TAKE_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _open(lock_file: Path) -> TextIO:
    """The lock file, for reading and appending; something else in its place (a folder, no
    permission) is the user's to fix."""
    try:
        return open(lock_file, "a+")
    except OSError as err:
        raise UsageError(f"cannot use the build lock {lock_file}: {err.strerror or err}"
                         ) from None


@contextlib.contextmanager
def build_lock(lock_file: Path, run_id: str) -> Iterator[None]:
    """Hold the repository's build lock; raise BuildLocked naming the live holder."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = _open(lock_file)  # held for the whole build
    if not _take(handle):
        info = _read(handle)
        handle.close()  # the holder's record is the holder's: left as it is
        raise BuildLocked(
            f"another build is running in this repository: pid {info.get('pid', '?')}, "
            f"run {info.get('run', '?')} (started {info.get('started_at', '?')}); "
            "wait for it, or see `agentfile status`")
    try:
        # The lock was free: any content is a dead holder's; take it over.
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "run": run_id, "started": time.time(),
                                 "started_at": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
        handle.close()

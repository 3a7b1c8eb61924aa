"""A cache of parsed manifests, for large files (SPEC goal: 10k targets in under a second).

Parsing a manifest of thousands of targets costs seconds, in lark; its result depends only on
the file's bytes (and this agentfile), so it is kept, content-addressed, in the user's cache
directory and read back with pickle in a fraction of that. Only documents without problems
are kept, and only for files large enough for parsing to matter. `AGENTFILE_NO_CACHE=1`
turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import platformdirs

from agentfile import __version__
from agentfile.resources import resource_path

MIN_BYTES = 64 * 1024  # below this a parse takes milliseconds: not worth a file
KEEP = 16  # entries kept; the oldest go first
T = TypeVar("T")


def directory() -> Path:
    return Path(platformdirs.user_cache_dir("agentfile")) / "manifests"


@functools.cache
def _salt() -> bytes:
    """What else a parse depends on: this version of agentfile and its grammar."""
    grammar = resource_path("agentfile.lark").read_bytes()
    return __version__.encode() + hashlib.sha256(grammar).digest()


def cached(text: str, *, kind: str, compute: Callable[[], T],
           keep: Callable[[T], bool]) -> T:
    """`compute()`, or what it gave before for the same text and kind."""
    if os.environ.get("AGENTFILE_NO_CACHE") or len(text) < MIN_BYTES:
        return compute()
    digest = hashlib.sha256(_salt() + kind.encode() + b"\0" + text.encode()).hexdigest()
    path = directory() / f"{digest}.pickle"
    with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, AttributeError,
                             ImportError, TypeError, ValueError):
        value: T = pickle.loads(path.read_bytes())  # the user's own cache directory
        return value
    value = compute()
    if keep(value):
        _store(path, value)
    return value


def _store(path: Path, value: object) -> None:
    with contextlib.suppress(OSError, pickle.PicklingError, RecursionError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)  # readers never see half a file
        entries = sorted(path.parent.glob("*.pickle"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)

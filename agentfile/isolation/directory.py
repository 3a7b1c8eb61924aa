"""`isolation = dir("path")` (SPEC 6.3): run in a directory of the main checkout.

The checkout is photographed before and after the target (changed tracked files and
untracked ones, with content digests); a change outside the directory is a violation, and the
files are named. Changes inside directories of other targets running at the same time are
theirs, not this target's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agentfile.isolation.base import Workspace

if TYPE_CHECKING:
    from agentfile.git import Git

Snapshot = dict[str, str]


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "gone"


def snapshot(root: Path, git: Git | None) -> Snapshot:
    """Each changed or untracked file (relative path) and a digest of its content."""
    if git is not None:
        names = git.dirty_files(untracked=True)
        return {name: _digest(root / name) for name in names}
    state: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".agentfile", ".git")]
        for name in files:
            path = Path(folder) / name
            stat = path.stat()
            state[str(path.relative_to(root))] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return state


def inside(path: str, folder: str) -> bool:
    folder = folder.strip("/")
    return not folder or path == folder or path.startswith(folder + "/")


def overlap(a: str, b: str) -> bool:
    """Two directories overlap when one contains the other."""
    return inside(a, b) or inside(b, a)


def violations(before: Snapshot, after: Snapshot, folder: str,
               others: Iterable[str]) -> list[str]:
    """Files changed outside `folder` (and outside the folders of targets running beside it)."""
    allowed = [folder, *others]
    changed = {name for name in before.keys() | after.keys()
               if before.get(name) != after.get(name)}
    return sorted(n for n in changed if not any(inside(n, f) for f in allowed))


def relative_dir(root: Path, base: Path, folder: str) -> str:
    """The `dir("…")` path (relative to the manifest) as a path relative to the root."""
    return str((base / folder).resolve().relative_to(root.resolve())).replace(os.sep, "/")


def directory_workspace(root: Path, folder: str) -> Workspace:
    return Workspace(path=root / folder, mode="dir", detail=folder)

"""The pool of warm worktrees of one repository (`options.worktrees = reuse`).

A fresh worktree per target checks out the whole repository and has none of the files git
ignores (node_modules, .venv), so every target pays for both. A pooled worktree is reset
instead: put on the target's branch at its base, tracked files as that commit has them,
untracked files that git does not ignore removed; only the files that differ are written.
Ignored files stay; what `setup` made (isolation/setup.py) is among them.

Everything lives under `.agentfile/pool/`: for each worktree `N/` (the worktree, detached at
rest, so that the branch of its last target can be merged and deleted), `N.json` (what is
known of it: its setup's fingerprint, how often setup ran there, who uses it, what `copy` put
there), written before the worktree exists, and `N.lock`, flocked by the build that uses it.
An flock dies with its holder, so a lock held is a worktree in use by a live build (and
`clean` asks the same way); one whose `N.json` still names a user while its lock is free was
in use by a build that died.

On any doubt about a pooled worktree (its folder gone, its .git damaged, git refusing to reset
it) it is dropped and a fresh one made: the pool never fails a target. A target takes one only
when none is free, so there are never more than the build's job slots in use; one given back
beyond the build's `-j` goes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentfile.git import Git


@dataclass
class Lease:
    """A pooled worktree taken by this process: its lock is held until it is given back."""

    id: str
    path: Path
    info: dict[str, Any]
    handle: IO[str] = field(repr=False)


def _lock(path: Path) -> IO[str] | None:
    """The lock file, flocked; None when another open file of it holds the lock."""
    try:
        handle = open(path, "a+")  # noqa: SIM115 (held for as long as the lease)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, info: dict[str, Any]) -> None:
    """Whole or not at all: a build killed while writing leaves the old text."""
    partial = path.with_suffix(".json.part")
    partial.write_text(json.dumps(info, sort_keys=True))
    os.replace(partial, path)


class Pool:
    """The pooled worktrees of one repository, as one build (or `clean`) sees them."""

    def __init__(self, git: Git, folder: Path, *, size: int) -> None:
        self.git = git
        self.folder = folder
        self.size = max(size, 1)
        self._mutex = threading.Lock()  # worker threads take and give back at once
        self._leased: set[str] = set()

    # -- what is there ------------------------------------------------------------------

    def ids(self) -> list[str]:
        """The pooled worktrees, by their record (a folder alone is no pooled worktree)."""
        if not self.folder.is_dir():
            return []
        found = [p.name[:-5] for p in self.folder.iterdir() if p.name.endswith(".json")]
        return sorted(found, key=lambda i: (len(i), i))

    def path_of(self, entry: str) -> Path:
        return self.folder / entry

    def owns(self, path: Path) -> str | None:
        """The id of the pooled worktree at `path`, if it is one."""
        entry = path.name
        if path.parent.resolve() == self.folder.resolve() and \
                (self.folder / f"{entry}.json").is_file():
            return entry
        return None

    def info(self, entry: str) -> dict[str, Any] | None:
        return _read(self.folder / f"{entry}.json")

    # -- a build's use ------------------------------------------------------------------

    def take(self, branch: str, base: str, *, run_id: str, target: str,
             record: Callable[[Path], None], copied: Sequence[str] = ()) -> Lease:
        """A pooled worktree on `branch` (made at `base` unless it exists), clean: a free one
        reset, else a new one. `record` hears of its path before anything there changes;
        `copied` names the files the target's `copy` will put there, removed when it is given
        back (or, after a build died, before the next target)."""
        user = {"run": run_id, "target": target, "since": time.time()}
        while True:
            lease = self._claim()
            if lease is None:
                break
            if self._reset(lease, branch, base, user=user, record=record, copied=copied):
                return lease
        lease = self._new()
        try:
            record(lease.path)
            lease.info["user"], lease.info["copied"] = user, list(copied)
            _write(self.folder / f"{lease.id}.json", lease.info)
            self.git.add_worktree(lease.path, branch, base)
        except BaseException:
            self._forget(lease)
            raise
        return lease

    def give_back(self, lease: Lease) -> None:
        """Detach it (its branch is the scheduler's), let go of it; past the build's job
        slots, or on any trouble, it goes instead. What a target left uncommitted (a check on
        merged work keeps nothing) goes at the next reset."""
        try:
            self._uncopy(lease)
            self.git.detach_worktree(lease.path)
            keep = len(self.ids()) <= self.size
        except Exception:
            keep = False
        if not keep:
            self.drop(lease)
            return
        lease.info["user"], lease.info["copied"] = None, []
        lease.info["uses"] = int(lease.info.get("uses", 0)) + 1
        _write(self.folder / f"{lease.id}.json", lease.info)
        self._release(lease)

    def set_aside(self, lease: Lease) -> None:
        """Out of the pool, its folder kept as it is (its work could not be committed, or
        --keep-worktrees): an ordinary worktree of its run from now on, for `clean`."""
        self._forget(lease)

    def note_setup(self, lease: Lease, fingerprint: str | None) -> None:
        """`setup` ran there: for what inputs (None: it failed, so it runs again next time)."""
        lease.info["setup"] = fingerprint
        lease.info["setup_runs"] = int(lease.info.get("setup_runs", 0)) + 1
        _write(self.folder / f"{lease.id}.json", lease.info)

    def drop(self, lease: Lease) -> None:
        """The worktree removed and forgotten (a damaged one, one too many)."""
        with contextlib.suppress(Exception):  # gone already, or git refuses: forgotten anyway
            self.git.remove_worktree(lease.path)
        self._forget(lease)

    # -- for recovery and clean: one named worktree -----------------------------------------

    def claim(self, entry: str) -> Lease | None:
        """That pooled worktree, locked; None while a live build uses it (or it is gone)."""
        with self._mutex:
            return self._try(entry)

    def let_go(self, lease: Lease) -> None:
        """Unlocked, unchanged (clean looked at it)."""
        self._release(lease)

    def put_back(self, lease: Lease) -> None:
        """A worktree a dead build was using, its leftovers committed: back in the pool."""
        try:
            self._uncopy(lease)
            self.git.detach_worktree(lease.path)
        except Exception:
            self.drop(lease)
            return
        lease.info["user"], lease.info["copied"] = None, []
        _write(self.folder / f"{lease.id}.json", lease.info)
        self._release(lease)

    # -- inside ---------------------------------------------------------------------------

    def _claim(self) -> Lease | None:
        with self._mutex:
            for entry in self.ids():
                if entry not in self._leased:
                    lease = self._try(entry)
                    if lease is not None:
                        return lease
        return None

    def _try(self, entry: str) -> Lease | None:
        handle = _lock(self.folder / f"{entry}.lock")
        if handle is None:
            return None
        info = self.info(entry)  # read under the lock: a clean may have removed it meanwhile
        if info is None:
            handle.close()
            return None
        self._leased.add(entry)
        return Lease(entry, self.folder / entry, info, handle)

    def _reset(self, lease: Lease, branch: str, base: str, *, user: dict[str, Any],
               record: Callable[[Path], None], copied: Sequence[str]) -> bool:
        """Ready the claimed worktree for the target; False when it was dropped instead."""
        if lease.info.get("user") and self._holds_work(lease):
            # A dead build's target left work there that recovery could not commit: it is
            # kept for the user (`clean` reports it), out of the pool.
            self.set_aside(lease)
            return False
        record(lease.path)
        try:
            self._uncopy(lease)  # a dead build's target's copies: git may ignore them
            lease.info["user"], lease.info["copied"] = user, list(copied)
            _write(self.folder / f"{lease.id}.json", lease.info)
            self.git.reset_worktree(lease.path, branch, base)
        except Exception:
            self.drop(lease)
            return False
        return True

    @staticmethod
    def _uncopy(lease: Lease) -> None:
        """The files `copy` put there for the last target: never the next one's (a copied
        `.env` that git ignores would survive any reset)."""
        for name in lease.info.get("copied") or []:
            target = lease.path / name
            if target.is_symlink() or target.is_file():
                target.unlink()

    def _holds_work(self, lease: Lease) -> bool:
        try:
            return bool(self.git.dirty_files(lease.path, untracked=True))
        except Exception:  # no longer a worktree: nothing of anyone's to keep there
            return False

    def _new(self) -> Lease:
        """A new record (and its lock) for a worktree not made yet: the lowest free number."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._mutex:
            number = 1
            while True:
                entry = str(number)
                names = (entry, f"{entry}.json", f"{entry}.lock")
                if not any((self.folder / n).exists() for n in names):
                    handle = _lock(self.folder / f"{entry}.lock")
                    if handle is not None:
                        info: dict[str, Any] = {"created": time.time(), "setup": None,
                                                "setup_runs": 0, "uses": 0, "user": None}
                        _write(self.folder / f"{entry}.json", info)
                        self._leased.add(entry)
                        return Lease(entry, self.folder / entry, info, handle)
                number += 1

    def _forget(self, lease: Lease) -> None:
        for suffix in (".json", ".lock"):  # the lock last: still held while the record goes
            with contextlib.suppress(OSError):
                (self.folder / f"{lease.id}{suffix}").unlink()
        self._release(lease)

    def _release(self, lease: Lease) -> None:
        with self._mutex:
            self._leased.discard(lease.id)
        lease.handle.close()


def put_back_dead(git: Git, folder: Path, path: Path) -> bool:
    """If `path` is a pooled worktree (a dead build's, its leftovers committed by recovery),
    put it back in the pool and say so; False for any other worktree."""
    pool = Pool(git, folder, size=1)
    entry = pool.owns(path)
    if entry is None:
        return False
    lease = pool.claim(entry)
    if lease is not None:
        pool.put_back(lease)
    return True

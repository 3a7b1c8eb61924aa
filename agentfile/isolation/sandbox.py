"""`sandbox = true`: a target's process tree under bubblewrap (`bwrap`), the command line that
wraps it, and whether bwrap can run here at all.

Inside, the whole file system is read-only but for what the target may change: its workspace
(a worktree, the checkout, or only the directory of `dir("…")`), the run files agentfile hands
an agent (result and usage), the state its CLI keeps in the home directory (`~/.claude`, each
provider says which), and a private /tmp. A write anywhere else fails in the agent itself
("Read-only file system"): nothing lands there, and nothing has to be detected afterwards.
The network stays shared: agents need their API.

The tree runs in its own PID namespace, whose first process is bwrap: when it ends (the agent
exited, or agentfile stopped the tree), the kernel kills everything left inside, daemons too;
`--die-with-parent` ends it with agentfile. From outside, every process of it is an ordinary
descendant of the leader, so the monitor measures its memory as before.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentfile.errors import UsageError

PRIVATE_TMP = Path("/tmp")
INSTALL = "apt-get install bubblewrap (dnf install bubblewrap, pacman -S bubblewrap)"
# What a kernel that refuses user namespaces needs (Debian before 11; Ubuntu 24.04's AppArmor).
USERNS = ("allow unprivileged user namespaces: sysctl -w kernel.unprivileged_userns_clone=1, "
          "or on Ubuntu 24.04 sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")


@dataclass(frozen=True)
class Sandbox:
    """How one target's processes are confined: `root` is the repository, read-only inside
    (visible even when it lives under /tmp, which is private there)."""

    root: Path

    def wrap(self, argv: Sequence[str], *, cwd: Path, writable: Iterable[Path],
             home: Path | None = None, programs: str = "") -> list[str]:
        """`argv` as bwrap runs it in `cwd`, with only `writable` (those that exist)
        writable; the repository, `home` and the folders of `programs` (a PATH) are seen
        read-only even under /tmp."""
        readable = [self.root, *([home] if home is not None else []), *installs(programs)]
        return [bwrap(), *arguments(readable, cwd, writable), "--", *argv]


def installs(path: str) -> list[Path]:
    """What a PATH needs visible for its programs to run: each folder on it, and, for a
    `bin` folder, the prefix it belongs to (a virtualenv's or a tool's libraries sit beside
    its `bin`): a venv or tool that lives under /tmp would otherwise vanish behind the
    private /tmp, and `python` or `npx` with it."""
    found: list[Path] = []
    for entry in filter(None, path.split(os.pathsep)):
        folder = Path(entry)
        if folder.is_absolute():  # /bin is not the prefix `/`: that would cover all
            prefix = folder.name == "bin" and len(folder.parts) > 2
            found.append(folder.parent if prefix else folder)
    return found


def arguments(readable: Iterable[Path], cwd: Path, writable: Iterable[Path]) -> list[str]:
    """bwrap's options; later mounts cover earlier ones, so the order is the point: the whole
    file system read-only, then a fresh /dev, /proc and /tmp, then what must be seen under
    /tmp (the repository, the home directory) read-only again, then the writable places."""
    args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", str(PRIVATE_TMP)]
    for path in _outermost(readable):
        if _under(path, PRIVATE_TMP) and path != PRIVATE_TMP:
            args += ["--ro-bind", str(path), str(path)]
    for path in _outermost(writable):
        args += ["--bind", str(path), str(path)]
    args += ["--chdir", str(cwd), "--setenv", "TMPDIR", str(PRIVATE_TMP),
             "--unshare-pid", "--die-with-parent", "--new-session"]
    return args


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths that exist, resolved, without any inside another (its bind would be
    covered, or would cover it): in a stable order."""
    found = sorted({Path(os.path.realpath(p)) for p in paths if os.path.lexists(p)})
    kept: list[Path] = []
    for path in found:
        if not any(_under(path, outer) for outer in kept):
            kept.append(path)
    return kept


@functools.cache
def bwrap() -> str:
    """The bwrap program on agentfile's PATH; UsageError (exit 2) when it cannot run here."""
    problem = why_not()
    if problem is not None:
        raise UsageError(problem)
    found = shutil.which("bwrap")
    assert found is not None
    return found


@functools.cache
def why_not() -> str | None:
    """Why a sandbox cannot be made here, as one line with its fix; None when it can.

    Tried, not guessed: bwrap runs a no-op with the very namespaces and mounts a target
    gets (a kernel or container may refuse user or PID namespaces, or mounting /proc)."""
    found = shutil.which("bwrap")
    if found is None:
        return f"sandbox = true needs bubblewrap (bwrap), which is not installed: {INSTALL}"
    probe = [found, *arguments([], Path("/"), []), "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sandbox = true needs bubblewrap, which cannot run here ({err}): {INSTALL}"
    if done.returncode == 0:
        return None
    said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return f"sandbox = true needs bubblewrap, which cannot run here ({said}): {USERNS}"

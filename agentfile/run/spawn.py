"""Starting a target's process: in its own session, stdin from /dev/null (or a file, e.g. an
agent's prompt), stdout and stderr into one new pipe.

`os.posix_spawn` (vfork and exec, no Python in between) where it can do what
`subprocess.Popen` would: the child runs in agentfile's own directory and its program is found
on the PATH it is given. Otherwise, and whenever posix_spawn refuses, Popen. Either returns
only once the child has exec'd, holding the GIL until then: for a build of many short
commands, that wait is the largest part of the dispatching thread's time per target.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

# What Popen(restore_signals=True) puts back to the default in the child: Python ignores
# SIGPIPE, and a program expects to die of it.
_DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
                         if hasattr(signal, name))


# The signals a terminal or a supervisor sends a whole process group.
GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """For starting a child in a session of its own (agentfile's git and tmux commands) with
    Popen: Python's child unblocks signals, at their defaults, *before* it calls setsid, so a
    Ctrl-C to agentfile's group in that moment would kill it on its way out of the group.
    Held in the starting thread, they stay held in the child, which takes them with it into
    its session and across exec: it finishes its work whatever the group was sent (the
    signal reaches agentfile, whose other threads do not hold it)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class Leader(Protocol):
    """The process agentfile started (its tree's leader): Popen, or a posix_spawned pid."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> Any: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Spawned:
    """A posix_spawned child, waited for as Popen waits for its own (`returncode` as Popen
    has it: negative for a signal)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self.returncode is None:
                self._reap(0)
            return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        assert self.returncode is not None
        return self.returncode

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:
            self.returncode = 0  # reaped elsewhere: its status is lost, as Popen says too
            return
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)


def spawn(argv: list[str] | None, command: str | list[str], cwd: Path,
          env: Mapping[str, str], stdin: Path | None = None) -> tuple[Leader, int]:
    """Start `argv` (exec'd directly), else the shell command line `command`, with its
    standard input from `stdin` (else /dev/null); the leader and the read end of its output
    pipe (non-blocking, the caller's to close).

    A direct `argv` whose program cannot be found or run falls back to the shell when
    `command` is a command line, which then says so and exits 127, as the shell would have.
    """
    read, write = os.pipe()
    try:
        given = os.open(stdin, os.O_RDONLY | os.O_CLOEXEC) if stdin is not None else None
    except BaseException:
        os.close(read)
        os.close(write)
        raise
    try:
        leader = _start(argv, command, cwd, env, _devnull() if given is None else given,
                        write)
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
        if given is not None:
            os.close(given)
    os.set_blocking(read, False)
    return leader, read


def _start(argv: list[str] | None, command: str | list[str], cwd: Path,
           env: Mapping[str, str], inp: int, out: int) -> Leader:
    if argv is not None:
        try:
            return _spawn_or_popen(argv, cwd, env, inp, out)
        except (FileNotFoundError, PermissionError):
            if isinstance(command, list):
                raise
    assert isinstance(command, str)
    return _spawn_or_popen(["/bin/sh", "-c", command], cwd, env, inp, out)


def _spawn_or_popen(argv: list[str], cwd: Path, env: Mapping[str, str], inp: int,
                    out: int) -> Leader:
    program = _posix_spawnable(argv[0], cwd, env)
    if program is not None:
        with contextlib.suppress(OSError):  # e.g. a program deleted since: Popen decides
            return Spawned(os.posix_spawn(
                program, argv, env, setsid=True, setsigdef=_DEFAULT_SIGNALS,
                file_actions=[(os.POSIX_SPAWN_DUP2, inp, 0),
                              (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)]))
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=inp, stdout=out,
                            stderr=out, start_new_session=True)


def _posix_spawnable(program: str, cwd: Path, env: Mapping[str, str]) -> str | None:
    """The path to exec `program` from with posix_spawn, or None when only Popen can start it
    as asked: another directory (posix_spawn cannot change it here), no way to keep the
    child from inheriting descriptors, or not found (Popen says why)."""
    if not _ready() or not _is_cwd(cwd):
        return None
    if "/" in program:
        return program
    return _which(program, env.get("PATH", os.defpath))


@functools.cache
def _ready() -> bool:
    """Whether posix_spawn may be used: it is there, and every descriptor agentfile holds
    above 2 is marked close-on-exec, so that its children inherit only stdin, stdout and
    stderr, as with Popen(close_fds=True). Descriptors Python and SQLite open later are
    close-on-exec already (PEP 446); those inherited from agentfile's parent may not be."""
    if not hasattr(os, "posix_spawn") or not hasattr(os, "POSIX_SPAWN_DUP2"):
        return False
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            fds = [int(name) for name in os.listdir(folder)]
        except (OSError, ValueError):
            continue
        for fd in fds:
            if fd > 2:
                with contextlib.suppress(OSError):  # the listing's own descriptor, now closed
                    os.set_inheritable(fd, False)
        return True
    return False


@functools.cache
def _devnull() -> int:
    """/dev/null, opened once for every child's stdin (close-on-exec: only its copy as fd 0
    reaches a child)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _is_cwd(folder: Path) -> bool:
    return os.fspath(folder) == os.getcwd()


@functools.lru_cache(maxsize=256)
def _which(program: str, path: str) -> str | None:
    return shutil.which(program, path=path)

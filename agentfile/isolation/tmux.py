"""`terminal = tmux` (SPEC 6.5): a build's tmux session, and targets run live in its windows.

The only module that imports libtmux; the session is killed, and its removal checked, on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import libtmux
import psutil
from libtmux.common import tmux_cmd

from agentfile.errors import AgentfileError
from agentfile.run import process, spawn

POLL_SECONDS = 0.05  # 20 Hz at most; output and the exit (a pidfd) wake the loop at once
MIRROR_BACKLOG = 1 << 20  # output the pane's terminal has not taken yet, at most
KILL_CHECK_SECONDS = 5.0
PLACEHOLDER_WINDOW = "agentfile"
OWNER_OPTION = "@agentfile-owner"  # who made a session: its repository and run
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


class TmuxError(AgentfileError):
    """tmux refused a command, or a session outlived its kill."""


def session_name(repo_root: Path, run_id: str) -> str:
    """`agentfile-REPO-HASH-RUN_ID`: REPO the repository's folder name made safe for tmux
    (which forbids `.` and `:` in session names) and for shells, HASH a digest of its whole
    path. Unique across repositories of the same name and builds of the same second."""
    repo = _NAME_UNSAFE.sub("_", repo_root.name).strip("_") or "repo"
    digest = hashlib.sha256(os.fsencode(repo_root.absolute())).hexdigest()[:8]
    return f"agentfile-{repo}-{digest}-{_NAME_UNSAFE.sub('_', run_id)}"


def owner(repo_root: Path, run_id: str) -> str:
    """What a build's session is marked with: `agentfile clean` kills only a session so marked."""
    return f"{repo_root} {run_id}"


class _OwnSessionCommand(tmux_cmd):
    """A tmux command as libtmux runs one (its result read the same way), but in a session
    of its own: a Ctrl-C at the terminal, or a signal to agentfile's process group, reaches
    agentfile, which stops the build in order, never a tmux client half way (a window made
    but not reported, a session killed but not checked)."""

    def __init__(self, *args: Any, tmux_bin: str | None = None) -> None:
        resolved = tmux_bin or shutil.which("tmux")
        if not resolved:
            raise TmuxError("tmux is not installed (not found on PATH)")
        self.cmd = [resolved, *(str(a) for a in args)]
        with spawn.signals_held():  # until it is out of agentfile's group, and after
            done = subprocess.run(self.cmd, capture_output=True, text=True, encoding="utf-8",
                                  errors="backslashreplace", start_new_session=True,
                                  check=False)
        self.returncode = done.returncode
        self.stdout = done.stdout.split("\n")
        while self.stdout and self.stdout[-1] == "":
            self.stdout.pop()
        self.stderr = [line for line in done.stderr.split("\n") if line]
        if "has-session" in self.cmd and self.stderr and not self.stdout:
            self.stdout = [self.stderr[0]]  # as libtmux has it


class _Server(libtmux.Server):
    """The user's tmux server, its commands run by _OwnSessionCommand."""

    def cmd(self, cmd: str, *args: Any, target: str | int | None = None) -> tmux_cmd:
        server_args: list[str] = [cmd]
        if self.socket_name:
            server_args.insert(0, f"-L{self.socket_name}")
        if self.socket_path:
            server_args.insert(0, f"-S{self.socket_path}")
        if self.config_file:
            server_args.insert(0, f"-f{self.config_file}")
        command_args = ["-t", str(target), *args] if target is not None else [*args]
        return _OwnSessionCommand(*server_args, *command_args,
                                  tmux_bin=getattr(self, "tmux_bin", None))


def _check(result: tmux_cmd, what: str) -> list[str]:
    if result.returncode != 0:
        raise TmuxError(f"tmux {what} failed: {' '.join(result.stderr) or result.returncode}")
    return result.stdout


@contextlib.contextmanager
def _not_subreaper() -> Iterator[None]:
    """While the tmux server may be started: it daemonises, and if we are a subreaper (as a
    build is) it would be re-parented to us, and then killed with our orphans at the end of
    the build, taking along any session a person opened on it meanwhile."""
    libc: ctypes.CDLL | None = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            flag = ctypes.c_int(0)
            if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0 \
                    or not flag.value:
                libc = None
    if libc is None:
        yield
        return
    # No target runs while a session is created (a build's start), so no orphan of theirs
    # can slip past us in this short window.
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class TmuxSession:
    """One detached tmux session on the user's default tmux server."""

    def __init__(self, name: str, server: libtmux.Server | None = None) -> None:
        if not name or "." in name or ":" in name:
            raise ValueError(f"not a tmux session name: {name!r}")
        self.name = name
        self.server = server if server is not None else _Server()

    @property
    def target(self) -> str:
        """`=NAME`: tmux matches session names by prefix and pattern unless told exact."""
        return f"={self.name}"

    @classmethod
    def create(cls, name: str, server: libtmux.Server | None = None, *,
               owner: str = "") -> TmuxSession:
        """Start the session detached, its first window a placeholder telling a person who
        attaches where the targets are; `owner` is noted in it, for `owned_by`. A session of
        this name that exists already is another's: an error, never adopted."""
        session = cls(name, server)
        hint = (f"agentfile: session {name}. Each running target has its own window: "
                "prefix w to choose one, prefix n for the next, prefix d to detach.")
        placeholder = f"printf '%s\\n' {shlex.quote(hint)}; exec tail -f /dev/null"
        for attempt in range(5):
            with _not_subreaper():
                # One tmux command: the session is never there without its options. A
                # user's `destroy-unattached on` would end a session nobody is attached to.
                result = session.server.cmd(
                    "new-session", "-d", "-s", name, "-n", PLACEHOLDER_WINDOW,
                    "/bin/sh", "-c", placeholder, ";",
                    # (The commands after it act on the new session; `-t =NAME` would not
                    # even name it: options take a pane, `=NAME:`.)
                    "set-option", "destroy-unattached", "off", ";",
                    "set-option", OWNER_OPTION, owner)
            # A server whose last session was just killed is still exiting: a client reaching
            # it then fails; the next one starts a new server.
            if result.returncode == 0 or attempt == 4 or not any(
                    "server exited" in line or "lost server" in line for line in result.stderr):
                break
            time.sleep(0.05 * (attempt + 1))
        if result.returncode != 0 and not any("duplicate session" in line
                                              for line in result.stderr):
            session.kill()  # made, then an option refused: not left behind
        _check(result, "new-session")
        return session

    def owned_by(self, owner: str) -> bool:
        """Whether the session exists and was created for `owner`."""
        result = self.server.cmd("show-options", "-v", "-t", f"{self.target}:", OWNER_OPTION)
        return result.returncode == 0 and result.stdout == [owner]

    def exists(self) -> bool:
        return self.server.cmd("has-session", "-t", self.target).returncode == 0

    def kill(self) -> bool:
        """Kill the session, then check it is gone; True if it existed. Processes of its
        panes that survive the hang-up tmux sends them are stopped too."""
        if not self.exists():
            return False
        panes = self._pane_processes()
        result = self.server.cmd("kill-session", "-t", self.target)
        deadline = time.monotonic() + KILL_CHECK_SECONDS
        while self.exists():
            if time.monotonic() >= deadline:
                raise TmuxError(f"tmux session {self.name} is still there after kill-session"
                                f" ({' '.join(result.stderr)})")
            time.sleep(0.02)
        # The hang-up reaches pane processes asynchronously: give them a moment first.
        deadline = time.monotonic() + 0.5
        while (alive := {pid: created for pid, created in panes.items()
                         if _same_process(pid, created)}) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in alive:
            process.stop_tree(pid, grace=1.0)
        return True

    def windows(self) -> dict[str, str]:
        """Each window's name and id (`@3`): a target's window is named after the target,
        and a name with `.` or `:` in it cannot be a part of a tmux target, an id can."""
        result = self.server.cmd("list-windows", "-t", self.target,
                                 "-F", "#{window_id} #{window_name}")
        return {name: wid for wid, _, name in (line.partition(" ") for line in result.stdout)
                } if result.returncode == 0 else {}

    def _pane_processes(self) -> dict[int, float]:
        found: dict[int, float] = {}
        result = self.server.cmd("list-panes", "-s", "-t", self.target, "-F", "#{pane_pid}")
        for line in result.stdout if result.returncode == 0 else []:
            with contextlib.suppress(ValueError, psutil.Error):
                found[int(line)] = psutil.Process(int(line)).create_time()
        return found

    def __enter__(self) -> TmuxSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.kill()


def kill_session(name: str, owner: str | None = None) -> bool:
    """Kill the session of exactly this name if there is one (`agentfile clean`), and, given
    an `owner`, only if it was created for that owner; True if it was killed. Calling it
    again is harmless."""
    session = TmuxSession(name)
    if owner is not None and not session.owned_by(owner):
        return False
    return session.kill()


def _same_process(pid: int, created: float) -> bool:
    """Whether `pid` still runs as the process created then (not reused, not a zombie)."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _stragglers(pgid: int, tag: str, since: float, known: dict[int, float]) -> dict[int, float]:
    """What of a pane's tree still runs after its process exited: members seen before, members
    of its process group, and processes carrying its tag. Those that left tree and group
    (double fork, setsid) are re-parented to init, not to us, so `process.adopted` cannot see
    them. Zombies do not count: their new parent may reap them late."""
    found = {pid: created for pid, created in known.items() if _same_process(pid, created)}
    try:
        os.killpg(pgid, 0)
        in_group = True
    except (ProcessLookupError, PermissionError):
        in_group = False
    if not in_group and not tag:
        return found
    uid = os.getuid()
    for proc in psutil.process_iter(["create_time", "status", "uids"]):
        with contextlib.suppress(psutil.Error, OSError):
            info = proc.info
            if info["status"] == psutil.STATUS_ZOMBIE or proc.pid in found:
                continue
            if (in_group and os.getpgid(proc.pid) == pgid) or (
                    tag and info["create_time"] >= since and info["uids"].real == uid
                    and proc.environ().get(process.TAG_VARIABLE) == tag):
                found[proc.pid] = info["create_time"]
    return found


def _launcher(launch: process.Launch, cwd: Path, *, gate: Path, out: Path) -> str:
    """The pane's script. It sends all output to the `out` fifo (agentfile reads it into the
    log and copies it to the pane), waits at the gate until the window is set up, enters
    `cwd`, sets exactly the target's environment (the pane starts under `env -i`), and execs
    the command under a subreaper (process.reaped), which ends as the command did: tmux
    reports its exact exit status or signal."""
    env = {**launch.env, process.TAG_VARIABLE: launch.tag} if launch.tag else dict(launch.env)
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "# Written by agentfile to run one target in this tmux pane; removed once started.",
        f"exec >{q(str(out))} 2>&1",
        f": <{q(str(gate))} || exit 125",
        # Only now: until agentfile holds the terminal open too, stdin keeps it from closing
        # (tmux ends a pane whose terminal no process holds).
        f"exec <{q(str(launch.stdin)) if launch.stdin else '/dev/null'}",
        # -P: PWD as process.run's shell finds it (physical), not as spelt.
        f"cd -P -- {q(str(cwd))} || exit 126",
        "unset OLDPWD",  # set by cd, but not part of the target's environment
    ]
    odd = []
    for key, value in env.items():
        if _SH_NAME.match(key):
            lines.append(f"export {key}={q(value)}")
        else:
            odd.append(q(f"{key}={value}"))  # not a shell name: only env(1) can set it
    if isinstance(launch.command, str):
        argv = ["/bin/sh", "-c", launch.command]
    else:
        argv = list(launch.command)
    # Under a subreaper: the pane's processes are the tmux server's, and what one of them
    # daemonises would go to init, beyond agentfile's reach (and its own subreaper).
    argv = process.reaped(argv, env)
    prefix = f"{q(_env_binary())} {' '.join(odd)} " if odd else ""
    lines.append(f"exec {prefix}{shlex.join(argv)}")
    return "\n".join(lines) + "\n"


def _env_binary() -> str:
    return shutil.which("env") or "/usr/bin/env"


class _Exit:
    """Watches a process that is not our child (the tmux server's): through a pidfd where the
    kernel has them, which wakes a select the moment it ends, else by polling psutil."""

    def __init__(self, pid: int, created: float) -> None:
        self.pid = pid
        self.created = created
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.fd = os.pidfd_open(pid)
        if self.fd is not None and not _same_process(pid, created):
            self.close()  # the pid may already be another process's

    def ended(self) -> bool:
        if self.fd is not None:
            return bool(select.select([self.fd], [], [], 0)[0])
        return not _same_process(self.pid, self.created)

    def wait(self, timeout: float) -> bool:
        """True once the process has ended (waiting at most `timeout`)."""
        if self.fd is not None:
            return bool(select.select([self.fd], [], [], timeout)[0])
        if self.ended():
            return True
        time.sleep(timeout)
        return self.ended()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Copied:
    """A log whose every write is also copied to a pane."""

    def __init__(self, sink: process.Sink, copy: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.copy = copy

    def write(self, data: bytes, /) -> object:
        self.copy(data)
        return self.sink.write(data)

    def close(self) -> None:
        self.sink.close()


class _Stream:
    """Moves the command's output from the fifo into the log a line at a time (as
    process.run does), and copies it to the pane's terminal for people watching. The copy
    never blocks: what the terminal cannot take yet waits, up to a bound, then is dropped,
    so a slow pane can never stall the target or the log."""

    def __init__(self, fd: int, sink: BinaryIO, on_line: Callable[[str], None] | None,
                 launch: process.Launch) -> None:
        self.fd = fd
        self.tail: list[str] = []
        try:
            self.raw = process.LogFile(launch.raw_log) if launch.raw_log is not None else None
        except OSError:
            sink.close()  # its owner, run_in_pane, has no stream to close it through
            raise
        self.lines = process.Lines(sink, self.tail, on_line, launch.header,
                                   render=launch.render, raw=self.raw)
        # An agent's JSON stream is shown in its pane as its log has it, for people.
        self.rendered = launch.render is not None
        if self.rendered:
            self.lines.sink = _Copied(sink, self.copy)
        self.eof = False
        self.mirror: int | None = None
        self.pending = bytearray()

    def read(self) -> None:
        data = process.read_some(self.fd)
        if data is None:
            self.eof = True
        elif data:
            if not self.rendered:
                self.copy(data)
            self.lines.feed(data)

    def close_logs(self) -> None:
        self.lines.sink.close()
        if self.raw is not None:
            self.raw.close()

    def copy(self, data: bytes) -> None:
        if self.mirror is None:
            return
        self.pending += data
        if len(self.pending) > MIRROR_BACKLOG:
            del self.pending[:-MIRROR_BACKLOG]
        self.flush()

    def flush(self) -> None:
        while self.mirror is not None and self.pending:
            try:
                written = os.write(self.mirror, self.pending[:65536])
            except BlockingIOError:
                return
            except OSError:  # the window was closed by hand: the log goes on
                self.pending.clear()
                return
            del self.pending[:written]

    def drain(self) -> None:
        """What is left in the fifo once the tree is gone, then the last partial line."""
        deadline = time.monotonic() + 0.5
        while not self.eof and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.01)[0]:
                self.read()
        self.lines.close()
        deadline = time.monotonic() + 0.2
        while self.mirror is not None and self.pending and time.monotonic() < deadline:
            select.select([], [self.mirror], [], 0.01)
            self.flush()


def _open_gate(gate: Path, ended: _Exit, timeout: float = 10.0) -> None:
    """Let the launcher go: opening the fifo for writing succeeds once it waits reading."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as error:
            if error.errno != errno.ENXIO:
                raise
        if ended.wait(0.002):
            return  # the launcher could not even start; its status tells the rest
        if time.monotonic() >= deadline:
            raise TmuxError("the launcher in the tmux pane did not start")


def _pane_status(session: TmuxSession, pane: str) -> int | None:
    """The exit status tmux collected for the pane's process (kept by remain-on-exit), as
    subprocess reports it: the code, or minus the signal. None if the pane is gone."""
    delay = 0.005
    deadline = time.monotonic() + 2.0
    while True:
        result = session.server.cmd("display-message", "-p", "-t", pane,
                                    "#{pane_dead_status}:#{pane_dead_signal}")
        if result.returncode != 0 or not result.stdout:
            return None
        status, _, signal_number = result.stdout[0].partition(":")
        if status:
            return int(status)
        if signal_number:
            return -int(signal_number)
        # The process has ended but the server has not collected it yet.
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, POLL_SECONDS)


def run_in_pane(session: TmuxSession, window_name: str, launch: process.Launch, *, log: Path,
                on_line: Callable[[str], None] | None = None,
                watch: Callable[[], str | None] | None = None,
                cancel: threading.Event | None = None,
                on_start: Callable[[int], None] | None = None,
                known: dict[int, float] | None = None) -> process.Outcome:
    """`process.run`, but in a new window of `session`, where a person can watch it live.

    Same contract: output streamed into `log` as it comes, the tree stopped on the deadline
    ("timeout"), on `cancel` ("interrupted") or when `watch` gives a reason, and whatever it
    left running stopped after a normal exit. The window is closed when the process ends.
    """
    started = time.monotonic()
    since = time.time() - 1.0
    cwd = launch.cwd.absolute()
    if not cwd.is_dir():
        raise FileNotFoundError(errno.ENOENT, "No such directory", str(cwd))
    log.parent.mkdir(parents=True, exist_ok=True)
    # Private (0700), next to the log: the launcher holds the target's environment.
    work = Path(tempfile.mkdtemp(prefix=f".{log.name}.", suffix=".tmux", dir=log.parent))
    pane: str | None = None
    ended: _Exit | None = None
    stream: _Stream | None = None
    finished = False
    seen = known if known is not None else {}  # filled by the monitor, as for process.run
    try:
        gate, out, script = work / "gate", work / "out", work / "launch.sh"
        os.mkfifo(gate, 0o600)
        os.mkfifo(out, 0o600)
        # Opened first, so the launcher's open for writing does not wait; and read only once
        # the launcher is past the gate, holding it open: an end of file is then real.
        out_fd = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        sink = open(log, "ab", buffering=0)  # noqa: SIM115 (closed in finally, with out_fd)
        stream = _Stream(out_fd, sink, on_line, launch)
        descriptor = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(_launcher(launch, cwd, gate=gate, out=out))
        # The environment is in the script, not on tmux's command line (visible in ps); the
        # argv form has tmux exec it directly, not through the user's shell.
        created = session.server.cmd(
            "new-window", "-d", "-P", "-F", "#{pane_id} #{pane_pid} #{pane_tty}",
            "-t", f"{session.target}:", "-n", window_name, "-c", str(cwd),
            _env_binary(), "-i", "/bin/sh", str(script))
        pane, pid_text, tty = _check(created, "new-window")[0].split(" ", 2)
        pid = int(pid_text)
        # Keeps the pane once its process ended, to read the exit status; set before the
        # launcher passes the gate, however fast the command.
        _check(session.server.cmd("set-option", "-w", "-t", pane, "remain-on-exit", "on"),
               "set-option remain-on-exit")
        try:
            pane_created = psutil.Process(pid).create_time()
        except psutil.Error:
            pane_created = 0.0
        ended = _Exit(pid, pane_created)
        # Besides showing the output, this keeps the pane's terminal open once the command's
        # stdin, stdout and stderr no longer are.
        stream.mirror = os.open(tty, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        if on_start is not None:
            on_start(pid)
        _open_gate(gate, ended)
        # The shell reads the script through a descriptor it holds: the environment need not
        # stay on disk.
        script.unlink(missing_ok=True)
        stopped = _until_exit(ended, stream, launch.deadline, watch, cancel)
        members = process.snapshot(seen)
        if stopped is not None:
            process.stop_tree(pid, known={**members, **_stragglers(pid, launch.tag, since, {})})
        else:
            left = _stragglers(pid, launch.tag, since, members)
            if left:
                process.stop_tree(pid, grace=0.2, known=left)
        stream.drain()
        exit_code = _pane_status(session, pane)
        finished = True
        return process.Outcome(exit_code, stopped, time.monotonic() - started, stream.tail)
    finally:
        if not finished and ended is not None:
            # Raised half way (on_line, watch, an interrupt): nothing may be left running.
            process.stop_tree(ended.pid, grace=0.5, known=process.snapshot(seen))
        if ended is not None:
            ended.close()
        if stream is not None:
            for fd in (stream.fd, stream.mirror):
                if fd is not None:
                    os.close(fd)
            stream.close_logs()
        if pane is not None:
            session.server.cmd("kill-window", "-t", pane)
        shutil.rmtree(work, ignore_errors=True)


def _until_exit(ended: _Exit, stream: _Stream,
                deadline: float | None, watch: Callable[[], str | None] | None,
                cancel: threading.Event | None) -> str | None:
    """Copy output until the pane's process has exited and the fifo is closed (or nearly):
    None; or return a reason to stop it first."""
    next_check = time.monotonic() + 0.1
    exited_at: float | None = None
    while True:
        readable = [stream.fd] if not stream.eof else []
        if exited_at is None and ended.fd is not None:
            readable.append(ended.fd)
        writable = [stream.mirror] if stream.mirror is not None and stream.pending else []
        ready, can_write, _ = select.select(readable, writable, [], POLL_SECONDS)
        if stream.fd in ready:
            stream.read()
        if can_write:
            stream.flush()
        now = time.monotonic()
        if exited_at is None and ended.ended():
            exited_at = now
        if exited_at is not None and (stream.eof or now - exited_at > 0.2):
            return None  # a background child holding the fifo is stopped next
        if cancel is not None and cancel.is_set():
            return "interrupted"
        if deadline is not None and now >= deadline:
            return "timeout"
        if now >= next_check:
            next_check = now + 0.1
            reason = watch() if watch is not None else None
            if reason is not None:
                return reason

"""Spawning and stopping process trees so that none is ever left behind.

Each target runs in its own session (process group). Stopping sends TERM to the group, waits a
grace period, then KILLs every process of the tree psutil can find, including children that left
the group. agentfile also makes itself a child subreaper (Linux), so a daemonised grandchild is
re-parented to agentfile rather than to init, and is still found and stopped at the end. A
launch that is `contained` runs under a subreaper of its own (reaper.py): a daemonised process
then stays in its target's tree, counted and stopped with it, whatever it did to its
environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import psutil

from agentfile.run.spawn import Leader, spawn
from agentfile.secrets import redactor

T = TypeVar("T")
GRACE_SECONDS = 2.0
ADOPTED_AFTER_SECONDS = 0.5
TAG_VARIABLE = "AGENTFILE_PROCESS_TAG"
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux prctl); False where the platform cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants that still exist."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def stop_tree(pid: int, *, grace: float = GRACE_SECONDS,
              known: Mapping[int, float] | None = None,
              leader: Leader | None = None) -> None:
    """TERM the group, wait `grace`, then KILL every process of the tree still alive.

    `known` holds pids seen in the tree before (with their create times), so a child that
    left the group and was re-parented is still stopped. The `leader`, when it is our own
    child, is waited for through it only, so its exit status is never stolen.
    """
    members = {p.pid: p for p in tree(pid) if p.pid != pid or leader is None}
    for other, created in (known or {}).items():
        if other not in members and other != pid:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(other)
                if abs(proc.create_time() - created) < 0.01:
                    members[other] = proc
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    for proc in members.values():
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    deadline = time.monotonic() + grace
    alive = _wait_gone(list(members.values()), grace)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=max(deadline - time.monotonic(), 0.01))
    for proc in alive + [p for p in tree(pid) if p.pid not in members and p.pid != pid]:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if leader is not None:
        leader.wait()
    _wait_gone(alive, 1.0)


def adopted(tag: str, pipe: int | None = None) -> dict[int, float]:
    """Processes re-parented to agentfile that carry `tag` in their environment, or hold the
    target's output `pipe` (its inode) open: members of a target's tree that daemonised
    (double fork, setsid) and so left its tree and group. One that also cleared its
    environment and closed its output is found by neither: the build's end stops it."""
    found: dict[int, float] = {}
    if not tag and pipe is None:
        return found
    held = f"pipe:[{pipe}]"
    for pid in _own_children():
        with contextlib.suppress(psutil.Error):
            child = psutil.Process(pid)
            if (tag and child.environ().get(TAG_VARIABLE) == tag) or \
                    (pipe is not None and _holds(pid, held)):
                found[child.pid] = child.create_time()
    return found


def _holds(pid: int, link: str) -> bool:
    """Whether process `pid` has a descriptor open on `link` (e.g. `pipe:[1234]`)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                return True
    return False


def _own_children() -> list[int]:
    """This process's children, from /proc/self/task/*/children (Linux): a few small reads
    instead of a scan of every process on the machine, once per finished target."""
    pids: list[int] = []
    try:
        for task in os.scandir("/proc/self/task"):
            with open(f"{task.path}/children") as handle:
                pids += [int(p) for p in handle.read().split()]
    except OSError:
        return [p.pid for p in psutil.Process().children()]
    return pids


def _masked(data: bytes) -> bytes:
    """Output as it goes into a log: secrets' values replaced (agentfile.secrets)."""
    masker = redactor()
    if masker.pattern is None:
        return data
    # surrogateescape: bytes that are not UTF-8 reach the log as they came.
    return masker.text(data.decode("utf-8", errors="surrogateescape")).encode(
        "utf-8", errors="surrogateescape")


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # dead; only its parent's wait is left
    except psutil.Error:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes have ended (a zombie counts as ended, whoever its parent
    is); those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not _gone(p)]
    return alive


def snapshot(shared: dict[int, float]) -> dict[int, float]:
    """A copy of a map another thread (the monitor) may be adding to."""
    for _ in range(5):
        try:
            return dict(shared)
        except RuntimeError:  # changed size during the copy
            time.sleep(0.001)
    return {}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap(pids: Mapping[int, float]) -> None:
    """Collect the exit status of descendants re-parented to us (we are their subreaper)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def reap_orphans(keep: set[int]) -> None:
    """Kill and reap adopted descendants that no running target owns (we are subreaper)."""
    if not _own_children():
        return  # no child, so no descendant (the usual end): no need to walk every process
    for child in psutil.Process().children(recursive=True):
        if child.pid in keep:
            continue
        with contextlib.suppress(psutil.Error):
            child.kill()
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(child.pid, 0)


@dataclass
class Outcome:
    """How a process ended."""

    exit_code: int | None
    stopped: str | None = None  # why agentfile stopped it: "timeout", "over-budget", ...
    duration_s: float = 0.0
    tail: list[str] = field(default_factory=list)
    log_error: str | None = None  # its log could not be written to the end (a full disk)


@dataclass
class Launch:
    """What to start: a shell command line (or argv), where, and with what environment."""

    command: str | list[str]
    cwd: Path
    env: Mapping[str, str]
    deadline: float | None = None  # time.monotonic() after which the tree is stopped
    tag: str = ""  # marks the tree's environment, to find members that escaped it
    header: str = ""  # a line for the log before the output (what runs, and when)
    stdin: Path | None = None  # a file to read standard input from (else /dev/null)
    # An agent's stream for machines: each line as a person reads it (its log gets these),
    # and the file the stream goes to whole, for tools.
    render: Callable[[str], list[str]] | None = None
    raw_log: Path | None = None
    # Under a subreaper of its own (reaper.py): what it starts, however it daemonises, stays
    # in its tree and ends with it. It costs a small Python process: for agents and targets
    # with a memory budget, not for every short command.
    contained: bool = False


REAPER = Path(__file__).with_name("reaper.py")


def reaped(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """`argv` run under a subreaper of its own (reaper.py), by this Python, isolated from
    the target's PYTHON* variables and site packages; `env` is the command's environment,
    which the reaper passes on as it is."""
    unset = [] if "LC_CTYPE" in env else ["--unset", "LC_CTYPE"]
    return [sys.executable, "-I", "-S", os.fspath(REAPER), *unset, "--", *argv]


def is_reaper(pid: int) -> bool:
    """Whether `pid` is a reaper.py process (its own memory is not its target's)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return False
    return os.fsencode(REAPER) in words[:5]


TAIL_LINES = 40
EXIT_HOLD_SECONDS = 0.2  # after the leader exits, how long a child may hold the pipe open


@dataclass
class Call:
    """One process a target needs run, and what watches it (the arguments of `run`): whoever
    runs it, a worker thread or the reactor among others, sends back its Outcome."""

    launch: Launch
    log: Path
    on_line: Callable[[str], None] | None = None
    watch: Callable[[], str | None] | None = None
    cancel: threading.Event | None = None
    on_start: Callable[[int], None] | None = None
    known: dict[int, float] | None = None


# One or more processes to run in turn, as a generator: it yields each Call and is sent back its
# Outcome; it returns what they came to (e.g. a target's attempts, runner.target_steps).
Steps = Generator[Call, Outcome, T]


def run(launch: Launch, *, log: Path, on_line: Callable[[str], None] | None = None,
        watch: Callable[[], str | None] | None = None,
        cancel: threading.Event | None = None,
        on_start: Callable[[int], None] | None = None,
        known: dict[int, float] | None = None) -> Outcome:
    """Run to completion, streaming output into `log` line by line (flushed as it comes).

    The process tree is stopped when the deadline passes ("timeout"), when `watch` returns a
    reason, or when `cancel` is set ("interrupted"); after a normal exit, whatever the leader
    left running in its group is stopped too. `known` is filled by whoever samples the tree
    (the monitor) with every member it saw, so members that escaped are stopped as well.
    """
    started = Started(launch, log, on_line)
    try:
        if on_start is not None:
            on_start(started.pid)
        return started.run_to_end(watch, cancel, known)
    finally:
        started.close()


# As in make: a command line without these, whose first word is no shell builtin, is exec'd
# directly; the shell it would cost is most of a short command's time.
_SHELL_CHARS = frozenset("#;\"'*?[]&|<>(){}$`^~!\\\n=%")
_SHELL_WORDS = frozenset({".", ":", "alias", "break", "case", "cd", "command", "continue",
                          "eval", "exec", "exit", "export", "for", "if", "read", "readonly",
                          "return", "set", "shift", "source", "test", "times", "trap", "type",
                          "ulimit", "umask", "unset", "wait", "while", "["})


def direct_argv(command: str) -> list[str] | None:
    """The argv to exec for a command line that needs no shell, else None."""
    if any(c in _SHELL_CHARS for c in command):
        return None
    words = command.split()
    if not words or words[0] in _SHELL_WORDS:
        return None
    return words


def read_some(fd: int) -> bytes | None:
    """What a non-blocking pipe holds now (up to 64 KiB; b"" if nothing yet), None at its end."""
    try:
        return os.read(fd, 65536) or None
    except BlockingIOError:
        return b""


class Sink(Protocol):
    """Where Lines writes a log: a LogFile, or a file opened unbuffered."""

    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...


class LogFile:
    """A target's log, appended to with one system call per write: nothing is buffered, a
    reader sees each line as it comes."""

    def __init__(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.error: OSError | None = None  # the write that failed (a full disk): none after
        try:
            self.fd = os.open(path, flags, 0o666)
        except FileNotFoundError:  # the first log in its folder
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, flags, 0o666)

    def write(self, data: bytes, /) -> int:
        if self.error is None:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError as err:  # the target runs on; its end says the log is short
                self.error = err
        return len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# A line longer than this goes into the log in pieces, as it comes, instead of waiting whole
# in memory for its end (an agent's JSON event can be megabytes: well below this).
MAX_PARTIAL = 64 << 20


class Lines:
    """A process's output as it arrives: into its log (secrets masked), the tail, and
    `on_line`, a whole line at a time. Shared by headless runs and tmux panes.

    With `render` (an agent's JSON stream), the log, the tail and `on_line` get the lines a
    person reads, and `raw` the stream as it came."""

    def __init__(self, sink: Sink, tail: list[str],
                 on_line: Callable[[str], None] | None, header: str = "", *,
                 render: Callable[[str], list[str]] | None = None,
                 raw: Sink | None = None) -> None:
        if header:
            sink.write(_masked(header.encode("utf-8") + b"\n"))
        self.sink = sink
        self.tail = tail
        self.on_line = on_line
        self.render = render
        self.raw = raw
        self.spilled = False  # the line going on was too long to keep whole: not rendered
        # The line not ended yet, in the pieces it came in: joined once, when it ends (joining
        # at every read would cost the square of a long line's length).
        self.partial: list[bytes] = []
        self.pending = 0
        self.fed = 0  # bytes so far: whether a read brought anything

    def feed(self, data: bytes) -> None:
        if not data:  # a read that found nothing (EAGAIN): not an empty piece of a line
            return
        self.fed += len(data)
        end = data.rfind(b"\n")
        if end < 0:
            self.partial.append(data)
            self.pending += len(data)
            if self.pending >= MAX_PARTIAL:
                self._spill()
            return
        lines = b"".join([*self.partial, data[:end]]).split(b"\n")
        rest = data[end + 1:]
        self.partial, self.pending = ([rest], len(rest)) if rest else ([], 0)
        self._lines(lines)

    def close(self) -> None:
        """The last line, when the output did not end with a newline."""
        if self.partial:
            last = b"".join(self.partial)
            self.partial, self.pending = [], 0
            self._lines([last])

    def _lines(self, lines: list[bytes]) -> None:
        """Whole lines: into the log in one write, then each to the tail and `on_line`."""
        if self.render is None:
            self.sink.write(_masked(b"\n".join(lines) + b"\n"))
            for raw in lines:
                self._line(raw)
            return
        if self.raw is not None:
            self.raw.write(_masked(b"\n".join(lines) + b"\n"))
        shown: list[str] = []
        for raw in lines:
            if self.spilled:  # the end of a line whose start went to the raw stream only
                self.spilled = False
                shown.append("[a line too long to show: see the raw stream]")
                continue
            for line in self.render(self._text(raw)):
                shown.append(line)
                self._shown(line)
        if shown:
            self.sink.write("\n".join(shown).encode("utf-8", "surrogateescape") + b"\n")

    def _spill(self) -> None:
        """Write what came of an overlong line; its end, when it comes, is the line that
        the tail and `on_line` see."""
        piece = _masked(b"".join(self.partial))
        if self.render is None:
            self.sink.write(piece)
        else:
            if self.raw is not None:
                self.raw.write(piece)
            self.spilled = True
        self.partial, self.pending = [], 0

    def _line(self, raw: bytes) -> None:
        self._shown(self._text(raw))

    @staticmethod
    def _text(raw: bytes) -> str:
        return redactor().text(raw.decode("utf-8", errors="replace").rstrip("\r"))

    def _shown(self, text: str) -> None:
        self.tail.append(text)
        del self.tail[:-TAIL_LINES]
        if self.on_line is not None:
            self.on_line(text)


class Started:
    """A process started from a Launch, its output on its way into its log: the state that
    `run` (one process, blocking) and the reactor (many, in one thread) share.

    Pumping and polling never block; `settle`, which may stop what the leader left running and
    wait for it, can.
    """

    def __init__(self, launch: Launch, log: Path,
                 on_line: Callable[[str], None] | None) -> None:
        self.launch = launch
        self.begun = time.monotonic()
        self.sink = LogFile(log)
        self.raw: LogFile | None = None
        self.fd = -1
        try:
            if launch.raw_log is not None:
                self.raw = LogFile(launch.raw_log)
            self.tail: list[str] = []
            self.lines = Lines(self.sink, self.tail, on_line, launch.header,
                               render=launch.render, raw=self.raw)
            env = {**launch.env, TAG_VARIABLE: launch.tag} if launch.tag else launch.env
            command = launch.command
            if launch.contained:
                inner = command if isinstance(command, list) else direct_argv(command)
                command = reaped(inner or ["/bin/sh", "-c", str(command)], env)
            argv = command if isinstance(command, list) else direct_argv(command)
            self.leader, self.fd = spawn(argv, command, launch.cwd, env, launch.stdin)
        except BaseException:
            self.close()
            raise
        self.pid = self.leader.pid
        try:  # what a daemonised member still holds, if it kept its output (adopted)
            self.pipe: int | None = os.fstat(self.fd).st_ino
        except OSError:
            self.pipe = None
        self.eof = False
        self.exited_at: float | None = None

    def read(self) -> None:
        """What the pipe holds now, into the log."""
        data = read_some(self.fd)
        if data is None:
            self.eof = True
        else:
            self.lines.feed(data)

    def poll(self, now: float) -> bool:
        """Whether the leader has exited (and is reaped)."""
        if self.exited_at is None and self.leader.poll() is not None:
            self.exited_at = now
        return self.exited_at is not None

    def ended(self, now: float) -> bool:
        """The leader has exited and the pipe is closed, or still held open by something it
        left running (stopped next) after a grace of EXIT_HOLD_SECONDS."""
        return self.exited_at is not None and (
            self.eof or now - self.exited_at > EXIT_HOLD_SECONDS)

    def overdue(self, now: float, cancel: threading.Event | None) -> str | None:
        """Why to stop it now, regardless of what it does: interrupted, or its time is up."""
        if cancel is not None and cancel.is_set():
            return "interrupted"
        deadline = self.launch.deadline
        # One that has exited by the time agentfile looks is not stopped as late: agentfile
        # may have been stopped itself, or busy, past a deadline the target met; only its
        # output is left to read.
        if deadline is not None and now >= deadline and not self.poll(now):
            return "timeout"
        return None

    def until_exit(self, watch: Callable[[], str | None] | None,
                   cancel: threading.Event | None) -> str | None:
        """Pump until the leader has exited and the pipe is closed (or nearly); a reason to
        stop it early is returned instead."""
        next_check = time.monotonic() + 0.1
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while True:
                if not self.eof and selector.select(timeout=0.05):
                    self.read()
                now = time.monotonic()
                if self.poll(now) and self.ended(now):
                    return None  # a background child holding the pipe is stopped next
                if self.eof and self.exited_at is None:
                    # Output closed: the leader is exiting (or went quiet); wait on it, briefly.
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.leader.wait(timeout=0.05)
                reason = self.overdue(now, cancel)
                if reason is not None:
                    return reason
                if now >= next_check:
                    next_check = now + 0.1
                    reason = watch() if watch is not None else None
                    if reason is not None:
                        return reason

    def run_to_end(self, watch: Callable[[], str | None] | None,
                   cancel: threading.Event | None,
                   known: dict[int, float] | None) -> Outcome:
        """Pump and watch it until it ends or is to be stopped, then settle it (blocking)."""
        stopped = self.until_exit(watch, cancel)
        return self.settle(stopped, self.members(known if known is not None else {}, stopped))

    def members(self, seen: dict[int, float], stopped: str | None) -> dict[int, float]:
        """The tree members to stop besides the group: those the monitor saw, and those that
        daemonised and were re-parented to us (found by their tag)."""
        known = snapshot(seen)
        if known or stopped is not None or time.monotonic() - self.begun > ADOPTED_AFTER_SECONDS:
            # A target too short for the monitor to see any child rarely has one; the build's
            # end reaps whatever is left anyway.
            known.update(adopted(self.launch.tag, self.pipe))
        return known

    def left_nothing(self, stopped: str | None, known: Mapping[int, float]) -> bool:
        """Whether it ended by itself, leaving nothing to stop or read: `settle` will not
        wait for anything."""
        return stopped is None and not known and self.eof and \
            self.leader.returncode is not None and not _group_alive(self.pid)

    def settle(self, stopped: str | None, known: dict[int, float], *,
               left_nothing: bool = False) -> Outcome:
        """Stop whatever is left of the tree (TERM, grace, KILL), reap, read the rest of the
        output; how it ended. `left_nothing`: as `left_nothing()` said just before."""
        if not left_nothing and (stopped is not None or known or _group_alive(self.pid)):
            stop_tree(self.pid, grace=GRACE_SECONDS if stopped else 0.2, known=known,
                      leader=self.leader)
        self.leader.wait()
        _reap(known)
        self._drain()
        error = self.sink.error or (self.raw.error if self.raw is not None else None)
        return Outcome(self.leader.returncode, stopped, time.monotonic() - self.begun,
                       self.tail, log_error=error.strerror or str(error) if error else None)

    def _drain(self) -> None:
        """What is left in the pipe after the tree was stopped, then the last partial line."""
        deadline = time.monotonic() + 0.5
        while not self.eof and time.monotonic() < deadline:
            before = self.lines.fed
            self.read()
            if self.lines.fed == before and not self.eof:
                time.sleep(0.01)
        self.lines.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.sink.close()
        if self.raw is not None:
            self.raw.close()

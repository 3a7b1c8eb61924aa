"""A target's command run under a small subreaper, so that everything it starts ends with it.

`python -I -S reaper.py -- ARGV...` makes itself a child subreaper (Linux prctl), starts ARGV
as its child and waits for it. A process of the target that daemonises (a double fork,
`setsid`, `env -i`: `(setsid env -i server &)`) is re-parented to this process instead of to
init, so it stays in the target's process tree: the memory monitor counts it and stopping the
tree stops it. When ARGV ends, whatever of its tree still runs is stopped (TERM, a grace,
KILL) and reaped; then this process ends as ARGV did: its exit code, or the same signal.

agentfile runs it as the process of a tmux pane (whose processes are the tmux server's
children, out of agentfile's reach as a subreaper) and as the leader of a local agent target
or one with a memory budget. It is a script of the standard library only (started with -I -S,
it imports nothing of agentfile): a target's environment (PYTHONPATH, a virtualenv) cannot
change how it runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

_PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
LEFT_GRACE_SECONDS = 0.2  # after the command ended by itself, for what it left running
STOPPED_GRACE_SECONDS = 2.0  # after the command was stopped (a signal reached us too)


def _subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    return found


def descendants() -> list[int]:
    """Every process below this one (all of them are, or are re-parented to, its tree)."""
    found: list[int] = []
    stack = _children(os.getpid())
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += _children(pid)
    return found


def _signal_all(sig: int) -> None:
    for pid in descendants():
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _reap_any() -> bool:
    """Collect every child that has ended; False once there is no child left at all."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def end_the_rest(grace: float) -> None:
    """TERM what is left, give it `grace` to end, KILL what is still there, reap all."""
    _signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _reap_any() and time.monotonic() < deadline:
        time.sleep(0.01)
    while _reap_any():
        # A process forked between a listing and its KILL is found by the next listing.
        _signal_all(signal.SIGKILL)
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    # `--unset NAME`: a variable the command's environment did not have, which Python set
    # in ours (LC_CTYPE, where the locale is C: PEP 538's coercion, which -I cannot stop).
    while argv[:1] == ["--unset"] and len(argv) > 1:
        os.environ.pop(argv[1], None)
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: reaper.py [--unset NAME]... -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    # Python ignores these; the command expects them as a shell leaves them.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    _subreaper()
    signalled: list[int] = []
    child = 0

    def forward(sig: int, _frame: object) -> None:
        signalled.append(sig)
        if child:
            with contextlib.suppress(OSError):
                os.kill(child, sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    # Blocked across the fork: a signal sent then waits, for the command (its handlers back
    # to the defaults first) and for us (forwarded once the command's pid is known).
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    child = os.fork()
    if child == 0:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        try:
            os.execvp(argv[0], argv)
        except OSError as error:
            os.write(2, f"{argv[0]}: {error.strerror}\n".encode(errors="replace"))
            os._exit(127 if isinstance(error, FileNotFoundError) else 126)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    status = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # cannot be: the command is ours until it is reaped
            break
        if pid == child:
            break
    end_the_rest(STOPPED_GRACE_SECONDS if signalled else LEFT_GRACE_SECONDS)
    if os.WIFSIGNALED(status):
        ended_by = os.WTERMSIG(status)
        for forwarded in FORWARDED:
            signal.signal(forwarded, signal.SIG_DFL)
        if ended_by not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(ended_by, signal.SIG_DFL)
        os.kill(os.getpid(), ended_by)
        time.sleep(1)  # a blocked or ignored signal: the code a shell would give
        return 128 + ended_by
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

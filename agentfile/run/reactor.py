"""Many targets' processes in one thread, the scheduler's: one poll(2) over their output pipes
and their exits (pidfds), instead of a worker thread blocked on each.

A worker thread per target costs nothing next to an agent's minutes, but for short commands the
hand-offs between threads (each waiting for the GIL) cost more than the command. The reactor
drives each target's steps (runner.Steps): it starts the process a step asks for, pumps its
output into its log as it comes, looks at cancel, the deadline and the watch on a tick, and
when the process has ended sends its Outcome back for the next step. An end that may block
(stopping what the process left running: TERM, grace, KILL) is handed to a worker thread; its
outcome comes back through a queue and a wake-up pipe.

Linux only (pidfd_open); elsewhere `available()` is False and targets keep their threads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import select
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from agentfile.run import process
from agentfile.run.process import Steps

CHECK_SECONDS = 0.05  # cancel and deadlines are looked at this often, as process.run does
WATCH_SECONDS = 0.1  # a target's watch (its budgets) is asked this often

R = TypeVar("R")


@functools.cache
def available() -> bool:
    """Whether this kernel gives pidfds (Linux 5.3 and later)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


@dataclass(eq=False)
class _Child:
    """A running process of one target's steps."""

    key: str
    steps: Steps[Any]
    call: process.Call
    started: process.Started
    pidfd: int
    next_watch: float
    registered: set[int] = field(default_factory=set)  # its descriptors being polled


class Reactor(Generic[R]):
    """Drives steps to their results, the processes of all of them at once."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor  # where an end that may block is settled
        # poll(2) rather than epoll: a few descriptors, registered and gone again for each
        # process, cost no system call of their own.
        self.poll = select.poll()
        self.owners: dict[int, _Child] = {}  # descriptor -> the child it belongs to
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.poll.register(self.wake_read, select.POLLIN)
        self.children: set[_Child] = set()
        self.settled: queue.SimpleQueue[tuple[_Child, Future[process.Outcome]]] = \
            queue.SimpleQueue()
        self.done: list[tuple[str, R]] = []
        self.next_check = 0.0
        self.closed = False

    def add(self, key: str, steps: Steps[R]) -> None:
        """Drive `steps` (their result comes back from `wait` under `key`); the first
        process starts now."""
        self._advance(key, steps, lambda: next(steps))

    def wake(self) -> None:
        """Make `wait` return now (from another thread, or a signal handler)."""
        if self.closed:  # a late Ctrl-C: its descriptor may be another file's by now
            return
        with contextlib.suppress(BlockingIOError):  # already awake
            os.write(self.wake_write, b"\0")

    def wait(self, timeout: float) -> list[tuple[str, R]]:
        """Wait up to `timeout` seconds for output, an exit, a settled end or a wake-up, and
        handle what came; the results of the steps that finished."""
        now = time.monotonic()
        if self.done:
            timeout = 0
        elif self.children:
            timeout = min(timeout, max(self.next_check - now, 0.0))
        for fd, _ in self.poll.poll(timeout * 1000):
            if fd == self.wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_read, 4096)
                continue
            child = self.owners.get(fd)
            if child is not None and child in self.children:
                self._event(child, fd)
        while not self.settled.empty():
            self._settled(*self.settled.get())
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + CHECK_SECONDS
            for child in list(self.children):
                self._check(child, now)
        done, self.done = self.done, []
        return done

    def close(self) -> None:
        """Forget every process still here (the build reaps what is left)."""
        self.closed = True
        for child in list(self.children):
            self._unregister(child)
            child.started.close()
        self.children.clear()
        os.close(self.wake_read)
        os.close(self.wake_write)

    # -- one target's steps -----------------------------------------------------------

    def _advance(self, key: str, steps: Steps[Any], step: Callable[[], process.Call]) -> None:
        """Take the next step; start the process it asks for, or keep its result."""
        while True:
            try:
                call = step()
            except StopIteration as finished:
                self.done.append((key, finished.value))
                return
            try:
                started = process.Started(call.launch, call.log, call.on_line)
            except Exception as err:  # as process.run would raise it, inside the steps
                step = functools.partial(steps.throw, err)
                continue
            if call.on_start is not None:
                call.on_start(started.pid)
            self._add_child(key, steps, call, started)
            return

    def _add_child(self, key: str, steps: Steps[Any], call: process.Call,
                   started: process.Started) -> None:
        try:
            pidfd = os.pidfd_open(started.pid)  # a zombie's too: it is ours to reap
        except OSError:  # e.g. out of descriptors: a worker thread watches this one
            child = _Child(key, steps, call, started, -1, 0.0)
            self._when_settled(child, self.executor.submit(_watch, started, call))
            return
        child = _Child(key, steps, call, started, pidfd, time.monotonic() + WATCH_SECONDS)
        for fd in (started.fd, pidfd):
            self.poll.register(fd, select.POLLIN)
            self.owners[fd] = child
            child.registered.add(fd)
        self.children.add(child)

    def _event(self, child: _Child, fd: int) -> None:
        started = child.started
        now = time.monotonic()
        if fd == child.pidfd:
            if started.poll(now):  # exited, and reaped
                self._unregister(child, fd)
        else:
            started.read()
            if started.eof:
                self._unregister(child, fd)
        if started.exited_at is not None and started.eof:
            self._end(child, None)

    def _check(self, child: _Child, now: float) -> None:
        """The tick: interrupted, out of time, over a budget, or ended while something it
        left holds its output open."""
        started, call = child.started, child.call
        reason = started.overdue(now, call.cancel)
        if reason is None and call.watch is not None and now >= child.next_watch:
            child.next_watch = now + WATCH_SECONDS
            reason = call.watch()
        if reason is not None or started.ended(now):
            self._end(child, reason)

    def _end(self, child: _Child, stopped: str | None) -> None:
        """The process ended, or is to be stopped: settle it here when nothing is left to
        wait for (the common end), else in a worker thread."""
        self.children.discard(child)
        self._unregister(child)
        started = child.started
        known = started.members(child.call.known if child.call.known is not None else {},
                                stopped)
        if started.left_nothing(stopped, known):
            try:
                outcome = started.settle(stopped, known, left_nothing=True)
            finally:
                started.close()
            self._advance(child.key, child.steps, lambda: child.steps.send(outcome))
            return
        self._when_settled(child, self.executor.submit(started.settle, stopped, known))

    def _when_settled(self, child: _Child, future: Future[process.Outcome]) -> None:
        """Take the outcome a worker thread comes to back here, on the next wait."""

        def settled(done: Future[process.Outcome]) -> None:
            self.settled.put((child, done))
            self.wake()

        future.add_done_callback(settled)

    def _settled(self, child: _Child, done: Future[process.Outcome]) -> None:
        child.started.close()
        error = done.exception()
        step: Callable[[], process.Call]
        if error is not None:
            step = functools.partial(child.steps.throw, error)
        else:
            outcome = done.result()
            step = functools.partial(child.steps.send, outcome)
        self._advance(child.key, child.steps, step)

    def _unregister(self, child: _Child, fd: int | None = None) -> None:
        for each in [fd] if fd is not None else list(child.registered):
            if each in child.registered:
                child.registered.discard(each)
                self.poll.unregister(each)
                del self.owners[each]
                if each == child.pidfd:
                    os.close(each)


def _watch(started: process.Started, call: process.Call) -> process.Outcome:
    """A process watched in a worker thread, as process.run does."""
    return started.run_to_end(call.watch, call.cancel, call.known)

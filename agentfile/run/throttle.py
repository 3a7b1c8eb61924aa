"""Admission by measurement (SPEC 9): a monitor thread samples the machine and every running
target's process tree on a timer; the scheduler asks it before every start.

A target starts only while memory in use is below `throttle.memory`, available memory covers
`throttle.free` plus the target's `memory` budget (the unused part of running targets'
budgets counts as taken, so a burst of starts cannot overshoot), and the load average is
below `throttle.load`. Under memory pressure the youngest running target is suspended
(SIGSTOP) and resumed when pressure falls, or stopped and queued again if it lasts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from agentfile.run import process

SAMPLE_SECONDS = 0.25
# Set by tests: a JSON file standing in for the machine ({"memory_percent", "available",
# "load"}), so pressure is deterministic. Read on every sample.
PRESSURE_FILE = "AGENTFILE_PRESSURE_FILE"


@dataclass(frozen=True, slots=True)
class Machine:
    memory_percent: float
    available: int
    load: float


def measure() -> Machine:
    override = os.environ.get(PRESSURE_FILE)
    memory = psutil.virtual_memory()
    load = os.getloadavg()[0]
    if override:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(Path(override).read_text())
            return Machine(float(data.get("memory_percent", memory.percent)),
                           int(data.get("available", memory.available)),
                           float(data.get("load", load)))
    return Machine(memory.percent, memory.available, load)


@dataclass(frozen=True, slots=True)
class Limits:
    memory_percent: float | None = None
    load: float | None = None
    free: int | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.memory_percent, self.load, self.free))


class Sampled(Protocol):
    """Where the monitor writes what it measured of one target (the runner's Progress)."""

    pid: int | None
    rss_bytes: int
    peak_rss_bytes: int
    cpu_s: float


@dataclass
class Tree:
    """One running target's process tree, as the monitor sees it."""

    progress: Sampled
    started: float
    reserved: int  # its memory budget, or 0
    known: dict[int, float] = field(default_factory=dict)  # every member seen: pid -> created
    cpu: dict[int, float] = field(default_factory=dict)
    reapers: dict[int, bool] = field(default_factory=dict)  # leader pid -> runs reaper.py
    suspended_at: float | None = None
    suspended_s: float = 0.0

    @property
    def rss(self) -> int:
        return self.progress.rss_bytes


class Monitor:
    """Samples on a timer in its own thread; decisions read the latest sample."""

    def __init__(self, limits: Limits, *, measure_machine: Callable[[], Machine] = measure,
                 interval: float = SAMPLE_SECONDS) -> None:
        self.limits = limits
        self.measure_machine = measure_machine
        self.interval = interval
        self.trees: dict[str, Tree] = {}
        self.machine = measure_machine()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="agentfile monitor", daemon=True)
        self.samples = 0
        self.busy_s = 0.0  # the monitor's own CPU, for the benchmark

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=2)
        with self.lock:
            for tree in self.trees.values():
                if tree.suspended_at is not None:
                    self._signal(tree, signal.SIGCONT)

    def track(self, name: str, progress: Sampled, reserved: int) -> Tree:
        tree = Tree(progress, time.monotonic(), reserved)
        with self.lock:
            self.trees[name] = tree
        return tree

    def untrack(self, name: str) -> Tree | None:
        with self.lock:
            tree = self.trees.pop(name, None)
        if tree is not None and tree.suspended_at is not None:
            self._signal(tree, signal.SIGCONT)
            tree.suspended_s += time.monotonic() - tree.suspended_at
            tree.suspended_at = None
        return tree

    def tree(self, name: str) -> Tree | None:
        with self.lock:
            return self.trees.get(name)

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            started = time.thread_time()
            # A sample that fails (out of descriptors for /proc, a process racing away) is
            # skipped: the next one, a moment later, is as good, and the monitor lives on.
            with contextlib.suppress(OSError, psutil.Error):
                self.sample()
            self.busy_s += time.thread_time() - started

    def sample(self) -> None:
        self.machine = self.measure_machine()
        with self.lock:
            trees = [t for t in self.trees.values() if t.progress.pid is not None]
        if not trees:
            return
        for tree in trees:
            pid = tree.progress.pid
            if pid is None:
                continue
            rss = 0
            if pid not in tree.reapers:
                tree.reapers[pid] = process.is_reaper(pid)
            for member in _descendants(pid):
                try:
                    with member.oneshot():
                        # A target's own subreaper (reaper.py) is agentfile's, not the target's.
                        if member.pid != pid or not tree.reapers[pid]:
                            rss += member.memory_info().rss
                        times = member.cpu_times()
                        tree.cpu[member.pid] = times.user + times.system
                        if member.pid != pid:
                            tree.known.setdefault(member.pid, member.create_time())
                except psutil.Error:
                    continue
            tree.progress.rss_bytes = rss
            tree.progress.peak_rss_bytes = max(tree.progress.peak_rss_bytes, rss)
            tree.progress.cpu_s = sum(tree.cpu.values())
        self.samples += 1

    # -- decisions ----------------------------------------------------------------------

    def unused_reservations(self) -> int:
        with self.lock:
            return sum(max(t.reserved - t.rss, 0) for t in self.trees.values())

    def hold_reason(self, reserve: int) -> str | None:
        """Why a target needing `reserve` bytes may not start now, or None."""
        limits, machine = self.limits, self.machine
        if limits.memory_percent is not None and machine.memory_percent >= limits.memory_percent:
            return (f"memory in use {machine.memory_percent:.0f}% >= "
                    f"{limits.memory_percent:.0f}%")
        if limits.load is not None and machine.load >= limits.load:
            return f"load {machine.load:.2f} >= {limits.load:g}"
        need = (limits.free or 0) + reserve
        if need:
            room = machine.available - self.unused_reservations()
            if room < need:
                return (f"available {_mib(room)} (after running targets' reservations) "
                        f"< {_mib(need)} needed")
        return None

    def under_pressure(self) -> bool:
        limit = self.limits.memory_percent
        return limit is not None and self.machine.memory_percent >= limit

    def pressure_relieved(self) -> bool:
        limit = self.limits.memory_percent
        # A little below the limit, so a resumed target does not flap straight back.
        return limit is None or self.machine.memory_percent < limit - 2

    def suspend_youngest(self) -> str | None:
        with self.lock:
            running = [(t.started, n) for n, t in self.trees.items() if t.suspended_at is None]
        if len(running) <= 1:
            return None  # the last one running is never suspended: the build must progress
        _, name = max(running)
        tree = self.trees[name]
        self._signal(tree, signal.SIGSTOP)
        tree.suspended_at = time.monotonic()
        return name

    def resume_oldest_suspended(self) -> str | None:
        with self.lock:
            suspended = [(t.started, n) for n, t in self.trees.items()
                         if t.suspended_at is not None]
        if not suspended:
            return None
        _, name = min(suspended)
        tree = self.trees[name]
        self._signal(tree, signal.SIGCONT)
        assert tree.suspended_at is not None
        tree.suspended_s += time.monotonic() - tree.suspended_at
        tree.suspended_at = None
        return name

    def suspended_for(self) -> Mapping[str, float]:
        now = time.monotonic()
        with self.lock:
            return {n: now - t.suspended_at for n, t in self.trees.items()
                    if t.suspended_at is not None}

    @staticmethod
    def _signal(tree: Tree, sig: int) -> None:
        if tree.progress.pid is None:
            return
        for member in process.tree(tree.progress.pid):
            with contextlib.suppress(psutil.Error):
                member.send_signal(sig)


def _children(pid: int) -> list[int]:
    """A process's children from /proc/PID/task/*/children (Linux): a few small reads per
    tree member rather than a scan of every process on the machine."""
    found: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/children") as handle:
                found += [int(p) for p in handle.read().split()]
    except FileNotFoundError:
        return []  # it has just ended
    except OSError:
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in psutil.Process(pid).children()]
    return found


def _descendants(pid: int) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(current))
        stack.extend(_children(current))
    return found


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f}MiB"

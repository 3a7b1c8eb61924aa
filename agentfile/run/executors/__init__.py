"""Where targets run: the executor seam between the scheduler and the machines.

The scheduler decides what starts and when, and keeps merging, budgets and state; an executor
only runs what it is given. `submit` a target's job; while it runs, the executor writes the
job's events where the scheduler and the board read them (lines to the job's log, usage and the
phase to its `progress`); `wait` gives back each finished target's result (its status, its
attempts, its commits as a branch); setting the job's `cancel` stops it (gracefully, then by
force). `local` runs everything on this machine; `ray` sends worktree targets to a Ray cluster.
"""

from __future__ import annotations

from typing import Protocol

from agentfile.run.runner import Job, TargetResult

NAMES = ("local", "ray")


class Executor(Protocol):
    """Runs the targets the scheduler submits; says when each has finished."""

    def submit(self, job: Job) -> None:
        """Start the job's target now; its result comes back from `wait`."""

    def wait(self, timeout: float) -> list[tuple[str, TargetResult]]:
        """Wait up to `timeout` seconds (less if woken) for targets to finish; their results."""
        ...

    def wake(self) -> None:
        """Make `wait` return now (from another thread, or a signal handler)."""

    def close(self) -> None:
        """Wait for what still runs to end (their cancels are set), release everything."""

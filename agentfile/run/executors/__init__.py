"""Where targets run: the executor seam between the scheduler and the machines.

The scheduler decides what starts and when, and keeps merging, budgets and state; an executor
only runs what it is given. `submit` a target's job; while it runs, the executor writes the
job's events where the scheduler and the board read them (lines to the job's log, usage and the
phase to its `progress`); `wait` gives back each finished target's result (its status, its
attempts, its commits as a branch); setting the job's `cancel` stops it (gracefully, then by
force). `local` runs everything on this machine; `ray` sends worktree targets to a Ray cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from agentfile.errors import UsageError

if TYPE_CHECKING:
    from agentfile.isolation.worktree import Worktrees
    from agentfile.manifest.expand import ConcreteTarget
    from agentfile.manifest.load import LoadedManifest
    from agentfile.run.executors.local import LocalExecutor
    from agentfile.run.runner import Job, TargetResult


class Executor(Protocol):
    """Runs the targets the scheduler submits; says when each has finished."""

    def submit(self, job: Job) -> None:
        """Start the job's target now; its result comes back from `wait`."""

    def wait(self, timeout: float) -> list[tuple[str, TargetResult]]:
        """Wait up to `timeout` seconds (less if woken) for targets to finish; their results."""
        ...

    def wake(self) -> None:
        """Make `wait` return now (from another thread, or a signal handler)."""

    def notices(self) -> list[tuple[str, dict[str, object]]]:
        """Events it has to tell (a target placed on a node, a node lost), since last asked."""
        ...

    def close(self) -> None:
        """Wait for what still runs to end (their cancels are set), release everything."""


def connect(name: str, address: str | None) -> None:
    """Make sure the executor can run anything: for `ray`, that Ray is installed and a
    cluster answers; else a UsageError that says how to get there."""
    if name != "ray":
        return
    try:
        from agentfile.run.executors import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'agentfile[ray]'") from None
    ray.connect(address)


def choose(name: str, local: LocalExecutor, *, loaded: LoadedManifest,
           worktrees: Worktrees | None, jobs: int, address: str | None) -> Executor:
    """The executor called `name`; `local` runs what the others leave here."""
    if name != "ray":
        return local
    connect(name, address)
    from agentfile.run.executors.ray import RayExecutor

    return RayExecutor(local, loaded=loaded, worktrees=worktrees, jobs=jobs, address=address)


def goes_to_cluster(loaded: LoadedManifest, target: ConcreteTarget) -> bool:
    """Whether a cluster executor runs the target on a node: its work happens in a worktree
    of its own, not in the user's checkout nor in a tmux window here."""
    return target.kind != "group" and loaded.isolation_of(target) == "worktree" and \
        not loaded.in_tmux(target)

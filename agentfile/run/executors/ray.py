"""The Ray executor: worktree targets run as Ray tasks on a cluster's nodes; the only module
that imports ray.

Each target whose work happens in its own worktree becomes a streaming Ray task (1 CPU, its
memory budget, its extra resources) that runs `remote.run` on some node: its log lines and
progress come back as the task yields them, its commits as a git bundle, which is fetched here
and merged by the scheduler as a local worktree target's branch is. Targets in the user's
checkout (none, dir, branch) and in tmux run here, through the local executor.

A stop (Ctrl-C, a budget, a timeout) is asked through a small actor the task polls, so the
node stops the tree and sends back what the target did; if that takes too long, the task is
cancelled by force and the node's supervisor stops what is left. A lost node or worker is not
the target's fault: it runs again elsewhere, not counted as an attempt (Ray's own retries stay
at 0, so a paid agent run is never repeated behind agentfile's back).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as errors

from agentfile.errors import UsageError
from agentfile.isolation.setup import setup_of
from agentfile.isolation.worktree import Worktrees, WorktreeWork
from agentfile.manifest.load import LoadedManifest
from agentfile.manifest.model import FileRef
from agentfile.run import remote
from agentfile.run.executors import goes_to_cluster
from agentfile.run.executors.local import LocalExecutor
from agentfile.run.runner import Attempt, Job, TargetResult

STOP_GRACE_SECONDS = 20.0  # asked to stop, a node has this long to send the work back
WAIT_SECONDS = 0.1  # how often a stop is looked for while waiting for the next event
MOST_LOST = 3  # a target whose node is lost more often than this fails
# After a task's error, how long its node has to be declared dead for the error to count as
# the node's: the cluster's control store notices a dead node by missed health checks (a few
# seconds apart), while the task's error can reach the coordinator first.
NODE_DEATH_SECONDS = 60.0


class _Lost(Exception):
    """The task ended without its result: as a lost worker, not the target's doing."""


# A worker or node that died, as Ray says it (directly, or as the cause of a task's error:
# a call to the cluster from a task whose node is dying fails with one of these).
LOST = (_Lost, errors.NodeDiedError, errors.WorkerCrashedError, errors.LocalRayletDiedError,
        errors.ObjectLostError, errors.RaySystemError, errors.RayActorError, errors.RpcError)
HEAD_RESOURCE = "node:__internal_head__"  # what Ray's head node alone has
START_HINT = ("start one with `ray start --head` (and `ray start --address HEAD:6379` on "
              "other machines), then set RAY_ADDRESS or pass --ray-address")


@ray.remote(num_cpus=0)
class _Stops:
    """The targets the coordinator asks to stop; each running task polls it."""

    def __init__(self) -> None:
        self.tags: set[str] = set()

    def stop(self, tag: str) -> None:
        self.tags.add(tag)

    def stopped(self, tag: str) -> bool:
        return tag in self.tags


def _stopped(stops: Any, tag: str) -> bool:
    try:
        return bool(ray.get(stops.stopped.remote(tag), timeout=5))
    except (errors.GetTimeoutError, *LOST):
        return False  # asked again in a moment; a lost coordinator ends the task anyway


@dataclass(frozen=True)
class _OnNode:
    """The task's first event: the cluster's id of the node it runs on."""

    node_id: str


@ray.remote(max_retries=0)
def _run_target(spec: remote.Spec, bundles: list[Any],
                stops: Any) -> Iterator[remote.Event | _OnNode]:
    """The task: `remote.run` on whichever node Ray chose."""
    yield _OnNode(ray.get_runtime_context().get_node_id())
    yield from remote.run(spec, fetch=lambda number: bytes(ray.get(bundles[number])),
                          stopped=lambda: _stopped(stops, spec.tag))


def _caused_by_loss(err: BaseException) -> bool:
    """Whether the error, or what caused it (a task's error carries its cause), is a dead
    worker's or node's."""
    seen: set[int] = set()
    found: BaseException | None = err
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        if isinstance(found, LOST):
            return True
        cause = getattr(found, "cause", None)
        found = cause if isinstance(cause, BaseException) else (
            found.__cause__ or found.__context__)
    return False


def _not_offered(wanted: dict[str, float]) -> str | None:
    """Extra resources no live node of the cluster has as many of (`name = amount`, …);
    None when some node offers them all."""
    if not wanted:
        return None
    nodes = ray.nodes()  # type: ignore[no-untyped-call]
    offered = [n.get("Resources") or {} for n in nodes if n.get("Alive")]
    if any(all(has.get(k, 0) >= v for k, v in wanted.items()) for has in offered):
        return None
    return ", ".join(f"{k} = {v:g}" for k, v in wanted.items())


def _node_dies(node_id: str, within: float) -> bool:
    """Whether the cluster declares the node dead within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            nodes = ray.nodes()  # type: ignore[no-untyped-call]
            alive = any(n.get("NodeID") == node_id and n.get("Alive") for n in nodes)
        except Exception:  # the cluster's control store does not answer: nor would a node
            return True
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def connect(address: str | None) -> None:
    """Join the cluster at `address` (else RAY_ADDRESS, else one started on this machine);
    a UsageError saying how to start one when there is none to reach."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and "://" not in address:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=3).close()
        except (OSError, ValueError):
            raise UsageError(f"no Ray cluster answers at {address}: {START_HINT}") from None
    try:
        ray.init(address=address or "auto", logging_level=logging.ERROR, log_to_driver=False,
                 namespace="agentfile")
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"at {address}" if address else "(RAY_ADDRESS is not set)"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"no Ray cluster {where}: {START_HINT} ({first})") from None


class RayExecutor:
    """Worktree targets on the cluster; the others through the local executor."""

    def __init__(self, local: LocalExecutor, *, loaded: LoadedManifest,
                 worktrees: Worktrees | None, jobs: int, address: str | None) -> None:
        self.local = local
        self.loaded = loaded
        self.worktrees = worktrees
        self.pool = ThreadPoolExecutor(max_workers=max(jobs, 1),
                                       thread_name_prefix="agentfile-ray")
        self.stops: Any = None
        self.lock = threading.Lock()
        self.first: tuple[remote.Bundle, Any] | None = None
        self.later: dict[str, tuple[remote.Bundle, Any]] = {}
        self.notes: queue.SimpleQueue[tuple[str, dict[str, object]]] = queue.SimpleQueue()
        self.nodes: dict[str, str] = {}  # target -> the node it runs or ran on

    # -- the Executor protocol ------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if job.terminal is not None or self.worktrees is None or \
                not goes_to_cluster(self.loaded, job.target):
            self.local.submit(job)
            return
        self.pool.submit(self._remote, job)

    def wait(self, timeout: float) -> list[tuple[str, TargetResult]]:
        return self.local.wait(timeout)

    def wake(self) -> None:
        self.local.wake()

    def notices(self) -> list[tuple[str, dict[str, object]]]:
        found = []
        while not self.notes.empty():
            found.append(self.notes.get())
        return found

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.local.close()
        ray.shutdown()

    # -- one remote target ----------------------------------------------------------------

    def _remote(self, job: Job) -> None:
        try:
            result = self._run(job)
        except Exception as err:  # agentfile's own failure: this target's, not the build's
            result = TargetResult(job.target.name, "failed",
                                  detail=f"agentfile could not run it on the cluster: {err}")
        result.node = self.nodes.get(job.target.name)
        self.local.deliver(job.target.name, result)

    def _run(self, job: Job) -> TargetResult:
        name = job.target.name
        base, bundles = self._bundles()
        spec = self._spec(job, base, tuple(bundle for bundle, _ in bundles))
        refs = [ref for _, ref in bundles]
        wanted = self.loaded.resources_of(job.target)
        for lost in range(MOST_LOST + 1):
            missing = _not_offered(wanted)
            if missing:  # Ray would hold the task until such a node joins: maybe never
                return TargetResult(name, "failed", detail=(
                    f"no node of the Ray cluster offers {missing} (`resources`): start one "
                    f"with `ray start --resources '{json.dumps(wanted)}'`"))
            budget = job.target.definition.budget
            options: dict[str, Any] = {"num_cpus": 1, "num_returns": "streaming"}
            if budget is not None and budget.memory:
                options["memory"] = budget.memory
            extra = dict(wanted)
            if "GPU" in extra:  # Ray asks for GPUs by their own option
                options["num_gpus"] = extra.pop("GPU")
            if extra:
                options["resources"] = extra
            task = _run_target.options(**options).remote(spec, refs, self._stop_board())
            where: list[str] = []  # the cluster's id of its node, once the task says it
            try:
                returned = self._follow(job, task, where)
            except Exception as err:
                if not _caused_by_loss(err) and not (
                        isinstance(err, errors.RayError) and where and
                        _node_dies(where[0], NODE_DEATH_SECONDS)):
                    raise
                node = self.nodes.get(name, "a node")
                self.notes.put(("node_lost", {"target": name, "node": node,
                                              "action": "running it again elsewhere"
                                              if lost < MOST_LOST else "gave up",
                                              "error": type(err).__name__}))
                with open(job.log, "ab") as log:
                    log.write(f"=== agentfile: {node} was lost ({type(err).__name__}); "
                              "running it again on another node\n".encode())
                continue
            if returned is None:  # stopped by force: what it spent is still recorded
                return _forced(job)
            return self._land(job, spec, returned)
        return TargetResult(name, "failed",
                            detail=f"its node was lost {MOST_LOST + 1} times in a row")

    def _follow(self, job: Job, task: Any, where: list[str]) -> remote.Returned | None:
        """Apply the task's events as they come; its result (None: cancelled by force).
        `where` gets the cluster's id of the task's node."""
        deadline: float | None = None
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "ab") as log:
            while True:
                if job.cancel.is_set() and deadline is None:
                    self._stop_board().stop.remote(job.tag)
                    deadline = time.monotonic() + STOP_GRACE_SECONDS
                if deadline is not None and time.monotonic() >= deadline:
                    ray.cancel(task, force=True)
                    return None
                ready, _ = ray.wait([task], timeout=WAIT_SECONDS)
                if not ready:
                    continue
                try:
                    event = ray.get(next(task))
                except StopIteration:
                    raise _Lost("the task ended without a result") from None
                except errors.TaskCancelledError:
                    return None
                if isinstance(event, _OnNode):
                    where.append(event.node_id)
                elif isinstance(event, remote.Output):
                    log.write(event.data)
                    log.flush()
                elif isinstance(event, remote.Update):
                    remote.apply_progress(job.progress, event.fields)
                elif isinstance(event, remote.Placed):
                    self.nodes[job.target.name] = event.node
                    self.notes.put(("target_placed", {"target": job.target.name,
                                                      "node": event.node}))
                elif isinstance(event, remote.Finished):
                    return event.returned

    def _land(self, job: Job, spec: remote.Spec, returned: remote.Returned) -> TargetResult:
        """Fetch the target's commits into its branch here, as a local worktree leaves it."""
        assert self.worktrees is not None
        result = returned.result
        git, ref = self.worktrees.git, f"refs/heads/{spec.branch}"
        self.worktrees.store.record_resource(spec.run_id, "branch", spec.branch,
                                             spec.target.name)
        if returned.bundle is not None:
            with tempfile.TemporaryDirectory() as scratch:
                file = Path(scratch) / "work.bundle"
                file.write_bytes(returned.bundle)
                git.fetch_bundle(file, ref, ref)
        else:  # it changed nothing: its branch at its base, as a local worktree leaves it
            git.set_ref(ref, spec.base)
        result.work = WorktreeWork(spec.branch, spec.base, committed=returned.tip != spec.base,
                                   wip=result.status != "succeeded", tip=returned.tip)
        told = self.local.places.committed  # recovery's record, before anything merges it
        if told is not None:
            told(job, result, result.work)
        for text, path in ((returned.prompt, job.prompt_file), (returned.usage, job.usage_file),
                           (result.message, job.result_file)):
            if text is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        return result

    def _spec(self, job: Job, base: str, bundles: tuple[remote.Bundle, ...]) -> remote.Spec:
        assert self.worktrees is not None
        target, worktrees = job.target, self.worktrees
        definition = target.definition
        names = list(definition.context)
        if isinstance(definition.prompt, FileRef):
            names.append(definition.prompt.file)
        files = {n: (job.base / n).read_text(encoding="utf-8", errors="replace") for n in names}
        copied = {n: (worktrees.git.root / n).read_bytes() for n in definition.copy_files
                  if (worktrees.git.root / n).is_file()}
        return remote.Spec(
            target=target, run_id=job.run_id, repo=str(worktrees.git.root), agent=job.agent,
            agent_label=self.loaded.agent_label(target),
            budget=job.budget, dep_results=dict(job.dep_results), dep_diffs=dict(job.dep_diffs),
            files=files, copied=copied, branch=worktrees.branch_of(target), base=base,
            bundles=bundles, money_left=job.budget_usd_left(),
            keep=not self.loaded.checks_merged_work(target), tag=job.tag,
            sandbox=job.sandbox is not None, setup=setup_of(self.loaded, target))

    def _bundles(self) -> tuple[str, list[tuple[remote.Bundle, Any]]]:
        """The integration commit a target starts from, and the bundles in the object store
        that hold it: the first commit a target started from, whole (made once), then what
        a later commit adds to it (once per commit)."""
        assert self.worktrees is not None
        git, ref = self.worktrees.git, f"refs/heads/{self.worktrees.integration}"
        with self.lock:
            if self.first is None:
                self.first = self._put(git.bundle, ref, None)
            tip = git.rev(ref)
            if tip == self.first[0].commit:
                return tip, [self.first]
            if tip not in self.later:  # a merge may land meanwhile: keyed by what it holds
                later = self._put(git.bundle, ref, self.first[0].commit)
                self.later[later[0].commit] = later
                tip = later[0].commit
            return tip, [self.first, self.later[tip]]

    @staticmethod
    def _put(bundle: Any, ref: str, excluding: str | None) -> tuple[remote.Bundle, Any]:
        with tempfile.TemporaryDirectory() as scratch:
            file = Path(scratch) / "base.bundle"
            commit = bundle(file, ref, excluding=excluding)
            return remote.Bundle(commit, ref), ray.put(file.read_bytes())

    def _stop_board(self) -> Any:
        with self.lock:
            if self.stops is None:
                # On the head node: it lives as long as the cluster, not as a worker node.
                self.stops = _Stops.options(  # type: ignore[attr-defined]
                    resources={HEAD_RESOURCE: 0.001}).remote()
            return self.stops


def _forced(job: Job) -> TargetResult:
    """A target cancelled by force: its work is lost with its node's worktree, what it
    spent is not."""
    progress = job.progress
    return TargetResult(job.target.name, "interrupted", attempts=[Attempt(
        max(progress.attempt, 1), "interrupted", None, progress.started, time.time(),
        cost_usd=progress.cost_usd, tokens=progress.usage.tokens)],
        detail="stopped by force on its node")

"""The ready-set loop (SPEC 5.3): start what is ready and admitted, collect what finished.

Targets become ready when their dependencies are done (counters, not rescans, so a 2,000-target
build costs no more per target than a 20-target one). Among ready targets, higher priority
first, then the longer remaining path (weighted by earlier runs' durations), then file order.
Admission checks job slots, locks, `exclusive`, the agent's `max_parallel` and the budgets.
Only this loop writes state and emits events. Targets run through an executor (run/executors/):
on this machine, or on a cluster; which one is no concern of this loop. It keeps merging and
budgets beside admission: each is a decision only the one writer of state may take, in order.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agentfile import graph as g
from agentfile.agents.base import RateLimit
from agentfile.errors import UsageError
from agentfile.fingerprint import fingerprint, landed, up_to_date
from agentfile.isolation import directory
from agentfile.isolation.place import Places
from agentfile.isolation.sandbox import Sandbox
from agentfile.isolation.worktree import Worktrees, WorktreeWork
from agentfile.manifest.expand import ConcreteTarget
from agentfile.manifest.load import LoadedManifest
from agentfile.manifest.model import DailyBudget, DirRef, FileRef, describe_isolation
from agentfile.records.events import SUCCESS, Reporter, last_lines, make_event
from agentfile.records.layout import RunFiles
from agentfile.records.state import FinishedWork, OutcomeRow, Store
from agentfile.run.executors import Executor, choose
from agentfile.run.executors.local import LocalExecutor
from agentfile.run.pacing import Pacing
from agentfile.run.recovery import Recovery
from agentfile.run.runner import RATE_LIMITED, Job, Progress, TargetResult
from agentfile.run.throttle import Limits, Monitor
from agentfile.secrets import redactor

if TYPE_CHECKING:  # GitPython and libtmux load only when a build uses them
    from agentfile.agents.relay import Refusal, Relays
    from agentfile.git import Git
    from agentfile.isolation.tmux import TmuxSession
    from agentfile.records.ledger import Ledger

TICK_SECONDS = 0.1
FLUSH_SECONDS = 0.1  # events and state rows reach their files at least this often
PRESSURE_REQUEUE_SECONDS = 10.0  # suspended this long under pressure: stop, queue again
OTHERS_SECONDS = 0.5  # how stale other builds' spend today may be for the daily alert
_STOPPED = {"budget": "the build's budget was reached", "failure": "a target failed",
            "interrupted": "interrupted", "disk-full": "the disk is full",
            "": "the build stopped"}
DISK_FULL_BYTES = 1 << 20  # free space under which the disk counts as full


@dataclass
class BuildRequest:
    """What to build and how, decided by the `build` command."""

    loaded: LoadedManifest
    names: Sequence[str]  # selected targets, topologically ordered
    jobs: int
    keep_going: bool = False
    force: bool = False  # -B
    done_before: frozenset[str] = frozenset()  # --retry-failed: succeeded last time
    budget_usd: float | None = None
    budget_time: float | None = None
    worktrees: Worktrees | None = None  # set when a selected target is isolated in one
    no_merge: bool = False  # --no-merge: every branch stays for review
    limits: Limits = field(default_factory=Limits)  # throttle, --max-memory, --max-load
    terminal: TmuxSession | None = None  # the build's tmux session, when one is used
    ledger: Ledger | None = None  # the user's spend across repositories (daily budget)
    daily: DailyBudget | None = None
    all_in_tmux: bool = False  # --tmux
    # `build --verbose`: each line a person reads of a target's output, (target, line),
    # called from the thread that runs it.
    echo: Callable[[str, str], None] | None = None
    recovery: Recovery = field(default_factory=Recovery)  # what builds that died left
    executor: str = "local"  # where worktree targets run (run/executors/)
    ray_address: str | None = None


@dataclass
class Running:
    target: ConcreteTarget
    job: Job
    started: float
    agent_name: str | None


@dataclass
class BuildOutcome:
    """The end of a build: each target's status, and why the build stopped early if it did."""

    statuses: dict[str, str] = field(default_factory=dict)
    results: dict[str, TargetResult] = field(default_factory=dict)
    stopped: str | None = None  # "failure", "budget", "interrupted"
    started: float = 0.0
    finished: float = 0.0
    kept: dict[str, str] = field(default_factory=dict)  # branch -> why it stays
    budget_refused: bool = False  # an agent target was not started: the daily budget
    conflicts: list[str] = field(default_factory=list)
    rate_limit_waits: int = 0  # attempts that ended for a provider's sake and were waited out
    rate_limit_signals: int = 0  # `rate_limited` events: what the CLIs said of their limits


class Scheduler:
    def __init__(self, request: BuildRequest, *, run_id: str, files: RunFiles, store: Store,
                 reporter: Reporter) -> None:
        self.request = request
        self.loaded = request.loaded
        self.run_id = run_id
        self.files = files
        self.store = store
        self.reporter = reporter
        self.graph = self.loaded.graph
        self.names = list(request.names)
        self.base = self.loaded.path.parent  # where inputs, prompts and context files are
        self.chosen = set(self.names)
        self.canary_deps: dict[str, list[str]] = {}  # the canaries each instance waits for
        self.deps = self._effective_deps()
        self.dependents: dict[str, list[str]] = {n: [] for n in self.names}
        for name, deps in self.deps.items():
            for dep in deps:
                self.dependents[dep].append(name)
        self.waiting = {n: len(self.deps[n]) for n in self.names}
        # Weighted as `plan` weighs them: a target never run counts at the median.
        durations, _ = g.with_guesses(store.durations(), self.names)
        self.remaining = g.remaining_path(self.graph, self.names, durations)
        self.recorded = store.fingerprints()
        self.work_tips = store.work_tips()
        self.landed: Callable[[str], bool] | None = None  # the user's branch holds it
        self.fingerprints: dict[str, str] = {}
        self.ready: list[tuple[tuple[float, float, int], str]] = []
        self.running: dict[str, Running] = {}
        self.outcome = BuildOutcome()
        self.ran: set[str] = set()  # succeeded by running in this build (not up to date)
        self.locks: dict[str, str] = {}
        self.agent_use: dict[str, int] = {}
        self.interrupted = threading.Event()
        self.spent = 0.0
        self.monitor = Monitor(request.limits)
        self.pacing = Pacing(request.jobs)  # each provider's share of -j while it pushes back
        self.relays: Relays | None = None  # started when an agent target first runs here
        # Every target's base environment, copied once: the dotenv file's under the process's.
        self.environ = {**request.loaded.dotenv, **os.environ}
        self.flush_due = 0.0
        self.held: dict[str, str] = {}  # target -> why its start is held (throttled events)
        # Why each ready target has not started, as last said in a `waiting` event, and the
        # targets queued since the last look (those not started then wait for a job slot).
        self.waits: dict[str, str] = {}
        self.retries_said: dict[str, int] = {}  # the last attempt a `retrying` event named
        self.queued: list[str] = []
        self.requeued: set[str] = set()  # stopped under lasting pressure: to start again
        self.disk_full = False  # a write of agentfile's own failed, or the disk is nearly full
        # What other builds spent today (SPEC 8: the daily budget is the user's, across
        # repositories), read again at most every OTHERS_SECONDS and before each agent starts.
        self.others_today = 0.0
        self.others_due = 0.0
        self.daily_alerted = False
        # The user's checkout as git sees it: only dir() targets need it (to tell what they
        # changed), and loading GitPython costs a no-op build a tenth of its start-up.
        uses_dir = any(isinstance(self.loaded.isolation_of(self.graph.targets[n]), DirRef)
                       for n in self.names)
        main_git = request.worktrees.git if request.worktrees else (
            _git_or_none(self.loaded.root) if uses_dir else None)
        self.places = Places(self.loaded, request.worktrees, main_git, self._running_dirs,
                             self._committed)
        self.executor: Executor = choose(request.executor, LocalExecutor(
            self.places, jobs=request.jobs), loaded=self.loaded, worktrees=request.worktrees,
            jobs=request.jobs, address=request.ray_address)
        self.adopted: set[str] = set()  # finished by a build that died: merged, not run

    # -- the graph as this build sees it ------------------------------------------------

    def _effective_deps(self) -> dict[str, list[str]]:
        """Dependencies within the selection, plus canaries: the rest of a fan-out waits
        for its first `canary` instances."""
        planned = g.with_canaries(self.graph, self.names).targets
        for name in self.names:
            extra = planned[name].deps[len(self.graph.targets[name].deps):]
            if extra:
                self.canary_deps[name] = list(extra)
        return {n: [d for d in planned[n].deps if d in self.chosen] for n in self.names}

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> BuildOutcome:
        self.outcome.started = time.time()
        self.monitor.start()
        try:
            with self.store.deferred():
                self._loop()
        finally:
            self.monitor.close()
            self.executor.close()
            if self.relays is not None:
                self.relays.close()
            self.reporter.flush()
        self.outcome.finished = time.time()
        return self.outcome

    def _loop(self) -> None:
        self.emit("build_started", targets=len(self.names), jobs=self.request.jobs,
                  requested=list(self.names))
        for name in [n for n in self.names if not self.waiting[n]]:
            if name not in self.outcome.statuses:
                self._became_ready(name)
        for name in self.canary_deps:
            self._held_for_canary(name)
        while True:
            self._collect(block=False)
            self._report_rate_limits()
            self._check_budgets()
            self._check_disk()
            if self.interrupted.is_set() and self.outcome.stopped != "interrupted":
                self.outcome.stopped = "interrupted"
                for running in self.running.values():
                    running.job.cancel.set()
            self._relieve_pressure()
            for name, running in self.running.items():
                self._say_retries(name, running.job.progress.attempt,
                                  running.job.progress.retry_reason)
            self._start_what_fits()
            if not self.running:
                break
            if time.monotonic() >= self.flush_due:
                self._flush()
            self._collect(block=True)
        for name in self.names:
            if name not in self.outcome.statuses:
                self._finish(name, "blocked" if self.outcome.stopped != "interrupted"
                             else "interrupted",
                             detail=f"not started: {_STOPPED[self.outcome.stopped or '']}")

    def _flush(self) -> None:
        """State rows committed and events written out: what a reader (`agentfile status`,
        `logs`, a CI log) sees, and what survives a crash."""
        self.store.commit()
        self.reporter.flush()
        self.flush_due = time.monotonic() + FLUSH_SECONDS

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM (from a signal handler): the loop wakes and stops everything."""
        self.interrupted.set()
        self.executor.wake()

    def _collect(self, *, block: bool) -> None:
        """What finished, as the executor says, and what it noticed on the way (a lost node)."""
        for name, result in self.executor.wait(TICK_SECONDS if block else 0.0):
            self._target_done(name, result)
        for event, fields in self.executor.notices():
            self.emit(event, **fields)

    def _became_ready(self, name: str) -> None:
        """All dependencies are done: blocked, up to date, or queued to start."""
        target = self.graph.targets[name]
        failed = [d for d in self.deps[name] if self.outcome.statuses.get(d) not in SUCCESS]
        if failed:
            # A dependency cut short by Ctrl-C leaves its dependents interrupted, not blocked.
            cut = all(self.outcome.statuses.get(d) == "interrupted" for d in failed)
            own = [d for d in failed if d not in self.canary_deps.get(name, [])]
            why = f"{own[0]} did not succeed" if own else \
                f"held back: canary {failed[0]} {self.outcome.statuses[failed[0]]}"
            self._finish(name, "interrupted" if cut else "blocked", detail=why)
            return
        _, agent = self.loaded.agent_definition(target)
        fp = fingerprint(target, agent=agent, base=self.base,
                         deps={d: self.fingerprints.get(d, "") for d in target.deps})
        self.fingerprints[name] = fp
        if self._adopt(target, fp):
            return
        if self._up_to_date(target, fp):
            self._finish(name, "up-to-date")
            return
        key = g.start_key(target, self.remaining.get(name, 0.0))
        heapq.heappush(self.ready, (key, name))
        self.waits.pop(name, None)  # held for its canary until now: why it waits next
        self.queued.append(name)

    def _up_to_date(self, target: ConcreteTarget, fp: str) -> bool:
        return up_to_date(target, fp, self.recorded.get(target.name),
                          force=self.request.force, done_before=self.request.done_before,
                          deps_ran=any(d in self.ran for d in target.deps),
                          base=self.base) and self._work_in_checkout(target.name)

    def _work_in_checkout(self, name: str) -> bool:
        """A target whose merged work the user's branch does not hold (its build did not
        land: a conflict elsewhere, --no-merge) is not up to date: running it again is what
        brings its work to the next landing."""
        worktrees = self.request.worktrees
        if not self.work_tips or worktrees is None:
            return True
        if self.landed is None:  # asked once, for every target
            self.landed = landed(self.work_tips, worktrees.git, worktrees.start_commit)
        return self.landed(name)

    def _start_what_fits(self) -> None:
        if self.outcome.stopped is not None:
            return
        skipped: list[tuple[tuple[float, float, int], str]] = []
        while self.ready and len(self.running) < self.request.jobs:
            key, name = heapq.heappop(self.ready)
            target = self.graph.targets[name]
            if target.kind == "group":
                # Not up to date: something under it ran, so its dependents run too.
                self.ran.add(name)
                self._finish(name, "succeeded")
                continue
            if target.kind == "agent" and self._daily_spent_out():
                self.outcome.budget_refused = True
                self._finish(name, "over-budget", detail="the daily budget is spent "
                             f"(${self.request.daily.usd if self.request.daily else 0:.2f})")
                continue
            verdict = self._admit(target)
            if verdict == "wait-all":
                skipped.append((key, name))
                self._wait(name, "exclusive: waits for the running targets to finish")
                break  # an exclusive target waits for the others; nothing overtakes it
            if verdict is not None:
                skipped.append((key, name))
                self._wait(name, verdict)
                continue
            self._start(target)
        for item in skipped:
            heapq.heappush(self.ready, item)
        behind = f"no free job slot (all {self.request.jobs} in use: -j{self.request.jobs})" \
            if len(self.running) >= self.request.jobs else "behind an exclusive target"
        for name in self.queued:
            if name not in self.waits and name not in self.running and \
                    name not in self.outcome.statuses:
                self._wait(name, behind)
        self.queued.clear()

    def _say_retries(self, name: str, attempt: int, reason: str | None) -> None:
        """A target on its next attempt: a `retrying` event with why the last one failed."""
        if attempt > self.retries_said.get(name, 1) and reason:
            self.retries_said[name] = attempt
            self.emit("retrying", target=name, attempt=attempt, reason=_gist(reason))

    def _wait(self, name: str, reason: str) -> None:
        """Say why a ready target has not started, when that changed (`waiting` event)."""
        if self.waits.get(name) != reason:
            self.waits[name] = reason
            self.emit("waiting", target=name, reason=reason)

    def _held_for_canary(self, name: str) -> None:
        """A fan-out instance whose only unfinished dependencies are its canaries waits
        for them: said once, so that it does not read as stuck."""
        pending = [d for d in self.deps[name] if d not in self.outcome.statuses]
        canaries = self.canary_deps[name]
        if pending and name not in self.waits and all(d in canaries for d in pending):
            self._wait(name, f"held for the canary: waits for {', '.join(pending)}")

    def _admit(self, target: ConcreteTarget) -> str | None:
        """None if the target may start now, else why not."""
        definition = target.definition
        alone = [n for n, r in self.running.items() if r.target.definition.exclusive]
        if alone:
            return f"exclusive target {alone[0]} is running"
        if definition.exclusive and self.running:
            return "wait-all"
        for lock in definition.locks:
            if lock in self.locks:
                return f"lock {lock} is held by {self.locks[lock]}"
        agent_name, agent = self.loaded.agent_definition(target)
        if agent is not None and agent_name is not None and agent.max_parallel is not None \
                and self.agent_use.get(agent_name, 0) >= agent.max_parallel:
            return f"agent {agent_name} is at max_parallel = {agent.max_parallel}"
        if agent is not None:
            held = self.pacing.hold(agent.provider, agent.model)
            if held is not None:
                return held
        return self._checkout_conflict(target) or self._throttle(target)

    def _throttle(self, target: ConcreteTarget) -> str | None:
        """Hold a start while measurements say the machine cannot take it (SPEC 9); with
        nothing running, start it anyway, alone, so a build never deadlocks."""
        budget = target.definition.budget
        reserve = budget.memory if budget is not None and budget.memory else 0
        if not reserve and not self.request.limits.active:
            return None
        reason = self.monitor.hold_reason(reserve)
        if reason is None:
            self.held.pop(target.name, None)
            return None
        if not self.running:
            self.emit("throttled", target=target.name, reason=reason,
                      action="started alone: it can never fit beside others")
            return None
        if self.held.get(target.name) != reason:
            self.held[target.name] = reason
            self.emit("throttled", target=target.name, reason=reason, action="held")
        return f"throttled: {reason}"

    def _relieve_pressure(self) -> None:
        """Memory above the limit while targets run: suspend the youngest; resume when it
        falls; stop and queue again one that stays suspended too long."""
        monitor = self.monitor
        if monitor.under_pressure():
            name = monitor.suspend_youngest()
            if name is not None:
                self.emit("throttled", target=name, action="suspended",
                          reason=f"memory in use {monitor.machine.memory_percent:.0f}%")
            for name, seconds in monitor.suspended_for().items():
                if seconds >= PRESSURE_REQUEUE_SECONDS and name not in self.requeued:
                    self.requeued.add(name)
                    self.running[name].job.cancel.set()
                    self.emit("throttled", target=name, action="stopped and queued again",
                              reason=f"pressure lasted {seconds:.0f}s")
        elif monitor.pressure_relieved():
            name = monitor.resume_oldest_suspended()
            if name is not None:
                self.emit("throttled", target=name, action="resumed",
                          reason=f"memory in use {monitor.machine.memory_percent:.0f}%")

    def _report_rate_limits(self) -> None:
        """What the CLIs said of their providers' limits since the last tick, as events."""
        for notice in self.pacing.drain():
            self.outcome.rate_limit_signals += 1
            limit = notice.limit
            self.emit("rate_limited", target=notice.target, provider=notice.provider,
                      model=notice.model, reason=limit.reason, wait_s=round(notice.wait_s, 3),
                      resets_at=limit.resets_at, retrying=limit.retrying,
                      relayed=limit.relayed, window=notice.window, detail=_gist(limit.detail))

    def _checkout_conflict(self, target: ConcreteTarget) -> str | None:
        """Targets sharing the main checkout: a branch target has it alone (it switches the
        branch), and two dir() targets whose directories overlap never run together."""
        mode = self.loaded.isolation_of(target)
        if mode == "worktree":
            return None
        others = [self.loaded.isolation_of(r.target) for r in self.running.values()]
        shared = [m for m in others if m != "worktree"]
        if mode == "branch" and shared:
            return "branch isolation waits for the checkout"
        if "branch" in shared:
            return "a branch target has the checkout"
        if isinstance(mode, DirRef):
            mine = self.places.folder_of(mode)
            for other in self._running_dirs(target.name):
                if directory.overlap(mine, other):
                    return f"dir({other}) overlaps"
        return None

    def _start(self, target: ConcreteTarget) -> None:
        name = target.name
        agent_name, agent = self.loaded.agent_definition(target)
        for lock in target.definition.locks:
            self.locks[lock] = name
        if agent_name is not None:
            self.agent_use[agent_name] = self.agent_use.get(agent_name, 0) + 1
        budget = target.definition.budget
        job = Job(
            target=target, run_id=self.run_id, base=self.base,
            log=self.files.log(name),
            prompt_file=self.files.prompt(name), result_file=self.files.result(name),
            usage_file=self.files.usage(name), agent=agent, budget=budget,
            dep_results=self._dep_texts(target, "result") if _uses_deps(target) else {},
            dep_diffs=self._dep_texts(target, "diff") if _uses_deps(target) else {},
            cancel=threading.Event(), progress=Progress(),
            budget_usd_left=self._budget_left,
            tag=f"{self.run_id}/{name}", environ=self.environ, echo=self.request.echo,
            resume=self.request.recovery.sessions.get(name),
            sandbox=Sandbox(self.loaded.root) if self.loaded.sandboxed(target) else None,
        )
        if agent is not None:
            job.pacing = self.pacing
            job.seat = self.pacing.seat(agent.provider, agent.model, name,
                                        ceiling=agent.max_parallel)
            if agent.relay:
                job.relays = self._relays()
            patience = agent.rate_limit_wait
            job.patience_s = patience if patience is not None else \
                self.loaded.manifest.options.rate_limit_wait
        if self.request.terminal is not None and (
                self.request.all_in_tmux or self.loaded.in_tmux(target)):
            job.terminal = self.request.terminal
        reserved = budget.memory if budget is not None and budget.memory else 0
        job.known = self.monitor.track(name, job.progress, reserved).known
        self.running[name] = Running(target, job, time.time(), agent_name)
        self.waits.pop(name, None)
        self.emit("target_started", target=name, kind=target.kind, agent=agent_name,
                  isolation=describe_isolation(self.loaded.isolation_of(target)))
        self.executor.submit(job)

    def _relays(self) -> Relays:
        if self.relays is None:
            from agentfile.agents.relay import Relays

            self.relays = Relays(self._relay_held)
        return self.relays

    def _relay_held(self, provider: str, refusal: Refusal) -> None:
        """A refusal the relay held on to (from its thread): a `rate_limited` event."""
        running = self.running.get(refusal.target)
        agent = running.job.agent if running is not None else None
        reason = "overloaded" if refusal.status == 529 else "rate limit"
        if running is not None:  # the board's line for it, until its CLI says more
            running.job.progress.last_line = (f"{provider} {reason}: a request held "
                                              f"{refusal.wait_s:g}s")
        self.pacing.held(provider, agent.model if agent is not None else None, refusal.target,
                         RateLimit(reason, retrying=True, wait_s=refusal.wait_s,
                                   detail=f"{refusal.status}: held by agentfile's relay",
                                   relayed=True))

    def _running_dirs(self, besides: str) -> list[str]:
        """The directories of dir() targets running now, other than `besides`."""
        folders = []
        for name, running in list(self.running.items()):
            mode = self.loaded.isolation_of(running.target)
            if name != besides and isinstance(mode, DirRef):
                folders.append(self.places.folder_of(mode))
        return folders

    def _dep_texts(self, target: ConcreteTarget, kind: str) -> dict[str, str]:
        texts: dict[str, str] = {}
        for dep in target.deps:
            result = self.outcome.results.get(dep)
            if kind == "result":
                text = result.message if result and result.message is not None else \
                    _previous(self.files, self.store, dep, "result")
            else:
                text = result.diff if result else _previous(self.files, self.store, dep, "diff")
            texts[dep] = text or ""
        return texts

    # -- finishing ----------------------------------------------------------------------

    def _target_done(self, name: str, result: TargetResult) -> None:
        running = self.running.pop(name)
        for lock in running.target.definition.locks:
            self.locks.pop(lock, None)
        if running.agent_name is not None:
            self.agent_use[running.agent_name] -= 1
        if running.job.seat is not None:
            running.job.seat.release()  # given back after each attempt; here in any case
        tree = self.monitor.untrack(name)
        if name in self.requeued and not self.interrupted.is_set():
            # Stopped for the machine's sake, not its own: not an attempt, start it again.
            self.requeued.discard(name)
            key = g.start_key(running.target, self.remaining.get(name, 0.0))
            heapq.heappush(self.ready, (key, name))
            return
        if tree is not None:
            result.suspended_s = tree.suspended_s
        for number, attempt in enumerate(result.attempts[:-1], start=2):  # too fast to see
            self._say_retries(name, number, f"{attempt.status}: {attempt.error or ''}")
        status = result.status
        cause = self.outcome.stopped
        if status == "interrupted" and not self.interrupted.is_set() and \
                cause in ("budget", "disk-full"):
            status = "over-budget" if cause == "budget" else status
            last = result.attempts[-1] if result.attempts else None
            if last is not None and last.error:
                last.error = last.error.replace("stopped (interrupted)",
                                                f"stopped: {_STOPPED[cause or '']}", 1)
        self._conclude(running.target, result, status, running.agent_name)

    def _conclude(self, target: ConcreteTarget, result: TargetResult, status: str,
                  agent_name: str | None) -> None:
        """A target's end, run or taken over from a build that died: merged, recorded."""
        name = target.name
        if result.work is not None:
            try:
                status = self._merge(target, result, status)
            except Exception as err:  # a git failure fails this target, not the build
                result.detail = f"could not merge its branch {result.work.branch}: {err}"
                self.outcome.kept[result.work.branch] = f"{name}: merge failed"
                status = "failed"
        result.status = status
        self.outcome.results[name] = result
        if result.diff:  # kept for `{deps.NAME.diff}` of a later build, where it is up to date
            path = self.files.diff(name)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(redactor().text(result.diff), encoding="utf-8")
            except OSError:  # a full disk: the diff is in git, on the target's branch
                self.disk_full = True
        self.spent += result.cost_usd
        if self.request.ledger is not None and target.kind == "agent":
            _, agent = self.loaded.agent_definition(target)
            for attempt in result.attempts:
                self.request.ledger.record(
                    repo=str(self.loaded.root), run=self.run_id, target=name,
                    agent=agent_name, provider=agent.provider if agent else None,
                    cost_usd=attempt.cost_usd, tokens=attempt.tokens)
        with self.store.batch():  # this target's rows, committed once
            for attempt in result.attempts:
                self.store.record_attempt(
                    self.run_id, name, attempt.number, status=attempt.status,
                    exit_code=attempt.exit_code, started=attempt.started,
                    finished=attempt.finished, cost_usd=attempt.cost_usd, tokens=attempt.tokens,
                    peak_rss_bytes=attempt.peak_rss_bytes, cpu_s=attempt.cpu_s,
                    session=attempt.session)
            if status == "succeeded":
                self.ran.add(name)
                self.store.record_fingerprint(name, self.fingerprints[name], self.run_id)
            else:
                self.store.forget_fingerprint(name)
            if result.merged_tip is not None and status == "succeeded":
                self.store.record_work(name, result.merged_tip, self.run_id)
            elif name in self.work_tips:
                self.store.forget_work(name)
            self._finish(name, status, result=result)
        self.outcome.rate_limit_waits += result.rate_limit_waits
        if status not in SUCCESS:
            self.disk_full = self.disk_full or _no_room(self.loaded.root)
            self._flush()  # a failure is never left to a later tick
            # A rate-limited target is the provider's condition: other providers' work goes on.
            if self.outcome.stopped is None and not self.request.keep_going and \
                    status not in ("interrupted", RATE_LIMITED):
                self.outcome.stopped = "failure"

    def _finish(self, name: str, status: str, *, result: TargetResult | None = None,
                detail: str | None = None) -> None:
        self.outcome.statuses[name] = status
        attempts = result.attempts if result else []
        last = attempts[-1] if attempts else None
        started = attempts[0].started if attempts else None
        duration = result.duration_s if result else 0.0
        peak = max((a.peak_rss_bytes or 0 for a in attempts), default=0) or None
        cpu = sum(a.cpu_s or 0 for a in attempts) if attempts else None
        detail = detail or (result.detail if result else None) or (last.error if last else None)
        if name in self.request.recovery.work:  # concluded here: a dead build's work is spent
            self.store.consume_finished_work(name, self.run_id)
        self.store.record_outcome(OutcomeRow(
            self.run_id, name, status, len(attempts), started, time.time(), duration,
            result.cost_usd if result else 0.0, result.tokens if result else 0, peak, cpu,
            last.exit_code if last else None, detail, result.node if result else None))
        self.emit("target_finished", target=name, status=status,
                  exit_code=last.exit_code if last else None, attempt=len(attempts),
                  duration_s=round(duration, 3),
                  cost_usd=round(result.cost_usd, 6) if result else 0.0,
                  tokens=result.tokens if result else 0, peak_rss_bytes=peak,
                  cpu_s=round(cpu, 3) if cpu is not None else None,
                  suspended_s=round(result.suspended_s, 3) if result else 0.0,
                  **({"node": result.node} if result and result.node else {}),
                  detail=_gist(detail) if status not in SUCCESS else None,
                  output=last_lines(detail) if status not in SUCCESS else [])
        for child in self.dependents.get(name, []):
            self.waiting[child] -= 1
            if not self.waiting[child] and child not in self.outcome.statuses:
                self._became_ready(child)
            elif child in self.canary_deps and child not in self.outcome.statuses:
                self._held_for_canary(child)

    def _committed(self, job: Job, result: TargetResult, work: WorktreeWork) -> None:
        """From a worker, the moment a target's work is committed on its branch: recorded
        at once, so that a build killed from here on leaves it to the next (recovery.py)."""
        if result.status == "succeeded":
            name = job.target.name
            self.store.record_finished_work(FinishedWork(
                self.run_id, name, self.fingerprints[name], work.branch, work.base, work.tip,
                [dataclasses.asdict(a) for a in result.attempts]))

    def _adopt(self, target: ConcreteTarget, fp: str) -> bool:
        """Work that a build which died finished and committed, for this very fingerprint:
        merged from its branch, not run (nor paid) again."""
        work = self.request.recovery.work.get(target.name)
        worktrees = self.request.worktrees
        if work is None or worktrees is None or work.fingerprint != fp or \
                self.request.force or any(d in self.ran and d not in self.adopted
                                          for d in target.deps):
            return False
        git = worktrees.git
        try:
            if not git.branch_exists(work.branch):  # merged before the build died, dropped
                self.store.record_resource(work.run, "branch", work.branch, target.name)
                git.create_branch(work.branch, work.tip)
            elif git.rev(work.branch) != work.tip:
                return False  # moved since: not the work that was recorded
            diff = git.diff(work.base, work.tip) if work.tip != work.base else ""
        except Exception:  # git cannot give it back (a lock the kill left): run it again
            return False
        self.adopted.add(target.name)
        # This build's own record of it, should it die too; what it cost was paid once.
        self.store.record_finished_work(FinishedWork(
            self.run_id, target.name, fp, work.branch, work.base, work.tip, []))
        result = TargetResult(
            target.name, "succeeded",
            message=_read(RunFiles(self.files.dir.parent / work.run).result(target.name)),
            diff=diff, detail=f"finished in build {work.run}, which died: merged from its branch",
            work=WorktreeWork(work.branch, work.base, committed=work.tip != work.base,
                              tip=work.tip))
        self.emit("recovered", target=target.name, run=work.run, branch=work.branch)
        self._conclude(target, result, "succeeded", None)
        return True

    def _merge(self, target: ConcreteTarget, result: TargetResult, status: str) -> str:
        """Merge a worktree target's branch into the integration branch, dependencies
        first (a dependent starts only after this); a conflict changes nothing."""
        work, worktrees = result.work, self.request.worktrees
        assert work is not None and worktrees is not None
        mode = "none" if self.request.no_merge else (
            target.definition.merge or self.loaded.manifest.options.merge or "auto")
        if not work.committed:
            if not worktrees.keep:
                worktrees.drop_branch(work.branch)  # it changed nothing: nothing to keep
            return status
        if status != "succeeded":
            self.outcome.kept[work.branch] = f"work in progress of {target.name} ({status})"
            return status
        if mode == "none":
            self.outcome.kept[work.branch] = f"{target.name}, not merged (merge = none)"
            if self.request.no_merge:  # this once: its work is still to land, later
                result.merged_tip = worktrees.git.rev(work.branch)
            return status
        tip = worktrees.git.rev(work.branch)
        merged = worktrees.git.merge_into(work.branch, worktrees.integration,
                                          f"agentfile: merge {target.name} (run {self.run_id})")
        if not merged.clean:
            files = ", ".join(merged.conflicts) or "unknown files"
            result.detail = (f"conflicts with the work merged before it in {files}; "
                             f"its branch {work.branch} is kept")
            self.outcome.kept[work.branch] = f"{target.name}: conflict in {files}"
            self.outcome.conflicts.append(target.name)
            return "conflict"
        if mode == "auto":  # `manual` lands by hand, when the user chooses: not a reason to rerun
            result.merged_tip = tip
        self.emit("merged", target=target.name, branch=work.branch,
                  into=worktrees.integration, commit=merged.commit)
        if not worktrees.keep:  # a kept worktree still has its branch checked out
            worktrees.drop_branch(work.branch)
        return status

    # -- budgets ------------------------------------------------------------------------

    def live_spent(self) -> float:
        return self.spent + sum(r.job.progress.cost_usd for r in self.running.values())

    def _budget_left(self) -> float | None:
        if self.request.budget_usd is None:
            return None
        return max(self.request.budget_usd - self.live_spent(), 0.0)

    def _spent_today(self, *, fresh: bool = False) -> float:
        """Today's spend: other builds' (the shared ledger) and this one's, running included."""
        ledger = self.request.ledger
        if ledger is not None and (fresh or time.monotonic() >= self.others_due):
            self.others_today = ledger.spent_today(besides_run=self.run_id)
            self.others_due = time.monotonic() + OTHERS_SECONDS
        return self.others_today + self.live_spent()

    def _daily_spent_out(self) -> bool:
        daily = self.request.daily
        return daily is not None and self._spent_today(fresh=True) >= daily.usd

    def _check_daily_alert(self) -> None:
        daily = self.request.daily
        if daily is None or daily.alert is None or self.daily_alerted:
            return
        spent = self._spent_today()
        if spent >= daily.usd * daily.alert / 100:
            self.daily_alerted = True
            self.emit("budget_warning", scope="daily", share=round(spent / daily.usd, 3),
                      reached=f"${spent:.2f} of today's ${daily.usd:.2f} "
                              f"(alert at {daily.alert:g}%)")

    def _check_budgets(self) -> None:
        self._check_daily_alert()
        if self.outcome.stopped in ("budget", "interrupted"):
            return
        request = self.request
        over_money = request.budget_usd is not None and self.live_spent() >= request.budget_usd
        over_time = request.budget_time is not None and \
            time.time() - self.outcome.started >= request.budget_time
        if over_money or over_time:
            what = (f"${self.live_spent():.2f} of ${request.budget_usd:.2f}" if over_money
                    else f"{request.budget_time:g}s")
            self.emit("budget_warning", scope="build", reached=what, share=1.0)
            self.outcome.stopped = "budget"
            for running in self.running.values():
                if running.target.kind == "agent" or over_time:
                    running.job.cancel.set()

    def _check_disk(self) -> None:
        """A full disk (agentfile's own writes failed, or a target failed with the disk
        nearly full): the build stops as for a failure, but with -k too, the running targets
        stopped and their work committed as far as the disk allows."""
        if self.outcome.stopped in ("disk-full", "interrupted") or \
                not (self.disk_full or self.store.full):
            return
        self.outcome.stopped = "disk-full"
        self.emit("disk_full", detail=self.store.full or "less than 1 MiB left")
        for running in self.running.values():
            running.job.cancel.set()

    def emit(self, event: str, **fields: object) -> None:
        self.reporter.emit(make_event(event, self.run_id, **fields))


def _uses_deps(target: ConcreteTarget) -> bool:
    """Whether the target's texts ask for `{deps.…}`: only then are its dependencies'
    messages and diffs looked up."""
    definition = target.definition
    texts = [definition.run, definition.verify,
             definition.prompt if isinstance(definition.prompt, str) else None]
    return isinstance(definition.prompt, FileRef) or any(
        t is not None and "{deps." in t for t in texts)


def _git_or_none(root: Path) -> Git | None:
    from agentfile.git import Git

    try:
        return Git(root)
    except UsageError:
        return None


def _previous(files: RunFiles, store: Store, target: str, kind: str) -> str:
    """An up-to-date dependency's final message or diff: from the run that last built it."""
    run = store.fingerprint_run(target)
    if run is None:
        return ""
    earlier = RunFiles(files.dir.parent / run)
    return _read(earlier.result(target) if kind == "result" else earlier.diff(target)) or ""


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _gist(text: str | None) -> str | None:
    """A failure's detail in one line, for events and plain output: its first line, and
    when that only introduces the output ("exited with 2:"), the output's last line too,
    where the error usually is."""
    if not text:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    gist = lines[0]
    if gist.endswith(":") and len(lines) > 1:
        gist = f"{gist} {lines[-1].strip()}"
    return gist[:200]


def _no_room(root: Path) -> bool:
    """Whether the disk under `root` is (nearly) full: a failure then is likely its."""
    try:
        return bool(shutil.disk_usage(root).free < DISK_FULL_BYTES)
    except OSError:
        return False

"""`agentfile build`: load, select, lock, schedule, report, and leave nothing behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO, cast

from agentfile import ui
from agentfile.commands.common import (
    load_manifest,
    missing_clis,
    print_json,
    sandbox_problem,
)
from agentfile.commands.plan import job_slots, selected
from agentfile.errors import (
    EXIT_BUDGET,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
)
from agentfile.fingerprint import freshness, work_in_checkout
from agentfile.isolation.worktree import Worktrees
from agentfile.manifest.load import LoadedManifest
from agentfile.quantities import parse_percent
from agentfile.records.events import (
    STATUSES,
    SUCCESS,
    EventLog,
    Fanout,
    JsonLines,
    Reporter,
    make_event,
)
from agentfile.records.layout import Layout, RunFiles, new_run_id
from agentfile.records.retention import DEFAULT_KEEP_RUNS, prune_runs
from agentfile.records.runlock import build_lock
from agentfile.records.state import Store, open_store
from agentfile.run import process
from agentfile.run.executors import connect
from agentfile.run.recovery import recover
from agentfile.run.scheduler import BuildOutcome, BuildRequest, Running, Scheduler
from agentfile.run.throttle import Limits
from agentfile.secrets import configure as configure_secrets
from agentfile.secrets import redact

_encode = json.JSONEncoder(ensure_ascii=False).encode


@dataclass
class BuildOptions:
    targets: list[str]
    jobs: int | None = None
    keep_going: bool = False
    dry_run: bool = False
    force: bool = False
    retry_failed: bool = False
    as_json: bool = False
    budget: str | None = None
    no_merge: bool = False
    squash: bool = False
    keep_worktrees: bool = False
    max_memory: str | None = None
    max_load: float | None = None
    tmux: bool = False
    verbose: bool = False  # each target's output as it comes, `name | line`
    executor: str | None = None  # --executor; else options.executor; else local
    ray_address: str | None = None
    variables: dict[str, str] = field(default_factory=dict)  # NAME=VALUE, as in make


def build(*, file: str | None, options: BuildOptions) -> int:
    loaded = load_manifest(file, overrides=options.variables)
    layout = Layout(loaded.root)
    last = _last_run(layout) if options.retry_failed else None
    wanted = options.targets or (json.loads(last["run"]["requested"]) if last else [])
    names = selected(loaded, wanted)
    try:
        _check_runnable(loaded, names)
    except UsageError as err:
        if not options.dry_run:
            raise
        print(f"agentfile: {err} (a build would stop here)", file=sys.stderr)
    jobs = job_slots(loaded, options.jobs, len(names))
    if not options.dry_run:  # -n starts nothing: it needs no descriptors
        jobs = _fit_descriptors(jobs, tmux=options.tmux or any(
            loaded.in_tmux(loaded.graph.targets[n]) for n in names))
    request = BuildRequest(
        loaded=loaded, names=names,
        jobs=jobs,
        keep_going=options.keep_going, force=options.force,
        done_before=frozenset(last["succeeded"]) if last else frozenset(),
        budget_usd=_budget_usd(loaded, options.budget),
        budget_time=(loaded.manifest.options.budget.time
                     if loaded.manifest.options.budget else None),
        limits=_limits(loaded, options),
        daily=loaded.manifest.options.daily_budget,
        executor=options.executor or loaded.manifest.options.executor or "local",
        ray_address=options.ray_address,
    )
    if options.dry_run:
        return _dry_run(request, layout, as_json=options.as_json)
    connect(request.executor, request.ray_address)  # no cluster: exit 2 before anything runs
    layout.ensure()
    run_id = new_run_id()
    # Signals are the build's from before it creates anything (its integration branch, its
    # tmux session) until the last of it is removed: a Ctrl-C at any moment stops it in order.
    with _signals() as stop, build_lock(layout.lock_file, run_id):
        store = Store(layout.database)
        store.keep_room()  # for the run's last records, should the disk fill up
        configure_secrets(_environment_of(loaded, options.variables))  # before any record
        # Recorded before anything is created, so that whatever it creates has its run.
        died = store.close_dead_runs(besides=run_id)  # this build holds the lock: no other
        store.start_run(run_id, pid=os.getpid(), argv=redact(sys.argv),
                        requested=list(request.names), variables=redact(dict(options.variables)))
        try:
            # What builds that died left: finished work to merge, sessions to resume.
            request.recovery = recover(store, layout, loaded, run_id, newly_dead=died)
            if any(loaded.isolation_of(loaded.graph.targets[n]) in ("worktree", "branch")
                   and loaded.graph.targets[n].kind != "group" for n in names):
                request.worktrees = _begin_worktrees(layout, store, run_id, options,
                                                     pool=_pool_size(request))
            request.no_merge = options.no_merge
            request.all_in_tmux = options.tmux
            if any(loaded.graph.targets[n].kind == "agent" for n in names):
                from agentfile.records.ledger import Ledger

                request.ledger = Ledger()
            with _terminal(request, layout, store, run_id):
                return _run(request, layout, store, run_id, stop, as_json=options.as_json,
                            squash=options.squash, verbose=options.verbose)
        except BaseException:
            _abandon(request, store, run_id)
            raise
        finally:
            store.close()
            if request.ledger is not None:
                request.ledger.close()


def _abandon(request: BuildRequest, store: Store, run_id: str) -> None:
    """A build that failed before its targets ran, or of a bug of agentfile's own: its run
    is closed in the state, and an integration branch that holds no work goes."""
    run = store.run(run_id)
    if run is not None and run["finished"] is None:
        store.finish_run(run_id, status="error", exit_code=1, cost_usd=0.0, tokens=0,
                         duration_s=0, sequential_s=0, counts={})
    worktrees = request.worktrees
    if worktrees is not None and worktrees.git.branch_exists(worktrees.integration) and \
            worktrees.git.rev(worktrees.integration) == worktrees.start_commit:
        worktrees.drop_branch(worktrees.integration)


def _environment_of(loaded: LoadedManifest, variables: Mapping[str, str]) -> dict[str, str]:
    """Every variable a target may see, the dotenv file's and the command line's included:
    whose values are secrets to mask (names with KEY, TOKEN, SECRET or PASSWORD)."""
    env = {**loaded.dotenv, **os.environ, **variables}
    for agent in loaded.manifest.agents.values():
        env.update(agent.env)
    for target in loaded.manifest.targets.values():
        env.update(target.env)
    return env


@contextmanager
def _terminal(request: BuildRequest, layout: Layout, store: Store,
              run_id: str) -> Iterator[None]:
    """The build's tmux session, when a target runs in one: recorded before it exists, and
    killed (and its removal checked) at the end of the build, however it ends."""
    loaded = request.loaded
    wanted = request.all_in_tmux or any(
        loaded.in_tmux(loaded.graph.targets[n]) for n in request.names)
    if not wanted:
        yield
        return
    if shutil.which("tmux") is None:
        raise UsageError("terminal = tmux (or --tmux) needs tmux installed")
    from agentfile.isolation import tmux

    name = tmux.session_name(layout.root, run_id)
    store.record_resource(run_id, "tmux", name, None)
    try:
        session = tmux.TmuxSession.create(name, owner=tmux.owner(layout.root, run_id))
    except BaseException:
        store.resource_removed("tmux", name)  # none was made: what has the name is another's
        raise
    request.terminal = session
    print(f"agentfile: targets run in tmux session {name} (agentfile attach to watch)",
          file=sys.stderr)
    try:
        yield
    finally:
        session.kill()
        store.resource_removed("tmux", name)


def _pool_size(request: BuildRequest) -> int | None:
    """With `worktrees = reuse`, the pool's size: a worktree per job slot. (A Ray node makes
    its own worktrees.)"""
    reuse = request.loaded.manifest.options.worktrees == "reuse"
    return request.jobs if reuse and request.executor == "local" else None


def _begin_worktrees(layout: Layout, store: Store, run_id: str,
                     options: BuildOptions, *, pool: int | None) -> Worktrees:
    from agentfile.git import Git
    from agentfile.isolation.pool import Pool

    git = Git(layout.root)
    worktrees = Worktrees(git, layout, store, run_id, keep=options.keep_worktrees,
                          pool=Pool(git, layout.pool_dir, size=pool) if pool else None)
    worktrees.begin()
    dirty = worktrees.git.dirty_files()
    if dirty:
        print(f"agentfile: warning: {len(dirty)} uncommitted change(s) in your work tree "
              f"(e.g. {dirty[0]}): agents start from the last commit and do not see them",
              file=sys.stderr)
    return worktrees


def _budget_usd(loaded: LoadedManifest, flag: str | None) -> float | None:
    if flag is not None:
        try:
            amount = float(flag.strip().removeprefix("$"))
        except ValueError:
            amount = math.nan
        if not 0 <= amount < math.inf:  # also NaN, -1 and $1e999
            raise UsageError(f"--budget {flag!r} is not an amount of money (e.g. $5)")
        return amount
    budget = loaded.manifest.options.budget
    return budget.usd if budget else None


def _limits(loaded: LoadedManifest, options: BuildOptions) -> Limits:
    """`options.throttle`, with --max-memory and --max-load on top."""
    throttle = loaded.manifest.options.throttle
    memory = throttle.memory if throttle else None
    if options.max_memory is not None:
        try:
            memory = parse_percent(options.max_memory if options.max_memory.endswith("%")
                                   else options.max_memory + "%")
        except ValueError as err:
            raise UsageError(f"--max-memory: {err}") from None
    if options.max_load is not None and not 0 < options.max_load < math.inf:
        raise UsageError(f"--max-load {options.max_load:g}: give a load average above 0, "
                         "e.g. 4 on a 4-core machine")
    load = options.max_load if options.max_load is not None else (
        throttle.load if throttle else None)
    return Limits(memory_percent=memory, load=load, free=throttle.free if throttle else None)


def _check_runnable(loaded: LoadedManifest, names: list[str]) -> None:
    """Refuse before anything starts: a sandbox that cannot be made here, every agent CLI
    that cannot run here, all at once."""
    sandbox = sandbox_problem(loaded, names)
    if sandbox is not None:
        raise UsageError(sandbox)
    missing = missing_clis(loaded, names)
    if len(missing) == 1:
        raise UsageError(missing[0])
    if missing:
        raise UsageError("agent CLIs this build needs cannot run here:\n  " +
                         "\n  ".join(missing))


def _last_run(layout: Layout) -> dict[str, Any] | None:
    """The last build, finished or not (one that died too): what it was asked for and
    what of it succeeded, for --retry-failed."""
    store = open_store(layout.database, readonly=True)
    if store is None:
        return None
    try:
        run = store.last_run()
        if run is None:
            return None
        succeeded = [o.target for o in store.outcomes(run["id"]) if o.status in SUCCESS]
        if run["status"] in ("running", "died"):  # not finished: killed, it may have
            # finished work whose rows it never wrote (the next build merges it)
            succeeded += [w.target for w in store.finished_work(run["id"])]
        return {"run": run, "succeeded": succeeded}
    finally:
        store.close()


def _dry_run(request: BuildRequest, layout: Layout, *, as_json: bool) -> int:
    """What would run, deciding up-to-date as a build would; starts and writes nothing."""
    store = open_store(layout.database, readonly=True)
    recorded = store.fingerprints() if store else {}
    tips = store.work_tips() if store else {}
    if store:
        store.close()
    loaded = request.loaded
    fresh = freshness(loaded, request.names, recorded, force=request.force,
                      done_before=request.done_before,
                      in_checkout=work_in_checkout(loaded, tips))
    rows = []
    for name in request.names:
        target = loaded.graph.targets[name]
        rows.append({"target": name, "kind": target.kind,
                     "would_run": not fresh[name] and target.kind != "group",
                     "agent": loaded.agent_of(target), "command": target.definition.run})
    would_run = [r for r in rows if r["would_run"]]
    if as_json:
        print_json(rows)
        return EXIT_OK
    for row in rows:
        if row["kind"] == "group":
            continue
        what = f"agent {row['agent']}" if row["agent"] else row["command"]
        print(f"would run: {row['target']}  ({what})" if row["would_run"]
              else f"up to date: {row['target']}")
    print(f"{len(would_run)} of {ui.plural(len(rows), 'target')} would run "
          "(-n: nothing was started)")
    return EXIT_OK


class Stop:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal or ssh session): caught from the start
    of the build, and passed on to its scheduler once there is one (at once, if one came
    before)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.scheduler: Scheduler | None = None

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if self.scheduler is not None:
            self.scheduler.interrupt()

    @contextmanager
    def attached(self, scheduler: Scheduler) -> Iterator[None]:
        self.scheduler = scheduler
        if self.signum is not None:
            scheduler.interrupt()
        try:
            yield
        finally:
            self.scheduler = None


@contextmanager
def _signals() -> Iterator[Stop]:
    """The build's signals stop it cleanly (exit 130) instead of killing agentfile and
    leaving its targets, worktrees or tmux session behind."""
    stop = Stop()
    stopping = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):
        stopping.append(signal.SIGHUP)
    previous = {sig: signal.signal(sig, stop.handler) for sig in stopping}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# Open files a running target holds (its output pipe, pidfd, log, and what psutil opens to
# watch it), and what agentfile holds besides (state, events, lock, Python's own).
FILES_PER_JOB = 4
FILES_BESIDES = 64
SELECT_LIMIT = 1024  # FD_SETSIZE: select(2) takes no descriptor at or past it


def _fit_descriptors(jobs: int, *, tmux: bool) -> int:
    """`jobs`, when this process may open enough files for them (raising its soft limit
    toward the hard one, as far as needed), else as many as fit, said once: past the limit
    targets would fail with "Too many open files" instead of waiting for a slot. With tmux
    windows, never past select(2)'s 1024, which the tmux watcher uses."""
    import resource

    need = jobs * FILES_PER_JOB + FILES_BESIDES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return jobs
    ceiling = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if tmux:
        ceiling = max(min(ceiling, SELECT_LIMIT), soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    fits = max((soft - FILES_BESIDES) // FILES_PER_JOB, 1)
    if fits < jobs:
        print(f"agentfile: -j{jobs} needs about {need} open files and this process may open "
              f"{soft} (ulimit -n): running at most {fits} at once", file=sys.stderr)
        return fits
    return jobs


def _run(request: BuildRequest, layout: Layout, store: Store, run_id: str, stop: Stop, *,
         as_json: bool, squash: bool = False, verbose: bool = False) -> int:
    files = RunFiles(layout.run_dir(run_id))
    files.dir.mkdir(parents=True, exist_ok=True)
    process.become_subreaper()
    events = EventLog(files.events)
    out = ui.Forgiving(sys.stdout)
    stdout = cast(TextIO, out)
    console = ui.output_for(sys.stderr if as_json else stdout)

    def log_path(target: str) -> str:
        return os.path.relpath(files.log(target))

    scheduler = Scheduler(request, run_id=run_id, files=files, store=store,
                          reporter=events)
    live: Reporter
    if as_json:
        live = JsonLines(stdout)
    elif ui.is_interactive(sys.stdout):
        stdout.write(f"build {run_id}: {ui.plural(len(request.names), 'target')}, "
                     f"-j{request.jobs}\n")
        live = ui.Board(ui.console_for(stdout), total=len(request.names),
                        budget_usd=request.budget_usd, snapshot=lambda: _live_rows(scheduler),
                        spent=scheduler.live_spent, log_path=log_path)
    else:
        live = ui.PlainLines(stdout, log_path)
    reporter = Fanout(events, live)
    if verbose:  # targets' lines too: as JSON events, above the board, or `name | line`
        echo = ui.Echo(lambda name, line: stdout.write(_encode(
            make_event("output", run_id, target=name, line=line)) + "\n")) if as_json else \
            live.echo() if isinstance(live, ui.Board) else ui.Echo.plain(stdout, request.names)
        request.echo = echo
        reporter.reporters.insert(0, echo)
    scheduler.reporter = reporter
    # Signals stay agentfile's until the last record is written: a Ctrl-C as the build ends
    # must not leave it `running` in the state, without a summary.
    with stop.attached(scheduler):
        try:
            outcome = scheduler.run()
        except BaseException:
            # A bug in agentfile itself: the run is still closed in state, processes reaped.
            store.finish_run(run_id, status="error", exit_code=1, cost_usd=scheduler.spent,
                             tokens=0, duration_s=0, sequential_s=0, counts={})
            raise
        finally:
            process.reap_orphans(set())
            live.close()
        code = _exit_code(outcome)
        store.use_room()  # a full disk: the outcomes waiting in memory, written first
        summary = _summary(run_id, outcome, store, code)
        events.emit(make_event("build_finished", run_id, **_finished_fields(summary)))
        if as_json:
            last = JsonLines(stdout)
            last.emit(make_event("build_finished", run_id, **_finished_fields(summary)))
            last.flush()
        events.close()
        store.finish_run(run_id, status=summary["status"], exit_code=code,
                         cost_usd=summary["cost_usd"], tokens=summary["tokens"],
                         duration_s=summary["duration_s"],
                         sequential_s=summary["sequential_s"], counts=summary["counts"])
        store.use_room()
        # After the state's record: on a full disk, the state is what must have the room.
        with contextlib.suppress(OSError):
            files.summary.write_text(_summary_json(summary), encoding="utf-8")
        try:
            landing = _land(request, outcome, squash=squash) if request.worktrees else None
        except Exception as err:  # git could not (a full disk): nothing moved, nothing lost
            from agentfile.git import git_said

            assert request.worktrees is not None
            landing = (f"the build's work was not landed: {git_said(err)}; it is on branch "
                       f"{request.worktrees.integration}")
        prune_runs(layout, request.loaded.manifest.options.keep_runs or DEFAULT_KEEP_RUNS,
                   running=run_id)
        if not as_json:
            ui.print_summary(console, summary["targets_table"], summary)
            if outcome.stopped == "budget":
                console.print("the build's budget was reached: nothing new was started "
                              "(exit 3)")
            if outcome.stopped == "disk-full":
                console.print("the disk is full: the build stopped, the running targets' "
                              "work committed as far as there was room (a target's that "
                              "could not be is kept where it was made, as said above); "
                              "free some space and build again")
            for branch, why in outcome.kept.items():
                console.print(f"kept branch {branch}: {why}")
            if landing:
                console.print(landing)
        out.flush()
    if out.lost is not None:
        print(f"agentfile: standard output failed ({out.lost.strerror or out.lost}); the "
              f"build went on without it: see `agentfile report {run_id}`", file=sys.stderr)
    return code


def _land(request: BuildRequest, outcome: BuildOutcome, *, squash: bool = False) -> str | None:
    """Fast-forward the user's branch to the integration branch when every merge was clean
    and the work tree is clean (`--squash`: to one commit holding its work); else keep it
    and say how to land it."""
    worktrees = request.worktrees
    assert worktrees is not None
    git, branch = worktrees.git, worktrees.integration
    if git.rev(branch) == worktrees.start_commit:
        worktrees.drop_branch(branch)  # nothing was merged into it
        return None
    mode = "manual" if request.no_merge else request.loaded.manifest.options.merge or "auto"
    reasons = []
    if mode != "auto":
        reasons.append(f"merge = {mode}")
    if outcome.conflicts:
        reasons.append(f"conflicts in {', '.join(outcome.conflicts)}")
    if git.current_branch() != worktrees.start_branch or git.head_commit() != \
            worktrees.start_commit:
        reasons.append("your checkout moved since the build began")
    if git.dirty_files():
        reasons.append("your work tree has uncommitted changes")
    if not reasons and squash:
        commit = _squash(worktrees, request.names)
        if git.fast_forward(commit):
            worktrees.drop_branch(branch)
            return (f"landed: {worktrees.start_branch or 'HEAD'} has the build's work as one "
                    f"commit, {commit[:12]}")
    elif not reasons and git.fast_forward(branch):
        worktrees.drop_branch(branch)
        return f"landed: {worktrees.start_branch or 'HEAD'} fast-forwarded to the build's work"
    how = "git merge --ff-only" if not outcome.conflicts and git.is_ancestor(
        git.head_commit(), branch) else "git merge"
    return (f"the build's work is on branch {branch} ({'; '.join(reasons) or 'not landed'}); "
            f"land it with: {how} {branch}")


def _squash(worktrees: Worktrees, names: Sequence[str]) -> str:
    """The build's work as one commit on the commit it started from, its message listing the
    targets merged; their recorded work becomes that commit, so that the next build finds
    it landed (their own commits never reach the user's branch)."""
    git, store = worktrees.git, worktrees.store
    tips = store.work_tips()
    fresh = git.not_in(tips.values(), worktrees.start_commit) - \
        git.not_in(tips.values(), worktrees.integration)
    merged = [name for name in names if tips.get(name) in fresh]
    lines = "".join(f"- {name}\n" for name in merged)
    message = (f"agentfile: build {worktrees.run_id} ({ui.plural(len(merged), 'target')})\n\n"
               f"{lines}\nAgentfile-Run: {worktrees.run_id}\n")
    commit = git.squash(worktrees.integration, worktrees.start_commit, message)
    for name in merged:
        store.record_work(name, commit, worktrees.run_id)
    return commit


def _live_rows(scheduler: Scheduler) -> list[ui.LiveRow]:
    suspended = scheduler.monitor.suspended_for()
    return [ui.LiveRow(name, r.started, r.job.progress.attempt, r.job.progress.cost_usd,
                       r.job.progress.rss_bytes, r.job.progress.last_line,
                       state=_state(name, r, suspended))
            for name, r in list(scheduler.running.items())]


def _state(name: str, running: Running, suspended: Mapping[str, float]) -> str:
    """What a running target is doing, for the board: stopping and suspended (by the
    throttle, SPEC 9) before its own phase."""
    if running.job.cancel.is_set():
        return "stopping"
    if name in suspended:
        return "suspended"
    return running.job.progress.phase


def _exit_code(outcome: BuildOutcome) -> int:
    if outcome.stopped == "interrupted":
        return EXIT_INTERRUPTED
    if outcome.stopped == "budget" or outcome.budget_refused:
        return EXIT_BUDGET
    if all(status in SUCCESS for status in outcome.statuses.values()):
        return EXIT_OK
    return EXIT_FAILED


def _summary(run_id: str, outcome: BuildOutcome, store: Store, code: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        {"target": o.target, "status": o.status, "attempts": o.attempts,
         "duration_s": round(o.duration_s, 3), "cost_usd": round(o.cost_usd, 6),
         "tokens": o.tokens, "peak_rss_bytes": o.peak_rss_bytes, "cpu_s": o.cpu_s,
         "exit_code": o.exit_code, "started": o.started, "finished": o.finished,
         "detail": o.detail, "node": o.node}
        for o in store.outcomes(run_id)
    ]
    order = {name: i for i, name in enumerate(outcome.statuses)}
    rows.sort(key=lambda r: order.get(r["target"], 0))
    tally = Counter(r["status"] for r in rows)
    counts = {s: tally[s] for s in STATUSES if tally[s]}
    status = {0: "succeeded", 3: "over-budget", 130: "interrupted"}.get(code, "failed")
    return {
        "run": run_id, "status": status, "exit_code": code,
        "started": outcome.started, "finished": outcome.finished,
        "duration_s": round(outcome.finished - outcome.started, 3),
        "sequential_s": round(sum(r["duration_s"] for r in rows), 3),
        "cost_usd": round(sum(r["cost_usd"] for r in rows), 6),
        "tokens": sum(r["tokens"] for r in rows),
        "targets": len(rows), "counts": counts,
        # Rate-limit signals the CLIs printed, and attempts that ended on one and were waited out.
        "rate_limits": {"signals": outcome.rate_limit_signals,
                        "waits": outcome.rate_limit_waits},
        "targets_table": rows,
    }


def _summary_json(summary: dict[str, Any]) -> str:
    """summary.json: indented, but one line per target (an indented row per field would take
    a build of thousands of targets longer to write than to run)."""
    head = {k: v for k, v in summary.items() if k != "targets_table"}
    encode = json.JSONEncoder(ensure_ascii=False).encode
    rows = ",\n".join("    " + encode(row) for row in summary["targets_table"])
    text = json.dumps(head, indent=2, ensure_ascii=False)
    table = f'"targets_table": [\n{rows}\n  ]' if rows else '"targets_table": []'
    return f"{text[:-2]},\n  {table}\n}}\n"


def _finished_fields(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("status", "exit_code", "counts", "cost_usd", "tokens",
                                    "duration_s", "sequential_s", "rate_limits")}


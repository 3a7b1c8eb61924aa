"""One target, all its attempts: prompt, process, verify, retries.

Written as steps (a generator yielding each process to run), so that a worker thread can run
them one process at a time and the reactor many targets' at once, in the scheduler's thread.

The runner never touches the state database or the reporters: it returns a TargetResult to
the scheduler and publishes only live progress (last line, usage, memory) for the board.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from agentfile import regular
from agentfile.agents import provider
from agentfile.agents.base import AgentRequest, Provider, RateLimit, Usage, home
from agentfile.isolation.base import Workspace
from agentfile.isolation.sandbox import Sandbox
from agentfile.isolation.worktree import WorktreeWork
from agentfile.manifest.expand import ConcreteTarget, substitute, substitute_shell
from agentfile.manifest.model import Agent, Budget, FileRef
from agentfile.records.layout import raw_log
from agentfile.run import process
from agentfile.run.pacing import Pacing, Seat, lane_key
from agentfile.run.process import Steps
from agentfile.secrets import redactor

if TYPE_CHECKING:  # libtmux loads only when a target runs in tmux
    from agentfile.agents.relay import Relays
    from agentfile.isolation.tmux import TmuxSession

FAILURE_LINES = 30
MAX_USAGE = 2 ** 53  # tokens or dollars an agent may report: far past any real total
FAILURE_LINE_CHARS = 2000  # 30 such lines: 60 kB at most, in a summary or a prompt
RETRYABLE = ("failed", "timeout", "oom")
RATE_LIMITED = "rate-limited"  # an attempt ended for the provider's sake: not a retry
T = TypeVar("T")


@dataclass
class Progress:
    """Live facts about a running target, written by its worker, read by the board."""

    attempt: int = 0
    phase: str = "preparing"  # its workspace; then running, verifying (the board's state)
    last_line: str = ""
    retry_reason: str | None = None  # how the attempt before this one ended, on a retry
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    rss_bytes: int = 0
    peak_rss_bytes: int = 0
    cpu_s: float = 0.0
    pid: int | None = None
    started: float = field(default_factory=time.time)


@dataclass
class Attempt:
    number: int
    status: str
    exit_code: int | None
    started: float
    finished: float
    cost_usd: float = 0.0
    tokens: int = 0
    peak_rss_bytes: int | None = None
    cpu_s: float | None = None
    session: str | None = None
    error: str | None = None
    refusal: RateLimit | None = None  # what the provider said, when it ended the attempt


@dataclass
class TargetResult:
    name: str
    status: str
    attempts: list[Attempt] = field(default_factory=list)
    message: str | None = None  # an agent's final message
    diff: str = ""
    detail: str | None = None
    work: WorktreeWork | None = None  # a worktree target's branch, to merge
    # Its branch's commit once merged into the integration branch (or kept unmerged by
    # --no-merge): work the user's branch must hold for the target to be up to date.
    merged_tip: str | None = None
    suspended_s: float = 0.0  # time spent stopped by the throttle under memory pressure
    rate_limit_waits: int = 0  # attempts that ended for the provider's sake, waited out
    node: str | None = None  # the cluster node it ran on (the Ray executor)

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)

    @property
    def tokens(self) -> int:
        return sum(a.tokens for a in self.attempts)

    @property
    def duration_s(self) -> float:
        return sum(a.finished - a.started for a in self.attempts)


@dataclass
class Job:
    """Everything one target needs to run, prepared by the scheduler."""

    target: ConcreteTarget
    run_id: str
    base: Path  # the manifest's directory: prompt and context files are relative to it
    log: Path
    prompt_file: Path
    result_file: Path
    usage_file: Path
    agent: Agent | None
    budget: Budget | None
    dep_results: Mapping[str, str]
    dep_diffs: Mapping[str, str]
    cancel: threading.Event  # set by the scheduler: interrupted, or the build's budget is spent
    progress: Progress
    known: dict[int, float] = field(default_factory=dict)  # tree members seen by the monitor
    terminal: TmuxSession | None = None  # run in a window of this tmux session
    budget_usd_left: Callable[[], float | None] = lambda: None
    tag: str = ""
    # Each line a person reads of its output, as it comes (`build --verbose`): (target, line).
    echo: Callable[[str, str], None] | None = None
    # The build's environment, copied once (reading os.environ costs more than a dict copy).
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Admission per provider (pacing.py): the seat the scheduler took for the first attempt,
    # and how long the target may wait for a rate-limited provider (None: as long as it says).
    pacing: Pacing | None = None
    seat: Seat | None = None
    patience_s: float | None = None
    resume: str | None = None  # the session of a build that died while it ran, to resume
    sandbox: Sandbox | None = None  # `sandbox = true`: its processes run under bubblewrap
    relays: Relays | None = None  # the build's relays to providers' APIs (this machine only)


def placeholder_values(job: Job, workspace: Workspace) -> dict[str, str]:
    values = {
        "target": job.target.name,
        "run_id": job.run_id,
        "workspace": str(workspace.path),
        "prompt_file": str(job.prompt_file),
        **job.target.bindings,
    }
    for name, text in job.dep_results.items():
        values[f"deps.{name}.result"] = text
    for name, text in job.dep_diffs.items():
        values[f"deps.{name}.diff"] = text
    return values


def _dep_aliases(job: Job, values: dict[str, str]) -> None:
    """`{deps.migrate.result}` for a fan-out dependency: its instances' texts, joined."""
    written = set(job.target.definition.deps)
    for dep in written:
        stem = dep.split("{", 1)[0]
        # Its instances: the dependencies named after the stem and a separator (`mig/a` of
        # `mig`, never `migrate`), other than those written out themselves.
        instances = [n for n in job.target.deps if n not in written and n.startswith(stem)
                     and n[len(stem):len(stem) + 1] in ("/", ".", "-", "_")]
        for kind, source in (("result", job.dep_results), ("diff", job.dep_diffs)):
            key = f"deps.{dep}.{kind}"
            if key not in values:
                parts = [source[n] for n in [dep, *instances] if n in source]
                values[key] = "\n".join(parts)


def _expand(command: str, values: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """A command line with its placeholders filled in, each one literal word wherever it
    stands, and the variables that carry values; one without braces is itself."""
    if "{" not in command and "}" not in command:
        return command, {}
    return substitute_shell(command, values)


def environment(job: Job, workspace: Workspace, extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(job.environ)
    env.pop("CLAUDECODE", None)  # a nested Claude Code refuses to start with it set
    if job.agent is not None:
        env.update(job.agent.env)
    env.update(job.target.definition.env)
    env.update(extra)
    env["AGENTFILE_TARGET"] = job.target.name
    env["AGENTFILE_RUN_ID"] = job.run_id
    env["AGENTFILE_WORKSPACE"] = str(workspace.path)
    if job.agent is not None:  # the agent contract's files (SPEC 7): no run target has them
        env["AGENTFILE_PROMPT_FILE"] = str(job.prompt_file)
        env["AGENTFILE_RESULT_FILE"] = str(job.result_file)
        env["AGENTFILE_USAGE_FILE"] = str(job.usage_file)
    return env


def compose_prompt(job: Job, values: Mapping[str, str], failure: str | None) -> str:
    """Context files first, then the prompt, then (on a retry) what went wrong."""
    definition = job.target.definition
    parts: list[str] = []
    for name in definition.context:
        text = regular.read_text(job.base / name, errors="replace")
        parts.append(f"<context file=\"{name}\">\n{text.rstrip()}\n</context>")
    prompt = definition.prompt
    if isinstance(prompt, FileRef):
        prompt = regular.read_text(job.base / prompt.file, errors="replace")
    parts.append(substitute(prompt or "", values))
    if failure:
        parts.append("The previous attempt failed. What went wrong:\n" + failure)
    return redactor().text("\n\n".join(parts).rstrip() + "\n")


class Sampler:
    """Asked ten times a second while a target runs: its usage so far, and whether it is
    over a budget (memory as measured by the monitor, dollars and tokens as reported)."""

    def __init__(self, job: Job, usage: Usage, request: AgentRequest | None) -> None:
        self.job = job
        self.usage = usage
        self.usage_mtime = 0.0
        self.request = request

    def __call__(self) -> str | None:
        job, progress = self.job, self.job.progress
        if job.agent is not None:
            self.read_usage()
            if self.request is not None:
                provider(job.agent.provider).poll(self.request, self.usage)
                progress.cost_usd = self.usage.priced(job.agent)
        budget = job.budget
        if budget is not None:
            if budget.memory is not None and progress.rss_bytes > budget.memory:
                return "oom"
            if budget.usd is not None and progress.cost_usd > budget.usd:
                return "over-budget"
            if budget.tokens is not None and self.usage.tokens > budget.tokens:
                return "over-budget"
        return None

    def read_usage(self) -> None:
        try:
            mtime = self.job.usage_file.stat().st_mtime
        except OSError:
            return
        if mtime == self.usage_mtime:
            return
        self.usage_mtime = mtime
        try:
            data = json.loads(self.job.usage_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # half-written: read it next time
        if not isinstance(data, dict):
            return
        # Only what a total can be: a NaN, a negative cost (which would loosen every budget)
        # or a count past what the state can hold is not usage, and is left out.
        cost = data.get("cost_usd")
        if isinstance(cost, int | float) and math.isfinite(cost) and 0 <= cost < MAX_USAGE:
            self.usage.cost_usd = float(cost)
            self.usage.cost_reported = True
        for key in ("input_tokens", "output_tokens"):
            count = data.get(key)
            if isinstance(count, int) and not isinstance(count, bool) and \
                    0 <= count < MAX_USAGE:
                setattr(self.usage, key, count)
        assert self.job.agent is not None
        self.job.progress.cost_usd = self.usage.priced(self.job.agent)


# A target's attempts as steps: each yields a process to run and gets back how it ended. A
# worker thread runs them one at a time (`run_target`); the reactor runs many targets' steps
# at once in one thread. Either way, one implementation of attempts, retries and verify.


def drive(steps: Steps[T], run: Callable[[process.Call], process.Outcome]) -> T:
    """Run every process the steps ask for with `run`, one after the other; their result."""
    try:
        call = next(steps)
        while True:
            try:
                outcome = run(call)
            except Exception as err:  # into the steps, as the reactor does: they decide
                call = steps.throw(err)
                continue
            call = steps.send(outcome)
    except StopIteration as done:
        return cast(T, done.value)


def run_target(job: Job, workspace: Workspace) -> TargetResult:
    """Every attempt of one target, until one succeeds or none is left (blocking). When
    each of its processes ran is noted in `workspace.busy`."""

    def timed(call: process.Call) -> process.Outcome:
        began = time.time()
        try:
            return _run_call(job, call)
        finally:
            workspace.busy.append((began, time.time()))

    return drive(target_steps(job, workspace), timed)


def _run_call(job: Job, call: process.Call) -> process.Outcome:
    run: Callable[..., process.Outcome] = process.run
    if job.terminal is not None:
        from agentfile.isolation.tmux import run_in_pane

        run = functools.partial(run_in_pane, job.terminal, job.target.name)
    return run(call.launch, log=call.log, on_line=call.on_line, watch=call.watch,
               cancel=call.cancel, on_start=call.on_start, known=call.known)


def target_steps(job: Job, workspace: Workspace) -> Steps[TargetResult]:
    """Every attempt of one target, as steps. An attempt that ended for the provider's sake
    (a rate limit, an overload, a spent quota) is not one of its retries: the target waits
    for the provider (pacing.py) and runs again, resuming the CLI's session."""
    result = TargetResult(job.target.name, "failed", diff="")
    failure: str | None = None
    session = job.resume
    retries = job.target.definition.retries
    fallback = _Fallback(job)
    number = 0
    while not job.cancel.is_set():
        number += 1
        started = time.time()
        try:
            attempt, message = yield from _attempt(job, workspace, number, failure, session,
                                                   fallback.agent)
        except OSError as err:
            # A step of it could not run (a command over the kernel's 128 KiB, a full disk):
            # this attempt failed, with what it spent so far; the earlier ones stay as they
            # were, and another attempt would fail the same way.
            progress = job.progress
            result.attempts.append(Attempt(number, "failed", None, started, time.time(),
                                           cost_usd=progress.cost_usd,
                                           tokens=progress.usage.tokens,
                                           error=f"agentfile could not run it: {err}"))
            result.status = "failed"
            break
        if job.seat is not None:  # its place among the provider's attempts, for the next one
            job.seat.release(succeeded=attempt.status == "succeeded")
        result.attempts.append(attempt)
        result.status = attempt.status
        result.message = message
        session = attempt.session
        if job.cancel.is_set():
            break
        if attempt.status == RATE_LIMITED and attempt.refusal is not None:
            result.rate_limit_waits += 1
            failure = RATE_LIMIT_NOTE
            job.progress.retry_reason = f"{RATE_LIMITED}: {attempt.error}"
            stop = _wait_for_provider(job, attempt, attempt.refusal, fallback)
            if stop == "interrupted":
                result.status = stop
            elif stop is not None:
                result.detail = stop
            if stop is not None:
                break
            continue
        # A session a build that died left may not be there to resume (killed before the
        # CLI kept it): that attempt failing is followed by a fresh one, not a retry.
        resumed = number == 1 and job.resume is not None
        if attempt.status not in RETRYABLE or (retries == 0 and not resumed):
            break
        if resumed:
            session, failure = None, None  # afresh, as if the dead build had not run it
        else:
            retries -= 1
            failure = attempt.error
        job.progress.retry_reason = attempt.status + (f": {failure}" if failure else "")
        if job.seat is not None and job.seat.take(job.cancel, None) is not None:
            result.status = "interrupted"  # while waiting for a place among the provider's
            break
    else:  # cancelled before the next attempt could start
        result.status = "interrupted"
    return result


RATE_LIMIT_NOTE = ("the API refused for its own sake (a rate limit), not because of anything "
                   "you did: carry on from where you stopped.")


class _Fallback:
    """The agent an attempt runs with: the next `fallback` model once the current one has
    been rate limited for the agent's `fallback_after`."""

    def __init__(self, job: Job) -> None:
        self.agent = job.agent
        self.left = list(job.agent.fallback) if job.agent is not None else []
        self.limited_since: float | None = None

    def after_refusal(self, job: Job, started: float) -> None:
        """An attempt that started at `started` was refused: move on to the next model when
        the current one has been refused for long enough."""
        agent = self.agent
        if agent is None or not self.left:
            return
        if self.limited_since is None:
            self.limited_since = started
        if time.time() - self.limited_since < agent.fallback_after:
            return
        self.agent = agent.model_copy(update={"model": self.left.pop(0)})
        self.limited_since = None
        if job.pacing is not None:  # the next model's lane: limits of its own
            if job.seat is not None:
                job.seat.release()
            job.seat = job.pacing.seat(agent.provider, self.agent.model, job.target.name,
                                       ceiling=agent.max_parallel, held=False)


def _wait_for_provider(job: Job, attempt: Attempt, refusal: RateLimit,
                       fallback: _Fallback) -> str | None:
    """After an attempt the provider refused: block until it may be asked again (agent
    targets always have a worker thread). None, or why the target stops there."""
    fallback.after_refusal(job, attempt.started)
    agent = fallback.agent
    assert agent is not None
    what = f"{lane_key(agent.provider, agent.model)} {refusal.reason}"
    if refusal.reason == "quota" and refusal.resets_at is None:
        return f"{what}, with no time it comes back: {refusal.detail}"
    seat = job.seat
    if seat is None:
        return None
    progress = job.progress
    progress.phase = RATE_LIMITED
    progress.last_line = f"waiting for {what} ({seat.paused_for():.0f}s)"
    why = seat.take(job.cancel, job.patience_s)
    if why == "patience":
        back = seat.resumes_at()
        shown = time.strftime("%H:%M" if back - time.time() < 12 * 3600 else "%Y-%m-%d %H:%M",
                              time.localtime(back))
        return (f"{what}: it comes back at {shown}, later than rate_limit_wait allows "
                f"({job.patience_s:g}s)")
    return why


def _attempt(job: Job, workspace: Workspace, number: int, failure: str | None,
             session: str | None, agent: Agent | None) -> Steps[tuple[Attempt, str | None]]:
    progress = job.progress
    progress.attempt = number
    progress.usage = usage = Usage()
    progress.cost_usd = 0.0
    started = time.time()
    deadline = (time.monotonic() + job.budget.time
                if job.budget is not None and job.budget.time is not None else None)
    values = placeholder_values(job, workspace)
    if job.dep_results or job.dep_diffs:  # only then can its texts ask for them
        _dep_aliases(job, values)
    definition = job.target.definition
    call = _call_agent(job, agent, workspace, number, values, failure, session) \
        if agent is not None else None
    carried: dict[str, str] = {}  # the placeholders' values the command reads
    if call is not None:
        command = call.command
    else:
        assert definition.run is not None
        command, carried = _expand(definition.run, values)
    env = environment(job, workspace, call.env if call else carried)
    for name in call.unset if call else ():
        env.pop(name, None)
    if call is not None and job.relays is not None and call.request.agent.relay:
        api = call.provider.api(env)
        if api is not None:  # its requests held until the provider has room
            variable, upstream = api
            env[variable] = job.relays.url_for(call.request.agent.provider, upstream,
                                               job.target.name)

    on_line = _shown_lines(job)
    refusals: list[RateLimit] = []  # what the CLI said of the provider's limits

    def render(line: str) -> list[str]:
        """An agent's line: read for usage and the provider's limits, and what a person
        reads of it."""
        assert call is not None
        shown = call.provider.parse_line(line, usage, call.request)
        progress.cost_usd = usage.priced(call.request.agent)
        said = call.provider.rate_limit(line)
        if said is not None:
            refusals.append(said)
            if job.seat is not None:
                job.seat.signal(said)
        return shown

    def on_start(pid: int) -> None:
        progress.pid = pid

    # Nothing to sample for a plain command without a budget: no watcher at all.
    sampler = Sampler(job, usage, call.request if call else None) \
        if call is not None or job.budget is not None else None
    watch: Callable[[], str | None] | None = sampler
    if sampler is not None and job.seat is not None:
        seat = job.seat

        def watch() -> str | None:
            # Fewer of the provider's attempts may run than do: one whose CLI only sleeps
            # before a retry stops, and waits its turn (its session is resumed).
            return RATE_LIMITED if seat.step_aside() else sampler()

    header = _log_header(number, command)
    if job.sandbox is not None:
        writable = [job.result_file.parent, job.usage_file.parent,
                    *_state(call.provider, env)] if call is not None else []
        command = _sandboxed(job.sandbox, command, workspace, writable, env)
        header += " (sandboxed)"
    launch = process.Launch(command, workspace.path, env, deadline, job.tag,
                            header, call.stdin if call else None,
                            render=render if call is not None else None,
                            raw_log=raw_log(job.log) if call is not None and
                            call.provider.raw_stream else None,
                            contained=call is not None or (
                                job.budget is not None and job.budget.memory is not None))
    progress.phase = "running"
    outcome = yield process.Call(launch, job.log, on_line, watch, job.cancel, on_start,
                                 job.known)
    progress.pid = None
    status, error = _status(outcome)
    message: str | None = None
    session_out = session
    refusal: RateLimit | None = None
    if call is not None:
        assert sampler is not None
        sampler()  # the last word on usage, written just before it exited
        _mask_in_place(job.usage_file)  # kept in the run's folder, as logs are: masked
        verdict = call.provider.verdict(call.request, outcome.exit_code, outcome.tail)
        message = verdict.message
        session_out = verdict.session or session
        if status in ("succeeded", "failed") and not verdict.ok:
            status = verdict.status or "failed"
            error = verdict.error or error or "the agent reported a failure"
        # It ended because the provider refused (the CLI gave up on it, or agentfile had it
        # step aside): the provider's condition, not the target's failure.
        final = [r for r in refusals if not r.retrying]
        if refusals and (status == RATE_LIMITED or (status == "failed" and final)):
            refusal = (final or refusals)[-1]
            status = RATE_LIMITED
            error = f"{call.request.agent.provider} {refusal.reason}: {refusal.detail}"
        if message is not None:
            job.result_file.write_text(redactor().text(message), encoding="utf-8")
    if status == "succeeded" and definition.verify:
        status, error = yield from _verify(job, workspace, values, env, deadline)
    return Attempt(number, status, outcome.exit_code, started, time.time(),
                   cost_usd=progress.cost_usd, tokens=usage.tokens,
                   peak_rss_bytes=progress.peak_rss_bytes or None, cpu_s=progress.cpu_s,
                   session=session_out, error=error,
                   refusal=refusal), message


def _mask_in_place(path: Path) -> None:
    """A file an agent wrote that stays in the run's folder: secrets' values masked in it, as
    in logs (an agent may copy its environment, a key included, into its usage file)."""
    try:
        text = regular.read_bytes(path).decode("utf-8", errors="surrogateescape")
    except OSError:
        return
    masked = redactor().text(text)
    if masked != text:
        with contextlib.suppress(OSError):
            path.write_bytes(masked.encode("utf-8", errors="surrogateescape"))


@dataclass
class _AgentCall:
    """One attempt's call of an agent CLI: who, with what, and how to read it."""

    provider: Provider
    request: AgentRequest
    command: str | list[str]
    env: dict[str, str]
    unset: tuple[str, ...]
    stdin: Path | None = None


def _call_agent(job: Job, agent: Agent, workspace: Workspace, number: int,
                values: Mapping[str, str], failure: str | None,
                session: str | None) -> _AgentCall:
    """Write the prompt as sent, clear last attempt's result and usage, ask the provider."""
    chosen = provider(agent.provider)
    for path in (job.prompt_file, job.result_file, job.usage_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    job.prompt_file.write_text(compose_prompt(job, values, failure), encoding="utf-8")
    job.result_file.unlink(missing_ok=True)
    job.usage_file.unlink(missing_ok=True)
    request = AgentRequest(job.target.name, job.run_id, agent, workspace.path,
                           job.prompt_file, job.result_file, job.usage_file, number,
                           dict(values), session, _money_left(job))
    planned = chosen.command(request)
    return _AgentCall(chosen, request, planned.command, dict(planned.env), planned.unset,
                      planned.stdin)


def _money_left(job: Job) -> float | None:
    """What this attempt may still spend: the target's own cap and the build's, whichever is
    lower (passed on to CLIs that have their own cap, like --max-budget-usd)."""
    caps = [job.budget.usd] if job.budget is not None and job.budget.usd is not None else []
    build = job.budget_usd_left()
    if build is not None:
        caps.append(build)
    return min(caps) if caps else None


def _status(outcome: process.Outcome) -> tuple[str, str | None]:
    """The status of an ended process, and for a failure what it said last."""
    if outcome.log_error is not None and outcome.stopped is None:
        return "failed", (f"exited with {outcome.exit_code}, but its log could not be "
                          f"written to the end: {outcome.log_error}")
    if outcome.stopped is None and outcome.exit_code == 0:
        return "succeeded", None
    how = f"stopped ({outcome.stopped})" if outcome.stopped else f"exited with {outcome.exit_code}"
    tail = "\n".join(_clip(line) for line in outcome.tail[-FAILURE_LINES:])
    return outcome.stopped or "failed", f"{how}:\n{tail}" if tail else how


def _clip(line: str) -> str:
    """A line of a failure's detail, which goes into the state, the summary and the next
    attempt's prompt: its end, where the error usually is, up to FAILURE_LINE_CHARS."""
    if len(line) <= FAILURE_LINE_CHARS:
        return line
    return f"[{len(line) - FAILURE_LINE_CHARS} characters cut] {line[-FAILURE_LINE_CHARS:]}"


def _verify(job: Job, workspace: Workspace, values: Mapping[str, str],
            env: Mapping[str, str], deadline: float | None) -> Steps[tuple[str, str | None]]:
    assert job.target.definition.verify is not None
    command, carried = _expand(job.target.definition.verify, values)
    if carried:
        env = {**env, **carried}
    run: str | list[str] = command
    if job.sandbox is not None:  # it runs what the agent wrote: confined as the agent was
        run = _sandboxed(job.sandbox, command, workspace, [], env)
    launch = process.Launch(run, workspace.path, env, deadline, job.tag,
                            _log_header(None, command, label="verify") +
                            (" (sandboxed)" if job.sandbox is not None else ""))
    job.progress.phase = "verifying"
    # Where the target's work is committed, what the check leaves (a __pycache__ from
    # py_compile, a report) is not its work: removed, so that it is never committed.
    committed = workspace.mode in ("worktree", "branch")
    if committed:
        from agentfile.git import remove_new_files, untracked_files

        before = untracked_files(workspace.path)
    outcome = yield process.Call(launch, job.log, _shown_lines(job), cancel=job.cancel,
                                 known=job.known)
    if committed:
        remove_new_files(workspace.path, before)
    status, error = _status(outcome)
    return status, None if error is None else f"verify `{command}` {error}"


def _state(chosen: Provider, env: Mapping[str, str]) -> list[Path]:
    """The folders of the CLI's own state, made when missing: a folder bwrap makes writable
    must exist first (one that cannot be made is left read-only, and the CLI says why)."""
    folders = chosen.state(env)
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
    return folders


def _sandboxed(sandbox: Sandbox, command: str | list[str], workspace: Workspace,
               writable: list[Path], env: Mapping[str, str]) -> list[str]:
    """The command as bubblewrap runs it: only the workspace and `writable` writable."""
    # A command line goes through the shell, as it would outside (a program not found
    # is the shell's exit 127, not bwrap's own error).
    argv = command if isinstance(command, list) else ["/bin/sh", "-c", command]
    return sandbox.wrap(argv, cwd=workspace.path, writable=[workspace.path, *writable],
                        home=home(env), programs=env.get("PATH", ""))


def _shown_lines(job: Job) -> Callable[[str], None]:
    """What becomes of each line a person reads of a target's output: the board's last
    line, and with `build --verbose` the build's output."""
    progress, echo, name = job.progress, job.echo, job.target.name

    def on_line(line: str) -> None:
        if line.strip():
            progress.last_line = line
        if echo is not None:
            echo(name, line)

    return on_line


def _log_header(attempt: int | None, command: str | list[str], label: str = "attempt") -> str:
    """The line a log gets before each attempt's output: what ran, and when."""
    shown = command if isinstance(command, str) else shlex.join(command)
    head = f"{label} {attempt}" if attempt is not None else label
    return f"=== agentfile: {head} at {time.strftime('%H:%M:%S')}: {shown}"

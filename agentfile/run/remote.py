"""What a node of a cluster runs for one target: the Ray executor's task body, without Ray.

The node keeps a cache clone of the coordinator's repository (a bare repository, under a file
lock: several workers of one node share it) and fetches into it only the integration commits
it does not have yet, from git bundles the coordinator hands over. The target runs in a
worktree of that clone with the same runner code as on the coordinator (prompt, retries with
feedback, verify, usage file, budgets, secret masking, whole-tree stops), while its log, usage
and phase stream back as events; then its commits go back as a bundle, and the worktree goes.

A supervisor process, detached from the worker, waits for the worker to end however it ends
(a forced cancel, a killed worker) and then stops every process of the target's tree still
running (found by their tag) and removes a worktree left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from agentfile.agents.base import Usage
from agentfile.isolation.base import Workspace
from agentfile.isolation.sandbox import Sandbox
from agentfile.isolation.setup import Setup, run_setup
from agentfile.manifest.expand import ConcreteTarget
from agentfile.manifest.model import Agent, Budget
from agentfile.records.layout import flat_path
from agentfile.run import process
from agentfile.run.runner import Job, Progress, TargetResult, run_target
from agentfile.run.throttle import Limits, Monitor

if TYPE_CHECKING:
    from agentfile.git import Git

NODE_DIR_VARIABLE = "AGENTFILE_NODE_DIR"  # where a node keeps its clones and worktrees
NODE_NAME_VARIABLE = "AGENTFILE_NODE_NAME"  # how `status` names the node (else its host)
TICK_SECONDS = 0.1  # log and progress reach the coordinator this often
STOP_POLL_SECONDS = 0.3  # the coordinator's stop is asked for this often
BASE_REF = "refs/agentfile/bases/{run}"  # keeps fetched integration commits from gc


@dataclass(frozen=True)
class Bundle:
    """A bundle in the object store: fetching `ref` from it gives `commit`."""

    commit: str
    ref: str


@dataclass(frozen=True)
class Spec:
    """Everything a node needs to run one target, without the coordinator's files."""

    target: ConcreteTarget
    run_id: str
    repo: str  # the coordinator's repository: names this node's cache clone of it
    agent: Agent | None
    agent_label: str | None  # how its commits name the agent
    budget: Budget | None
    dep_results: Mapping[str, str]
    dep_diffs: Mapping[str, str]
    files: Mapping[str, str]  # prompt and context files, by name relative to the manifest
    copied: Mapping[str, bytes]  # the target's copy_files, from the user's checkout
    branch: str
    base: str  # the integration commit its work starts from
    bundles: tuple[Bundle, ...]  # whose commits, fetched in order, hold `base`
    money_left: float | None  # the build's, for CLIs with a cap of their own
    keep: bool  # commit what it leaves (not for a check on merged work)
    tag: str
    sandbox: bool = False  # `sandbox = true`: under bubblewrap on the node too
    setup: Setup | None = None  # run in the node's fresh worktree first (its output: the log)


@dataclass(frozen=True)
class Placed:
    node: str


@dataclass(frozen=True)
class Output:
    data: bytes  # the next bytes of its log


@dataclass(frozen=True)
class Update:
    fields: Mapping[str, object]  # Progress's, as they are now


@dataclass
class Returned:
    result: TargetResult
    tip: str
    bundle: bytes | None  # its commits beyond `base`, when it made any
    prompt: str | None = None  # the last prompt as sent, for the coordinator's records
    usage: str | None = None


@dataclass(frozen=True)
class Finished:
    returned: Returned


Event = Placed | Output | Update | Finished


def node_name() -> str:
    return os.environ.get(NODE_NAME_VARIABLE) or socket.gethostname()


def node_dir() -> Path:
    configured = os.environ.get(NODE_DIR_VARIABLE)
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("agentfile")) / "node"


@dataclass
class _Paths:
    """One target's places on this node."""

    home: Path
    spec: Spec
    cache: Path = field(init=False)
    worktree: Path = field(init=False)
    files: Path = field(init=False)

    def __post_init__(self) -> None:
        key = hashlib.sha256(self.spec.repo.encode()).hexdigest()[:16]
        self.cache = self.home / "repos" / key
        self.worktree = self.home / "work" / self.spec.run_id / flat_path(self.spec.target.name)
        self.files = self.home / "runs" / self.spec.run_id / flat_path(self.spec.target.name)


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[Git]:
    """The node's cache clone, held by this process alone (other workers wait)."""
    from agentfile.git import Git

    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_suffix(".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield Git.cache(cache)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(spec: Spec, *, fetch: Callable[[int], bytes],
        stopped: Callable[[], bool]) -> Iterator[Event]:
    """Run the target on this node: its events, the last of them Finished. `fetch(i)` gives
    the bytes of `spec.bundles[i]`; `stopped()` says whether the coordinator asks it to stop."""
    yield Placed(node_name())
    paths = _Paths(node_dir(), spec)
    with cache_lock(paths.cache) as git:
        _fetch_base(git, spec, fetch)
        _drop_stale(git, spec.branch, paths.worktree)
        git.add_worktree(paths.worktree, spec.branch, spec.base)
    for name, data in spec.copied.items():
        (paths.worktree / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.worktree / name).write_bytes(data)
    supervisor = _supervise(spec.tag, paths)
    try:
        yield from _run_in(spec, paths, stopped)
    finally:
        assert supervisor.stdin is not None
        supervisor.stdin.close()  # its cue: stop what is left, remove what is left


def _fetch_base(git: Git, spec: Spec, fetch: Callable[[int], bytes]) -> None:
    """Only the bundles holding commits this clone lacks are fetched from the store."""
    if git.has_commit(spec.base):
        return
    for number, bundle in enumerate(spec.bundles):
        if git.has_commit(bundle.commit):
            continue
        with tempfile.NamedTemporaryFile(suffix=".bundle") as handle:
            handle.write(fetch(number))
            handle.flush()
            git.fetch_bundle(Path(handle.name), bundle.ref, BASE_REF.format(run=spec.run_id))


def _drop_stale(git: Git, branch: str, worktree: Path) -> None:
    """A worktree or branch an earlier run left here (a killed node): `worktree add` of the
    branch would fail on it. The coordinator holds the work; this is a copy."""
    stale = git.checked_out().get(branch)
    if stale is not None or worktree.exists():
        git.remove_worktree(stale or worktree)
    git.prune_worktrees()
    if git.branch_exists(branch):
        git.delete_branch(branch)


def _run_in(spec: Spec, paths: _Paths, stopped: Callable[[], bool]) -> Iterator[Event]:
    job = _job(spec, paths)
    workspace = Workspace(path=paths.worktree, mode="worktree", detail=spec.branch,
                          base=spec.base)
    monitor = Monitor(Limits())  # measures the tree: memory budgets, peak memory, CPU
    monitor.start()
    job.known = monitor.track(spec.target.name, job.progress, 0).known
    results: list[tuple[TargetResult, bool]] = []
    worker = threading.Thread(target=lambda: results.append(_attempts(job, workspace,
                                                                      spec.setup)),
                              name="agentfile-remote-target")
    worker.start()
    sent, last = 0, None
    next_poll = 0.0
    try:
        while True:
            worker.join(TICK_SECONDS)
            data, sent = _read_from(job.log, sent)
            if data:
                yield Output(data)
            fields = _progress(job.progress)
            if fields != last:
                last = fields
                yield Update(fields)
            if not worker.is_alive():
                break
            if not job.cancel.is_set() and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + STOP_POLL_SECONDS
                if stopped():
                    job.cancel.set()
    finally:
        job.cancel.set()  # closed early (the coordinator is gone): the tree stops
        worker.join()
        monitor.close()
    result, ran = results[0]
    yield Finished(_finish(spec, paths, job, workspace, result, keep=spec.keep and ran))


def _job(spec: Spec, paths: _Paths) -> Job:
    base = paths.files / "manifest"
    for name, text in spec.files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text, encoding="utf-8")
    paths.files.mkdir(parents=True, exist_ok=True)
    log = paths.files / "log"
    log.unlink(missing_ok=True)
    money_left = spec.money_left
    return Job(target=spec.target, run_id=spec.run_id, base=base, log=log,
               prompt_file=paths.files / "prompt.md", result_file=paths.files / "result.md",
               usage_file=paths.files / "usage.json", agent=spec.agent, budget=spec.budget,
               dep_results=spec.dep_results, dep_diffs=spec.dep_diffs,
               cancel=threading.Event(), progress=Progress(),
               budget_usd_left=lambda: money_left, tag=spec.tag, environ=dict(os.environ),
               sandbox=Sandbox(paths.cache) if spec.sandbox else None)


def _attempts(job: Job, workspace: Workspace,
              setup: Setup | None) -> tuple[TargetResult, bool]:
    """The target's result, and whether it ran (a failed setup: it did not, and nothing in
    its worktree is its work)."""
    try:
        if setup is not None:
            from agentfile.git import Git

            status, why = run_setup(setup, job, workspace, Git(workspace.path), job.log,
                                    shown="the target's log")
            if why is not None:
                return TargetResult(job.target.name, status, detail=why), False
        return run_target(job, workspace), True
    except Exception as err:  # a failure of agentfile's own: this target's, not the build's
        return TargetResult(job.target.name, "failed",
                            detail=f"agentfile could not run it: {err}"), True


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return b"", offset
    return data, offset + len(data)


def _progress(progress: Progress) -> dict[str, object]:
    """What the board and the budgets read, as plain values (the pid is this node's)."""
    return {"attempt": progress.attempt, "phase": progress.phase,
            "last_line": progress.last_line, "usage": asdict(progress.usage),
            "cost_usd": progress.cost_usd, "rss_bytes": progress.rss_bytes,
            "peak_rss_bytes": progress.peak_rss_bytes, "cpu_s": progress.cpu_s}


def apply_progress(progress: Progress, fields: Mapping[str, object]) -> None:
    """On the coordinator: a target's progress as its node last sent it."""
    for name, value in fields.items():
        if name == "usage":
            assert isinstance(value, dict)
            progress.usage = Usage(**value)
        else:
            setattr(progress, name, value)


def _finish(spec: Spec, paths: _Paths, job: Job, workspace: Workspace,
            result: TargetResult, *, keep: bool) -> Returned:
    """Commit what it left, bundle its commits, remove the worktree and the branch."""
    from agentfile.isolation.worktree import commit_left

    with cache_lock(paths.cache) as git:
        try:
            tip = commit_left(git, workspace, spec.target, result.status, spec.run_id,
                              keep=keep, agent=spec.agent_label)
            bundle: bytes | None = None
            if tip != spec.base:
                with tempfile.TemporaryDirectory() as scratch:
                    file = Path(scratch) / "work.bundle"
                    git.bundle(file, f"refs/heads/{spec.branch}", excluding=spec.base)
                    bundle = file.read_bytes()
            result.diff = workspace.diff
        finally:
            git.remove_worktree(paths.worktree)
            git.delete_branch(spec.branch)
    returned = Returned(result, tip, bundle, _text(job.prompt_file), _text(job.usage_file))
    with contextlib.suppress(OSError):
        for file in paths.files.rglob("*"):
            if file.is_file():
                file.unlink()
    return returned


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


# -- the supervisor: a process of its own, outliving the worker ----------------------------


def _supervise(tag: str, paths: _Paths) -> subprocess.Popen[bytes]:
    """Start the supervisor; it runs until the returned process's stdin closes. It forks
    away at once: a forced cancel kills the worker's direct children, not their children."""
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "agentfile.run.remote", tag, str(paths.worktree),
         str(paths.cache)], stdin=subprocess.PIPE, start_new_session=True)
    supervisor.wait()  # the first process ends once its detached copy runs
    return supervisor


def _stop_tagged(tag: str) -> None:
    """TERM, then KILL, every process on this node whose environment carries `tag`."""
    for sig, settle in ((signal.SIGTERM, process.GRACE_SECONDS), (signal.SIGKILL, 1.0)):
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(process.TAG_VARIABLE) == tag:
                    proc.send_signal(sig)
                    found.append(proc)
        if not found:
            return
        psutil.wait_procs(found, timeout=settle)


def _supervisor_main(tag: str, worktree: Path, cache: Path) -> int:
    if os.fork():  # the parent returns to the worker, which waits for it
        return 0
    os.setsid()
    with contextlib.suppress(OSError):
        sys.stdin.buffer.read()  # until the worker closes it, or ends
    _stop_tagged(tag)
    if worktree.exists():
        with cache_lock(cache) as git:
            git.remove_worktree(worktree)
            git.prune_worktrees()
    return 0


if __name__ == "__main__":
    os.environ.pop(process.TAG_VARIABLE, None)  # never one of the processes it stops
    raise SystemExit(_supervisor_main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))

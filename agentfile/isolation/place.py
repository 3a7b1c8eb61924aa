"""Running one target in its place (SPEC 6): the workspace its isolation mode gives it,
prepared before the first attempt and collected after the last, in `finally`.

`run` is called in a worker thread. A plain command in the user's checkout needs no thread of
its own: `steps` gives its attempts to the reactor instead. What happens to the work afterwards
(merging a branch) is the scheduler's, in dependency order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentfile.isolation import branch, directory, none_workspace
from agentfile.isolation.base import Workspace
from agentfile.isolation.setup import run_setup, setup_of
from agentfile.isolation.worktree import WorkKept, Worktrees, WorktreeWork
from agentfile.manifest.load import LoadedManifest
from agentfile.manifest.model import DirRef
from agentfile.run.process import Steps
from agentfile.run.runner import Job, TargetResult, run_target, target_steps

if TYPE_CHECKING:
    from agentfile.git import Git


@dataclass
class Places:
    loaded: LoadedManifest
    worktrees: Worktrees | None  # when some target is isolated in a worktree or branch
    main_git: Git | None  # the user's checkout, when it is a git repository and dir() needs it
    # The directories of dir() targets running now, but the given target's.
    running_dirs: Callable[[str], list[str]]
    # Told of a worktree or branch target's work the moment its commit exists.
    committed: Callable[[Job, TargetResult, WorktreeWork], None] | None = None

    def run(self, job: Job) -> TargetResult:
        """Every attempt of the job's target, in its place; never raises."""
        try:
            mode = self.loaded.isolation_of(job.target)
            if mode == "worktree":
                return self._in_worktree(job)
            if mode == "branch":
                return self._in_branch(job)
            if isinstance(mode, DirRef):
                return self._in_directory(job, mode)
            with none_workspace(self.loaded.root) as workspace:
                return run_target(job, workspace)
        except Exception as err:  # a failure of agentfile's own: this target's, not the build's
            return _could_not_run(job, err)

    def steps(self, job: Job) -> Steps[TargetResult] | None:
        """The job's attempts as steps for the reactor, when its place asks nothing of a
        thread: a command (no agent) in the user's checkout (isolation none), not in tmux.
        Those steps never raise either. None for the others: they keep a worker thread."""
        if job.agent is not None or job.terminal is not None or \
                self.loaded.isolation_of(job.target) != "none":
            return None
        return self._none_steps(job)

    def _none_steps(self, job: Job) -> Steps[TargetResult]:
        try:
            with none_workspace(self.loaded.root) as workspace:
                result: TargetResult = yield from target_steps(job, workspace)
                return result
        except Exception as err:
            return _could_not_run(job, err)

    def folder_of(self, ref: DirRef) -> str:
        return directory.relative_dir(self.loaded.root, self.loaded.path.parent, ref.dir)

    def _in_worktree(self, job: Job) -> TargetResult:
        assert self.worktrees is not None
        workspace = self.worktrees.prepare(job.target)
        result = TargetResult(job.target.name, "interrupted")
        keep = not self.loaded.checks_merged_work(job.target)
        try:
            unready = self._set_up(job, workspace)
            if unready is not None:
                result, keep = unready, False  # it never ran: nothing there is its work
            else:
                result = run_target(job, workspace)
        finally:
            # Runs on every end, Ctrl-C included: what the agent did is committed first.
            with _kept(result):
                result.work = self.worktrees.finish(
                    workspace, job.target, result.status, keep=keep,
                    agent=self.loaded.agent_label(job.target),
                    committed=self._hear(job, result))
            result.diff = workspace.diff
        return result

    def _set_up(self, job: Job, workspace: Workspace) -> TargetResult | None:
        """Run the target's `setup` in its worktree unless it ran there for the same inputs
        (a pooled worktree's); the target's result when it failed, else None."""
        assert self.worktrees is not None
        setup = setup_of(self.loaded, job.target)
        if setup is None:
            return None
        fingerprint = setup.fingerprint(workspace.path)
        if self.worktrees.setup_done(workspace) == fingerprint:
            return None
        job.progress.phase = "setting up"
        status, why = run_setup(setup, job, workspace, self.worktrees.git,
                                self.worktrees.setup_log(job.target))
        self.worktrees.note_setup(workspace, fingerprint if why is None else None)
        if why is None:
            job.progress.phase = "preparing"
            return None
        return TargetResult(job.target.name, status, detail=why)

    def _hear(self, job: Job, result: TargetResult) -> Callable[[WorktreeWork], None] | None:
        told = self.committed
        if told is None:
            return None
        return lambda work: told(job, result, work)

    def _in_branch(self, job: Job) -> TargetResult:
        assert self.worktrees is not None
        try:
            workspace = branch.prepare(self.worktrees, job.target)
        except branch.DirtyCheckout as err:
            return TargetResult(job.target.name, "failed", detail=str(err))
        result = TargetResult(job.target.name, "interrupted")
        try:
            result = run_target(job, workspace)
        finally:
            with _kept(result):
                result.work = branch.finish(self.worktrees, workspace, job.target,
                                            result.status, self.loaded.agent_label(job.target),
                                            committed=self._hear(job, result))
            result.diff = workspace.diff
        return result

    def _in_directory(self, job: Job, ref: DirRef) -> TargetResult:
        root = self.loaded.root
        folder = self.folder_of(ref)
        if job.sandbox is not None:
            # Nothing outside its directory is writable to it: a change there is someone
            # else's, never to be blamed on it (and no photographs of the checkout to take).
            return run_target(job, directory.directory_workspace(root, folder))
        others = set(self.running_dirs(job.target.name))
        before = directory.snapshot(root, self.main_git)
        result = run_target(job, directory.directory_workspace(root, folder))
        others |= set(self.running_dirs(job.target.name))
        outside = directory.violations(before, directory.snapshot(root, self.main_git),
                                       folder, others)
        if outside and result.status == "succeeded":
            shown = ", ".join(outside[:10]) + (" …" if len(outside) > 10 else "")
            result.status = "violation"
            result.detail = f"changed files outside dir(\"{ref.dir}\"): {shown}"
            if others:  # the checkout is shared: say who else could have written them
                result.detail += f" (while {', '.join(sorted(others))} also ran there)"
        return result


@contextlib.contextmanager
def _kept(result: TargetResult) -> Iterator[None]:
    """Work that could not be committed (a full disk) is the target's failure, said with
    where the work is: it is neither lost nor merged."""
    try:
        yield
    except WorkKept as err:
        result.work = None
        result.status = "failed" if result.status == "succeeded" else result.status
        result.detail = str(err)


def _could_not_run(job: Job, err: Exception) -> TargetResult:
    """A failure of agentfile's own: this target's, not the build's."""
    return TargetResult(job.target.name, "failed", detail=f"agentfile could not run it: {err}")

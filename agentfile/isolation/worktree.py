"""`isolation = worktree` (SPEC 6.1): each target in its own git worktree and branch.

The build's integration branch `agentfile/RUN_ID` starts at the commit checked out when the
build began; a target's branch `agentfile/targets/RUN_ID/TARGET` starts at the integration
branch's tip, so it sees its dependencies' merged work. (SPEC 6.1 names target branches
`agentfile/RUN_ID/TARGET`, which git cannot hold beside `agentfile/RUN_ID`: a ref cannot be
both a branch and a folder of branches.) When the target ends, whatever it left is
committed on its branch (a work-in-progress commit if it did not succeed), the worktree is
removed (with `worktrees = reuse`, given back to the pool: isolation/pool.py) and the branch
kept for the scheduler to merge, or for the user to inspect.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agentfile.errors import AgentfileError
from agentfile.isolation.base import Workspace
from agentfile.isolation.pool import Lease, Pool
from agentfile.manifest.expand import ConcreteTarget
from agentfile.records.layout import Layout, RunFiles, flat_path, ref_safe
from agentfile.records.state import Store

if TYPE_CHECKING:  # GitPython loads only when a build uses worktrees
    from agentfile.git import Git


def commit_message(target: ConcreteTarget, run_id: str, status: str,
                   agent: str | None) -> str:
    """What a target's commit says: its subject, then trailers naming the target, the agent
    and the run that made it (`git log --format=%(trailers)` reads them back)."""
    subject = (f"agentfile: {target.name}" if status == "succeeded" else
               f"agentfile: work in progress of {target.name} ({status})")
    description = target.definition.description
    body = f"{description}\n\n" if description and status == "succeeded" else ""
    trailers = [f"Agentfile-Target: {target.name}"]
    trailers += [f"Agentfile-Agent: {agent}"] if agent else []
    trailers += [f"Agentfile-Run: {run_id}"]
    return f"{subject}\n\n{body}" + "\n".join(trailers) + "\n"


@dataclass
class WorktreeWork:
    """What a finished worktree target left: its branch, its commits and its diff."""

    branch: str
    base: str
    committed: bool  # the branch holds commits beyond its base
    wip: bool = False  # committed as work in progress (failed or interrupted)
    tip: str = ""  # the branch's commit


Committed = Callable[[WorktreeWork], None]


@dataclass
class Worktrees:
    """The worktrees and branches of one build."""

    git: Git
    layout: Layout
    store: Store
    run_id: str
    keep: bool = False  # --keep-worktrees
    integration: str = ""
    start_commit: str = ""
    start_branch: str | None = None
    created: list[str] = field(default_factory=list)
    pool: Pool | None = None  # worktrees = reuse
    leases: dict[Path, Lease] = field(default_factory=dict)  # pooled worktrees in use

    def begin(self) -> None:
        """Create the integration branch at the commit checked out now."""
        self.start_commit = self.git.head_commit()
        self.start_branch = self.git.current_branch()
        self.integration = f"agentfile/{self.run_id}"
        self.store.record_resource(self.run_id, "branch", self.integration, None)
        self.git.create_branch(self.integration, self.start_commit)

    def branch_of(self, target: ConcreteTarget) -> str:
        return f"agentfile/targets/{self.run_id}/{ref_safe(target.name)}"

    def path_of(self, target: ConcreteTarget) -> Path:
        return self.layout.state_dir / "worktrees" / self.run_id / flat_path(target.name)

    def prepare(self, target: ConcreteTarget) -> Workspace:
        branch = self.branch_of(target)
        base = self.git.rev(self.integration)
        self.store.record_resource(self.run_id, "branch", branch, target.name)
        if self.pool is not None:
            lease = self.pool.take(branch, base, run_id=self.run_id, target=target.name,
                                   record=lambda path: self.store.record_resource(
                                       self.run_id, "worktree", str(path), target.name),
                                   copied=target.definition.copy_files)
            path = lease.path
            self.leases[path] = lease
        else:
            path = self.path_of(target)
            self.store.record_resource(self.run_id, "worktree", str(path), target.name)
            self.git.add_worktree(path, branch, base)
        try:
            for name in target.definition.copy_files:
                copy_into(self.git.root, path, name)
        except BaseException:
            # Nothing ran in it: it goes, and its branch (new, it holds nothing) with it.
            self._put_away(path)
            if self.git.rev(branch) == base:
                self.drop_branch(branch)
            raise
        return Workspace(path=path, mode="worktree", detail=branch, base=base)

    def setup_done(self, workspace: Workspace) -> str | None:
        """The fingerprint of the setup that ran in this worktree (a pooled one's)."""
        lease = self.leases.get(workspace.path)
        return lease.info.get("setup") if lease is not None else None

    def note_setup(self, workspace: Workspace, fingerprint: str | None) -> None:
        lease = self.leases.get(workspace.path)
        if lease is not None and self.pool is not None:
            self.pool.note_setup(lease, fingerprint)

    def setup_log(self, target: ConcreteTarget) -> Path:
        return RunFiles(self.layout.run_dir(self.run_id)).setup_log(target.name)

    def _put_away(self, path: Path) -> None:
        """The worktree removed, or given back to the pool."""
        lease = self.leases.pop(path, None)
        if lease is not None and self.pool is not None:
            self.pool.give_back(lease)
        else:
            self.git.remove_worktree(path)
        self.store.resource_removed("worktree", str(path))

    def _set_aside(self, path: Path) -> None:
        """A pooled worktree that must stay as it is (its work is uncommitted, or
        --keep-worktrees): out of the pool, an ordinary worktree of this run."""
        lease = self.leases.pop(path, None)
        if lease is not None and self.pool is not None:
            self.pool.set_aside(lease)

    def finish(self, workspace: Workspace, target: ConcreteTarget, status: str, *,
               keep: bool = True, agent: str | None = None,
               committed: Committed | None = None) -> WorktreeWork:
        """Commit what the target left (nothing is lost), note its diff, remove the worktree.
        `keep=False`: a check on the merged work (a run target after agents' work, by
        default): what it left uncommitted (reports, caches) is not its work and goes.
        `committed` hears of the work the moment its commit exists (recovery's record)."""
        assert workspace.detail is not None and workspace.base is not None
        branch = workspace.detail
        wip = status != "succeeded"
        message = commit_message(target, self.run_id, status, agent)
        if keep:
            try:
                self.git.commit_all(workspace.path, message,
                                    exclude=target.definition.copy_files)
            except AgentfileError as err:  # CommitFailed: the work stays where it is
                self._set_aside(workspace.path)
                raise WorkKept(f"its work is not committed: {err}; it is kept in its "
                               f"worktree {workspace.path} (branch {branch})") from None
        tip = self.git.keep_head_on(workspace.path, branch)
        work = WorktreeWork(branch, workspace.base, committed=tip != workspace.base, wip=wip,
                            tip=tip)
        if committed is not None:
            committed(work)
        workspace.diff = self.git.diff(workspace.base, tip) if tip != workspace.base else ""
        if self.keep:
            self._set_aside(workspace.path)
        else:
            self._put_away(workspace.path)
        return work

    def drop_branch(self, branch: str) -> None:
        """A branch whose work is merged (or that holds none) is deleted. A Ray node's target
        that changed nothing sent no commits: its branch was never made here."""
        if self.git.branch_exists(branch):
            self.git.delete_branch(branch)
        self.store.resource_removed("branch", branch)


class WorkKept(AgentfileError):
    """A target's work could not be committed: it stays, uncommitted, where it was made."""


class CopyRefused(AgentfileError):
    """A `copy` file whose place in the worktree is not inside it."""


def copy_into(root: Path, worktree: Path, name: str) -> None:
    """Copy the checkout's file `name` (a regular file, or a symlink to one: its content)
    into the worktree as a regular file. Whatever the commit has at that place, a symlink
    above all, is replaced, never written through: a committed `.env -> /elsewhere` would
    have the copy overwrite a file outside the repository."""
    source = root / name
    if not source.is_file():
        return
    target = worktree / name
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    inside = worktree.resolve()
    if folder.resolve() != inside and inside not in folder.resolve().parents:
        raise CopyRefused(f"copy \"{name}\": its folder in the worktree is a symlink to "
                          f"{folder.resolve()}, outside the worktree; nothing was copied")
    if target.is_symlink() or target.exists():
        target.unlink()
    shutil.copy2(source, target)


def commit_left(git: Git, workspace: Workspace, target: ConcreteTarget, status: str,
                run_id: str, *, keep: bool, agent: str | None) -> str:
    """Commit what the target left in its worktree (as work in progress if it did not
    succeed; nothing with `keep=False`), put its branch on it, note the diff; the tip."""
    assert workspace.detail is not None and workspace.base is not None
    message = commit_message(target, run_id, status, agent)
    if keep:
        git.commit_all(workspace.path, message, exclude=target.definition.copy_files)
    tip = git.keep_head_on(workspace.path, workspace.detail)
    workspace.diff = git.diff(workspace.base, tip) if tip != workspace.base else ""
    return tip

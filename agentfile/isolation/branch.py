"""`isolation = branch` (SPEC 6.2): run in the main checkout, on a branch of its own.

Such a target has the checkout to itself (the scheduler runs nothing else there meanwhile);
it starts from the build's integration branch, what it leaves is committed on its branch,
and the user's branch and files are checked out again afterwards, whatever happened.

What the user does in the checkout meanwhile is found where it can be: their untracked files
are never committed; a switch back to their branch, or a file changed while none of the
target's processes ran (before its first started, between two, after its last ended), stops
the target with nothing committed. An edit made while a process of the target runs cannot be
told from the target's own (docs/isolation.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agentfile.errors import AgentfileError
from agentfile.isolation.base import Workspace
from agentfile.isolation.worktree import (
    Committed,
    WorkKept,
    Worktrees,
    WorktreeWork,
    commit_message,
)
from agentfile.manifest.expand import ConcreteTarget

# A file's modification time is taken from a coarse clock (a kernel tick, up to 10 ms,
# behind the time Python reads): a target's write at its very start can carry a time before
# it began. Changes this close to a target's processes are counted as theirs.
MTIME_SLACK_SECONDS = 0.1


class DirtyCheckout(AgentfileError):
    """Branch isolation would switch a checkout that holds uncommitted changes."""


def prepare(worktrees: Worktrees, target: ConcreteTarget) -> Workspace:
    git = worktrees.git
    dirty = git.dirty_files()
    if dirty:
        raise DirtyCheckout(f"branch isolation needs a clean work tree; {len(dirty)} "
                            f"uncommitted change(s), e.g. {dirty[0]}")
    branch = worktrees.branch_of(target)
    base = git.rev(worktrees.integration)
    # The user's untracked files stay theirs: never committed onto the target's branch.
    untracked = tuple(set(git.dirty_files(untracked=True)) - set(dirty))
    worktrees.store.record_resource(worktrees.run_id, "branch", branch, target.name)
    git.checkout_new(branch, base)
    return Workspace(path=git.root, mode="branch", detail=branch, base=base,
                     foreign=untracked)


def finish(worktrees: Worktrees, workspace: Workspace, target: ConcreteTarget,
           status: str, agent: str | None = None, *,
           committed: Committed | None = None) -> WorktreeWork:
    """Commit what the target left on its branch, then give the user their checkout back
    (`committed` hears of the work first, as with a worktree)."""
    git = worktrees.git
    assert workspace.detail is not None and workspace.base is not None
    wip = status != "succeeded"
    message = commit_message(target, worktrees.run_id, status, agent)
    mine = worktrees.start_branch
    if mine is not None and git.current_branch() == mine:
        # Switched back to the user's branch meanwhile (by the user: an agent has no
        # business there): committing would put the target's work, and whatever the user
        # changed, on the user's branch. Nothing is committed, nothing checked out over it.
        raise WorkKept(f"your checkout was switched back to {mine} while it ran: nothing was "
                       "committed, what it left is in your checkout as it is; its branch "
                       f"{workspace.detail} holds nothing of it")
    left_out = [*target.definition.copy_files, *workspace.foreign]
    outside = changed_while_idle(git.root, git.dirty_files(untracked=True), left_out,
                                 workspace.busy)
    if outside:
        shown = ", ".join(outside[:5]) + (" …" if len(outside) > 5 else "")
        raise WorkKept(f"{shown} changed in your checkout while none of its processes ran "
                       "(your edit?): nothing was committed, your change and its work are in "
                       f"your checkout as they are, on branch {workspace.detail}: commit what "
                       f"is its work there, then switch back to {mine or worktrees.start_commit}")
    try:
        git.commit_all(git.root, message, exclude=left_out)
    except AgentfileError as err:  # CommitFailed: a forced checkout would throw it away
        raise WorkKept(f"its work is not committed: {err}; it is kept in your checkout, "
                       f"on branch {workspace.detail}: commit it there, then switch back to "
                       f"{worktrees.start_branch or worktrees.start_commit}") from None
    try:
        tip = git.keep_head_on(git.root, workspace.detail)
        work = WorktreeWork(workspace.detail, workspace.base, committed=tip != workspace.base,
                            wip=wip, tip=tip)
        if committed is not None:
            committed(work)
        workspace.diff = git.diff(workspace.base, tip) if tip != workspace.base else ""
    finally:
        git.restore_checkout(worktrees.start_branch or worktrees.start_commit)
    return work


def changed_while_idle(root: Path, changed: Sequence[str], left_out: Sequence[str],
                       busy: Sequence[tuple[float, float]]) -> list[str]:
    """The `changed` files (but `left_out`) last modified while none of the target's
    processes ran (`busy`: when each did, give or take MTIME_SLACK_SECONDS): not the
    target's doing. A deleted file has no modification time, and is not looked at."""
    skip = set(left_out)
    found = []
    for name in changed:
        if name in skip or not busy:
            continue
        try:
            modified = os.lstat(root / name).st_mtime_ns / 1e9
        except OSError:
            continue
        if not any(began - MTIME_SLACK_SECONDS <= modified <= ended + MTIME_SLACK_SECONDS
                   for began, ended in busy):
            found.append(name)
    return found

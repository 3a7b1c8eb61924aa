"""`agentfile clean`: remove what agentfile made, and only that (SPEC 6.6).

Only worktrees, branches and tmux sessions recorded in state are candidates, never anything
found by a name pattern. A worktree with uncommitted changes, or a branch holding commits
that no other branch contains, is kept unless `--force`: cleaning never loses work. Running
it twice removes nothing the second time. Without a run, it cleans up after the last build and
after every build that died (killed, it could not clean up itself), and removes the pooled
worktrees of `worktrees = reuse` (isolation/pool.py), but one a running build uses.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from agentfile.commands.common import print_json
from agentfile.commands.history import layout_for
from agentfile.errors import EXIT_OK, AgentfileError, UsageError
from agentfile.git import Git, NotAWorktree
from agentfile.records.layout import Layout
from agentfile.records.retention import DEFAULT_KEEP_RUNS, prune_runs
from agentfile.records.runlock import holder
from agentfile.records.state import Store, open_store
from agentfile.ui import plural


@dataclass
class Step:
    kind: str
    name: str
    action: str  # "remove" or "keep"
    why: str = ""
    run: str = ""  # the build that made it


def clean(*, file: str | None, run: str | None, every: bool, dry_run: bool,
          force: bool, as_json: bool = False) -> int:
    layout = layout_for(file)
    store = open_store(layout.database, readonly=dry_run)
    if store is None:
        if as_json:
            print_json([])
        else:
            print("nothing to clean: no build has run in this repository")
        return EXIT_OK
    try:
        steps = _plan(layout, store, run=run, every=every, force=force)
        for step in steps:
            if step.action == "remove" and not dry_run:
                _remove(layout, store, step)
        if as_json:
            print_json(_as_json(steps, dry_run=dry_run))
        else:
            _report(steps, dry_run=dry_run)
        if not dry_run:
            _prune(layout)
    finally:
        store.close()
    return EXIT_OK


def clean_runs(*, file: str | None, keep: int | None, dry_run: bool) -> int:
    """`clean --runs [N]`: old builds' run folders, beyond the newest N (else the manifest's
    `options.keep_runs`, else 50); never the running build's nor the newest."""
    if keep is not None and keep < 1:
        raise UsageError("--runs needs a number of runs to keep of at least 1")
    layout = layout_for(file)
    if keep is None:
        keep = _keep_runs(file)
    live = holder(layout.lock_file)
    running = str(live.get("run")) if live else None
    if dry_run:
        names = sorted(p.name for p in layout.runs_dir.iterdir() if p.is_dir()) \
            if layout.runs_dir.is_dir() else []
        going = [n for n in names[:-keep] if n != running]
        print(f"would remove {plural(len(going), 'run folder')}, keeping the newest {keep}")
        return EXIT_OK
    gone = prune_runs(layout, keep, running=running)
    print(f"removed {plural(len(gone), 'run folder')}, kept the newest {keep}")
    return EXIT_OK


def _keep_runs(file: str | None) -> int:
    """`options.keep_runs` when the manifest loads; a broken one does not stop a clean."""
    from agentfile.commands.common import load_manifest

    try:
        return load_manifest(file).manifest.options.keep_runs or DEFAULT_KEEP_RUNS
    except AgentfileError:
        return DEFAULT_KEEP_RUNS


def _plan(layout: Layout, store: Store, *, run: str | None, every: bool,
          force: bool) -> list[Step]:
    live = holder(layout.lock_file)
    running = str(live.get("run")) if live else None
    if run is not None and run == running:
        raise UsageError(f"run {run} is still building (pid {live and live.get('pid')})")
    if run is not None and store.run(run) is None:
        raise UsageError(f"no run {run} in this repository (see `agentfile runs`)")
    runs: set[str] | None = {run} if run is not None else None  # None: every run
    if run is None and not every:
        last = store.last_run(besides=running)
        # The last build's, and every build's that died: no build of theirs will clean up.
        runs = {last["id"], *store.dead_runs(besides=running)} if last else set()
    resources = [r for r in store.resources() if r["run"] != running and
                 (runs is None or r["run"] in runs)]
    pooled = run is None and layout.pool_dir.is_dir()
    git = _git(layout) if resources or pooled else None
    steps: list[Step] = _plan_pool(git, layout, force) if pooled and git is not None else []
    mine = {s.name for s in steps}  # pooled worktrees: judged by the pool's rules
    resources = [r for r in resources if not (r["kind"] == "worktree" and r["name"] in mine)]
    for resource in resources:
        kind, name = resource["kind"], resource["name"]
        if kind == "worktree":
            steps.append(_judge_worktree(git, Path(name), force))
        elif kind == "tmux":
            steps.append(Step(kind, name, "remove", run=resource["run"]))
    # A branch checked out in a worktree that stays cannot go (git refuses): it stays too.
    going = {Path(s.name).resolve() for s in steps
             if s.kind in ("worktree", "pooled worktree") and s.action == "remove"}
    checked_out = git.checked_out() if git is not None else {}
    for resource in resources:
        if resource["kind"] == "branch":
            name = resource["name"]
            where = checked_out.get(name)
            if where is not None and where.resolve() not in going:
                steps.append(Step("branch", name, "keep", f"checked out in {where}"))
            else:
                steps.append(_judge_branch(git, name, force))
    if live is None and layout.lock_file.exists() and layout.lock_file.read_text().strip():
        steps.append(Step("lock", str(layout.lock_file), "remove", "its build is gone"))
    # Worktrees before branches: git will not delete a branch checked out in a worktree.
    order = {"pooled worktree": 0, "worktree": 0, "tmux": 1, "branch": 2, "lock": 3}
    return sorted(steps, key=lambda s: order.get(s.kind, 9))


def _git(layout: Layout) -> Git | None:
    try:
        return Git(layout.root)
    except UsageError:
        return None


def _plan_pool(git: Git, layout: Layout, force: bool) -> list[Step]:
    """Each pooled worktree: removed, but while a live build holds it (its lock tells, as
    a build that dies lets go of it), or while it holds a dead build's uncommitted work."""
    from agentfile.isolation.pool import Pool

    pool = Pool(git, layout.pool_dir, size=1)
    steps: list[Step] = []
    for entry in pool.ids():
        path = str(pool.path_of(entry))
        lease = pool.claim(entry)
        if lease is None:
            steps.append(Step("pooled worktree", path, "keep", "in use by a running build"))
            continue
        try:
            user = lease.info.get("user") or {}
            step = _judge_worktree(git, lease.path, force) if user else \
                Step("worktree", path, "remove")
        finally:
            pool.let_go(lease)
        step.kind, step.run = "pooled worktree", str(user.get("run", ""))
        if user and step.action == "keep":
            step.why = f"left by {user.get('target')} of build {user.get('run')}: {step.why}"
        steps.append(step)
    return steps


def _judge_worktree(git: Git | None, path: Path, force: bool) -> Step:
    if not path.exists():
        return Step("worktree", str(path), "remove", "already gone")
    if git is not None:
        try:
            dirty = git.dirty_files(path, untracked=True)
        except NotAWorktree as err:
            if force:
                return Step("worktree", str(path), "remove", "its .git was gone")
            return Step("worktree", str(path), "keep", f"{err}; --force removes it")
        if dirty and not force:
            return Step("worktree", str(path), "keep",
                        f"{len(dirty)} uncommitted change(s); --force removes it")
    return Step("worktree", str(path), "remove")


def _judge_branch(git: Git | None, name: str, force: bool) -> Step:
    if git is None or not git.branch_exists(name):
        return Step("branch", name, "remove", "already gone")
    if not force and not git.merged_anywhere(name):
        return Step("branch", name, "keep",
                    "holds commits no other branch contains; merge it, or --force")
    return Step("branch", name, "remove")


def _remove(layout: Layout, store: Store, step: Step) -> None:
    if step.kind == "pooled worktree":
        _remove_pooled(layout, store, step)
    elif step.kind == "worktree":
        git = _git(layout)
        if git is not None:
            git.remove_worktree(Path(step.name))
        store.resource_removed("worktree", step.name)
    elif step.kind == "branch":
        git = _git(layout)
        if git is not None and git.branch_exists(step.name):
            git.delete_branch(step.name)
        store.resource_removed("branch", step.name)
    elif step.kind == "tmux":
        from agentfile.isolation import tmux

        tmux.kill_session(step.name, owner=tmux.owner(layout.root, step.run))
        store.resource_removed("tmux", step.name)
    elif step.kind == "lock":
        with contextlib.suppress(OSError):
            Path(step.name).write_text("")


def _remove_pooled(layout: Layout, store: Store, step: Step) -> None:
    from agentfile.isolation.pool import Pool

    git = _git(layout)
    if git is None:
        return
    pool = Pool(git, layout.pool_dir, size=1)
    lease = pool.claim(Path(step.name).name)
    if lease is None:  # a build took it since: it stays
        step.action, step.why = "keep", "in use by a running build"
        return
    pool.drop(lease)
    store.resource_removed("worktree", step.name)


def _prune(layout: Layout) -> None:
    git = _git(layout)
    if git is not None:
        git.prune_worktrees()
    # The folders that held a run's worktrees, once empty (deepest first); a worktree still
    # there (it has a .git) is not walked into.
    folders: list[str] = []
    for top, subfolders, names in os.walk(layout.state_dir / "worktrees"):
        if ".git" in names or ".git" in subfolders:
            subfolders.clear()
            continue
        folders.extend(os.path.join(top, name) for name in subfolders)
    for folder in reversed(folders):
        with contextlib.suppress(OSError):  # not empty: something is still in it
            os.rmdir(folder)


def _as_json(steps: list[Step], *, dry_run: bool) -> list[dict[str, str]]:
    """`clean --json`: each thing removed (or that would be, with -n) or kept, and why."""
    done = "would remove" if dry_run else "removed"
    return [{"kind": s.kind, "name": s.name,
             "action": done if s.action == "remove" else "kept", "why": s.why} for s in steps]


def _report(steps: list[Step], *, dry_run: bool) -> None:
    removed = [s for s in steps if s.action == "remove"]
    kept = [s for s in steps if s.action == "keep"]
    verb = "would remove" if dry_run else "removed"
    for step in removed:
        note = f" ({step.why})" if step.why else ""
        print(f"{verb} {step.kind} {step.name}{note}")
    for step in kept:
        print(f"kept {step.kind} {step.name}: {step.why}")
    if not steps:
        print("nothing to clean")

"""After a build died (SIGKILL, a power loss): what the next build takes over from it.

A worktree or branch target's work is recorded the moment its commit exists (the table
`finished_work`), so a build killed after that point left work, not a reason to pay again:
the next build merges it from its branch, when the target's fingerprint is still the one it
was built for. A target that was running when the build died runs again, resuming its agent's
session where the CLI keeps sessions by id (Claude Code, Codex, Gemini CLI). What the dead
build could no longer do itself is done here: its worktrees' leftovers are committed on their
branches (nothing is lost) and the worktrees removed (pooled ones go back to the pool), a
branch target's checkout is switched back to the user's branch, and what its agents spent is
written to the per-user ledger once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agentfile import agents
from agentfile.agents.base import AgentRequest, Usage
from agentfile.errors import AgentfileError, UsageError
from agentfile.manifest.load import LoadedManifest
from agentfile.records.events import read_events, unfinished
from agentfile.records.layout import Layout, RunFiles
from agentfile.records.state import FinishedWork, Store

if TYPE_CHECKING:
    from agentfile.git import Git

# CLIs that keep a session under the user's home and resume it by id from any directory.
# (aider keeps its chat history in the run's folder: a new build does not have it.)
RESUMABLE = ("claude", "codex", "gemini")


@dataclass
class Recovery:
    """What dead builds left for this one."""

    work: dict[str, FinishedWork] = field(default_factory=dict)  # finished, not landed
    sessions: dict[str, str] = field(default_factory=dict)  # cut short: the session to resume
    cut_short: dict[str, str] = field(default_factory=dict)  # target -> the dead run


def recover(store: Store, layout: Layout, loaded: LoadedManifest, run_id: str, *,
            newly_dead: list[str]) -> Recovery:
    """Take over what the builds that died left (`newly_dead`: those this build found and
    closed; it holds the lock, so no other build is alive)."""
    dead = store.dead_runs(besides=run_id)
    if not dead:
        return Recovery()
    if newly_dead:
        _pay_once(store, loaded, newly_dead)
    git = _git_or_none(layout.root)
    if git is not None:
        _give_back_checkout(store, git, loaded, dead)
        _put_away_worktrees(store, git, layout, loaded, dead)
    recovery = Recovery(work=store.recoverable_work(dead))
    for run in reversed(dead):  # the newest last: its word stays
        files = RunFiles(layout.run_dir(run))
        for name in unfinished(read_events(files.events)):
            if name in loaded.graph.targets and name not in recovery.work:
                recovery.cut_short[name] = run
                session = _session(loaded, files, name, run)
                if session is not None:
                    recovery.sessions[name] = session
    return recovery


def _git_or_none(root: Path) -> Git | None:
    from agentfile.git import Git

    try:
        return Git(root)
    except UsageError:
        return None


def _pay_once(store: Store, loaded: LoadedManifest, runs: list[str]) -> None:
    """What a dead build's finished agents spent, in the per-user ledger, where its build
    died before writing it (it writes it as it merges)."""
    owed = [w for run in runs for w in store.finished_work(run) if w.cost_usd > 0]
    if not owed:
        return
    from agentfile.records.ledger import Ledger

    ledger = Ledger()
    try:
        for work in owed:
            if ledger.recorded(run=work.run, target=work.target):
                continue
            target = loaded.graph.targets.get(work.target)
            agent_name, agent = loaded.agent_definition(target) if target else (None, None)
            for attempt in work.attempts:
                ledger.record(repo=str(loaded.root), run=work.run, target=work.target,
                              agent=agent_name, provider=agent.provider if agent else None,
                              cost_usd=float(attempt.get("cost_usd") or 0),
                              tokens=int(attempt.get("tokens") or 0))
    finally:
        ledger.close()


def _give_back_checkout(store: Store, git: Git, loaded: LoadedManifest,
                        dead: list[str]) -> None:
    """What the dead build's `finally` would have done for a branch target that had the
    checkout: what it left committed on its branch as work in progress, and the checkout
    switched back to where the build found it (HEAD's reflog says where it switched from).
    Untracked files older than the build are the user's: never committed, left where they
    are, as the build would have."""
    from agentfile.git import untracked_files

    current = git.current_branch()
    if current is None:
        return  # detached: not on a target's branch
    for run in dead:
        for resource in store.resources(run_id=run):
            target = resource["target"]
            if resource["kind"] != "branch" or resource["name"] != current or target is None:
                continue
            back = git.switched_from(current)
            started = (store.run(run) or {}).get("started") or 0.0
            known = loaded.graph.targets.get(target)
            mine = [name for name in untracked_files(git.root)
                    if _modified(git.root / name) < started]
            try:
                if back is None:
                    raise AgentfileError("git's reflog does not say")
                git.commit_all(git.root, f"agentfile: work in progress of {target} (its "
                                         f"build {run} died)",
                               exclude=[*(known.definition.copy_files if known else ()),
                                        *mine])
                git.restore_checkout(back)
            except AgentfileError as err:
                raise UsageError(
                    f"your checkout is on branch {current}, where build {run} ran "
                    f"'{target}' when it died, and agentfile could not switch it back "
                    f"({err}); commit what is there (`git commit -am wip`), check out your "
                    "own branch again (`git checkout main`, say) and build again: the "
                    "target's work stays on its branch") from None
            return


def _modified(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _put_away_worktrees(store: Store, git: Git, layout: Layout, loaded: LoadedManifest,
                        dead: list[str]) -> None:
    """What the dead build's `finally` would have done: each worktree's leftovers committed
    on its branch as work in progress (never the files its `copy` put there, a `.env`), the
    worktree removed or given back to the pool (its branch stays)."""
    from agentfile.isolation.pool import put_back_dead

    for run in dead:
        resources = store.resources(run_id=run)
        branches = {r["target"]: r["name"] for r in resources if r["kind"] == "branch"}
        for resource in resources:
            if resource["kind"] != "worktree":
                continue
            path, target = Path(resource["name"]), resource["target"]
            try:
                if path.exists() and target in branches:
                    known = loaded.graph.targets.get(target)
                    git.commit_all(path, f"agentfile: work in progress of {target} (its "
                                         f"build {run} died)",
                                   exclude=known.definition.copy_files if known else ())
                    git.keep_head_on(path, branches[target])
                if not put_back_dead(git, layout.pool_dir, path):
                    git.remove_worktree(path)
            except Exception:  # git refused: the worktree stays, for `clean` to report
                continue
            store.resource_removed("worktree", resource["name"])


def _session(loaded: LoadedManifest, files: RunFiles, name: str, run: str) -> str | None:
    """The session a cut-short agent target's CLI named in its stream, to resume it."""
    _, agent = loaded.agent_definition(loaded.graph.targets[name])
    if agent is None or agent.provider not in RESUMABLE:
        return None
    stream = files.raw(name) if files.raw(name).is_file() else files.log(name)
    try:
        lines = stream.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    chosen = agents.provider(agent.provider)
    # The dead run's own files: the provider's per-attempt state is keyed by them, so this
    # reading never meets a live attempt's.
    request = AgentRequest(name, run, agent, files.dir, files.prompt(name), files.result(name),
                           files.usage(name), 1)
    usage = Usage()
    for line in lines:
        chosen.parse_line(line, usage, request)
    return chosen.verdict(request, None, []).session

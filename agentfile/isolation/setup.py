"""`setup` (e.g. `npm ci`): what a worktree needs before a target can run in it.

It runs in the target's worktree before the target: in a fresh worktree every time, in a
pooled one (`worktrees = reuse`) once, and again only when its fingerprint changes: the
command itself and the content of its `setup_inputs` (`package-lock.json`) as the target's
base has them. What it makes must be files git ignores (node_modules, .venv): those are what
a pooled worktree keeps from one target to the next, and a file it left that git would see is
refused, as it would be committed as the target's work or removed before the next target.
Its output goes to the run's `setup/TARGET.log`. When it fails, the target fails, saying so;
the worktree forgets its fingerprint, so that the next target runs setup again.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentfile.fingerprint import expand_globs, file_digest
from agentfile.isolation.base import Workspace
from agentfile.manifest.expand import ConcreteTarget
from agentfile.manifest.load import LoadedManifest
from agentfile.run import process
from agentfile.run.runner import Job, environment

if TYPE_CHECKING:
    from agentfile.git import Git

SHOWN_FILES = 5  # files named in the message of a setup that left files git sees


@dataclass(frozen=True)
class Setup:
    """The setup a target needs: its own, else its agent's, else the options'."""

    command: str
    inputs: tuple[str, ...] = ()

    def fingerprint(self, worktree: Path) -> str:
        """The command and its inputs' content in the worktree: when setup must run again."""
        digest = hashlib.sha256(self.command.encode())
        for name in expand_globs(list(self.inputs), worktree):
            digest.update(f"\0{name}\0{file_digest(worktree / name)}".encode())
        return digest.hexdigest()


def setup_of(loaded: LoadedManifest, target: ConcreteTarget) -> Setup | None:
    definition, options = target.definition, loaded.manifest.options
    _, agent = loaded.agent_definition(target)
    command = definition.setup or (agent.setup if agent else None) or options.setup
    if not command:
        return None
    inputs = next((i for i in (definition.setup_inputs, agent.setup_inputs if agent else None,
                               options.setup_inputs) if i is not None), [])
    return Setup(command, tuple(inputs))


def run_setup(setup: Setup, job: Job, workspace: Workspace, git: Git, log: Path, *,
              shown: str | None = None) -> tuple[str, str | None]:
    """Run it in the workspace, its output into `log` (`shown`: how to name that log to the
    user, when it is not a path of theirs): ("succeeded", None), or the status and why."""
    deadline = None
    if job.budget is not None and job.budget.time is not None:  # the target's own limit
        deadline = time.monotonic() + job.budget.time
    header = f"=== agentfile: setup at {time.strftime('%H:%M:%S')}: {setup.command}"
    launch = process.Launch(setup.command, workspace.path, environment(job, workspace, {}),
                            deadline, job.tag, header)
    log.parent.mkdir(parents=True, exist_ok=True)
    outcome = process.run(launch, log=log, cancel=job.cancel, known=job.known)
    said, where = f"setup `{setup.command}`", shown or str(log)
    if outcome.stopped is not None:
        return outcome.stopped, f"{said} was stopped ({outcome.stopped}); its output: {where}"
    if outcome.exit_code != 0:
        tail = "\n".join(outcome.tail[-10:])
        return "failed", (f"{said} exited with {outcome.exit_code}; its output: {where}"
                          + (f"\n{tail}" if tail else ""))
    from agentfile.git import caches

    copied = set(job.target.definition.copy_files)
    seen = [n for n in git.dirty_files(workspace.path, untracked=True) if n not in copied]
    left = set(caches(seen))  # Python's caches are never anyone's work
    seen = [n for n in seen if n not in left and not any(n.startswith(f"{c}/") for c in left)]
    if seen:
        shown = ", ".join(seen[:SHOWN_FILES]) + (" …" if len(seen) > SHOWN_FILES else "")
        return "failed", (f"{said} changed files git does not ignore ({shown}): what setup "
                          "makes must be ignored (.gitignore), as node_modules or .venv are")
    return "succeeded", None

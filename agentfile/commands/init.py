"""`agentfile init`: write a commented starter Agentfile that `agentfile check` accepts."""

from __future__ import annotations

from pathlib import Path

from agentfile.errors import EXIT_OK, UsageError
from agentfile.manifest.locate import MANIFEST_NAMES

STARTER = '''\
# Agentfile: make for coding agents. `agentfile check` validates it, `agentfile plan`
# shows the schedule, `agentfile build` runs it. Language reference: the agentfile README.

options:
    jobs = 2                        # at most two targets at once
    agent = claude                  # the default agent for prompt targets
    isolation = worktree            # each agent works in its own git worktree
    budget = $5, 1h                 # this whole build may spend at most $5 and one hour

# A named agent: a provider (claude, codex, gemini, aider, command) with settings.
agent reviewer: claude
    args = ["--max-turns", "20"]

# A target: NAME ':' DEPENDENCIES, then its attributes.
docs:
    description = "Write the project's README"
    prompt = """
        Read the code in this repository and write a README.md that explains what it is,
        how to install it and how to run its tests.
        """
    budget = $1, 10m

review: docs
    description = "Review what the docs target wrote"
    agent = reviewer
    isolation = none
    prompt = "Review this change and list anything unclear:\\n{deps.docs.diff}"

check: docs
    description = "A shell command: the README must exist"
    run = "test -s README.md"
'''


def init(*, file: str | None, force: bool) -> int:
    path = Path(file or "Agentfile")
    if path.exists() and not force:
        raise UsageError(f"{path} exists (use --force to overwrite it)")
    if file is None and not force:  # an Agentfile would take the place of the user's YAML
        other = next((n for n in MANIFEST_NAMES if Path(n).exists()), None)
        if other is not None:
            raise UsageError(f"{other} is this folder's manifest already; an Agentfile here "
                             "would be read instead of it (use --force to write one anyway)")
    path.write_text(STARTER, encoding="utf-8")
    print(f"wrote {path}; next: agentfile check && agentfile plan")
    return EXIT_OK

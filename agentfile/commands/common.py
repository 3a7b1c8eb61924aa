"""What several commands share: loading the manifest, printing JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentfile.errors import UsageError
from agentfile.manifest.locate import manifest_path

if TYPE_CHECKING:  # the model (pydantic) loads only for commands that read the manifest
    from agentfile.manifest.expand import ConcreteTarget
    from agentfile.manifest.load import LoadedManifest


def load_manifest(file: str | None, *,
                  overrides: Mapping[str, str] | None = None) -> LoadedManifest:
    from agentfile.manifest.load import load

    return load(manifest_path(file), overrides=overrides)


def shown_targets(loaded: LoadedManifest, names: Sequence[str]) -> list[ConcreteTarget]:
    """The targets named on the command line and everything they need, in file order; all
    of them when none is named (`list` and `graph` show what `build NAME` would run)."""
    if not names:
        return list(loaded.targets)
    from agentfile.graph import select

    keep = set(select(loaded.graph, loaded.resolve(names)))
    return [t for t in loaded.targets if t.name in keep]


def missing_clis(loaded: LoadedManifest, names: list[str]) -> list[str]:
    """Every agent CLI these targets need that cannot run here, one line each, naming the
    targets that need it: all at once, not one per try."""
    from agentfile import agents

    needed: dict[str, list[str]] = {}
    for name in names:
        _, agent = loaded.agent_definition(loaded.graph.targets[name])
        if agent is not None:
            needed.setdefault(agent.provider, []).append(name)
    lines = []
    for provider, targets in needed.items():
        try:
            agents.provider(provider).check()
        except UsageError as err:
            shown = ", ".join(targets[:3]) + (f" and {len(targets) - 3} more"
                                              if len(targets) > 3 else "")
            lines.append(f"{err} (for {'target' if len(targets) == 1 else 'targets'} {shown})")
    return lines


def sandbox_problem(loaded: LoadedManifest, names: list[str]) -> str | None:
    """Why the sandbox some of these targets ask for cannot be made here (bwrap missing, or
    refused by the kernel), with the fix, naming the targets; None when it can or none asks."""
    asking = [n for n in names if loaded.sandboxed(loaded.graph.targets[n])]
    if not asking:
        return None
    from agentfile.isolation.sandbox import why_not

    problem = why_not()
    if problem is None:
        return None
    shown = ", ".join(asking[:3]) + (f" and {len(asking) - 3} more" if len(asking) > 3 else "")
    return f"{problem} (for {'target' if len(asking) == 1 else 'targets'} {shown})"


def write_output(file: str, text: str) -> None:
    """`-o FILE` / `--html FILE`: a place that cannot take the file is the user's to fix."""
    try:
        Path(file).write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write {file}: {err.strerror or err}") from None


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


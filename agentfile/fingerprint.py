"""Fingerprints for the up-to-date check (SPEC 5.4).

A target's fingerprint covers its definition after expansion, its agent's definition, the
content of its `inputs`, `context` and prompt files, and its dependencies' fingerprints.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from agentfile.manifest.expand import ConcreteTarget
from agentfile.manifest.model import Agent, FileRef


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()


def expand_globs(patterns: list[str], base: Path) -> list[str]:
    """Files matched by globs relative to `base`, sorted (missing literal files kept)."""
    found: set[str] = set()
    for pattern in patterns:
        matches = globlib.glob(pattern, root_dir=base, recursive=True)
        found.update(m for m in matches if (base / m).is_file())
        if not globlib.has_magic(pattern):
            found.add(pattern)
    return sorted(found)


def fingerprint(target: ConcreteTarget, *, agent: Agent | None, base: Path,
                deps: Mapping[str, str]) -> str:
    """The hex digest of everything the target's result depends on."""
    definition = target.definition
    files = expand_globs(definition.inputs, base) + list(definition.context)
    if isinstance(definition.prompt, FileRef):
        files.append(definition.prompt.file)
    payload = {
        "name": target.name,
        "definition": definition.model_dump(mode="json", by_alias=True, exclude={"deps"}),
        "bindings": dict(target.bindings),
        "agent": agent.model_dump(mode="json") if agent else None,
        "files": {name: _file_digest(base / name) for name in files},
        "deps": {name: deps.get(name, "") for name in target.deps},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def outputs_exist(target: ConcreteTarget, base: Path) -> bool:
    """Every declared output glob matches at least one file."""
    for pattern in target.definition.outputs:
        if globlib.has_magic(pattern):
            if not any((base / m).is_file() or (base / m).is_dir()
                       for m in globlib.glob(pattern, root_dir=base, recursive=True)):
                return False
        elif not (base / pattern).exists():
            return False
    return True


def up_to_date(target: ConcreteTarget, current: str, recorded: str | None, *, force: bool,
               done_before: frozenset[str], deps_ran: bool, base: Path) -> bool:
    """SPEC 5.4: the recorded fingerprint is unchanged and the outputs exist; `-B` and
    `always` say no; so does a dependency that ran in this build (as make would)."""
    if target.name in done_before:
        return True
    if force or target.definition.always or deps_ran:
        return False
    return recorded == current and outputs_exist(target, base)

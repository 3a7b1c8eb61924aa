"""Fingerprints for the up-to-date check (SPEC 5.4).

A target's fingerprint covers its definition after expansion, its agent's definition, the
content of its `inputs`, `context` and prompt files, and its dependencies' fingerprints.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agentfile.manifest.expand import ConcreteTarget
from agentfile.manifest.load import LoadedManifest
from agentfile.manifest.model import Agent, FileRef
from agentfile.regular import digest_source

if TYPE_CHECKING:  # GitPython loads only when a build has merged work to ask about
    from agentfile.git import Git

# One encoder for every fingerprint (json.dumps with options builds one per call); the text it
# writes is json.dumps(payload, sort_keys=True, separators=(",", ":")), as before.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def file_digest(path: Path) -> str:
    """A file's content as a hex digest; "missing" for a file that is not there or is not
    regular (targets' inputs, and setup's)."""
    digest = hashlib.sha256()
    fd = digest_source(path)  # a device or a FIFO would never end, or block
    if fd is None:
        return "missing"
    try:
        with open(fd, "rb") as handle:
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
        "files": {name: file_digest(base / name) for name in files},
        "deps": {name: deps.get(name, "") for name in target.deps},
    }
    text = _encode(payload)
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


def freshness(loaded: LoadedManifest, names: Sequence[str], recorded: Mapping[str, str], *,
              force: bool = False, done_before: frozenset[str] = frozenset(),
              in_checkout: Callable[[str], bool] | None = None) -> dict[str, bool]:
    """Whether each target would be up to date if a build ran now (`-n`, `list`): a target
    that would run makes its dependents run too, and so does one whose merged work the
    checkout does not hold (`in_checkout`)."""
    fps: dict[str, str] = {}
    would_run: set[str] = set()
    fresh: dict[str, bool] = {}
    for name in names:
        target = loaded.graph.targets[name]
        _, agent = loaded.agent_definition(target)
        fps[name] = fingerprint(target, agent=agent, base=loaded.path.parent,
                                deps={d: fps.get(d, "") for d in target.deps})
        fresh[name] = up_to_date(target, fps[name], recorded.get(name), force=force,
                                 done_before=done_before,
                                 deps_ran=any(d in would_run for d in target.deps),
                                 base=loaded.path.parent)
        if fresh[name] and in_checkout is not None and not in_checkout(name):
            fresh[name] = False
        if not fresh[name]:  # a group too: what runs under it makes its dependents run
            would_run.add(name)
    return fresh


def landed(tips: Mapping[str, str], git: Git, commit: str) -> Callable[[str], bool]:
    """Whether `commit` holds each target's merged work (its recorded tip): one git call
    for every target."""
    unlanded = git.not_in(tips.values(), commit)
    return lambda name: tips.get(name) not in unlanded


def work_in_checkout(loaded: LoadedManifest,
                     tips: Mapping[str, str]) -> Callable[[str], bool] | None:
    """`landed` against the checkout's HEAD (for `-n` and `list`); None with no tips."""
    if not tips:
        return None
    from agentfile.git import Git

    git = Git(loaded.root)
    return landed(tips, git, git.head_commit())


def up_to_date(target: ConcreteTarget, current: str, recorded: str | None, *, force: bool,
               done_before: frozenset[str], deps_ran: bool, base: Path) -> bool:
    """SPEC 5.4: the recorded fingerprint is unchanged and the outputs exist; `-B` and
    `always` say no; so does a dependency that ran in this build (as make would)."""
    if target.name in done_before:
        return True
    if force or target.definition.always or deps_ran:
        return False
    if target.kind == "group":
        return True  # nothing of its own: up to date when its dependencies are
    return recorded == current and outputs_exist(target, base)

"""Find, read, parse or load, merge includes, expand, validate, fan out: file -> manifest.

Every problem on the way becomes a Problem with a file, line and column; they are raised
together as one ManifestError. Nothing after this module sees raw text.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfile import regular
from agentfile.errors import ManifestError, Problem, Span, UsageError, suggest
from agentfile.graph import CycleError, Graph, build_graph
from agentfile.manifest import fastparse
from agentfile.manifest.cache import cached
from agentfile.manifest.envfile import read_dotenv
from agentfile.manifest.expand import ConcreteTarget, expand_variables, fanout_stem, span_for
from agentfile.manifest.locate import MANIFEST_LIMIT, repository_root
from agentfile.manifest.lower import SpanTable, lower
from agentfile.manifest.model import Agent, DirRef, Manifest
from agentfile.manifest.semantics import Checker
from agentfile.manifest.text import indented_start
from agentfile.manifest.validate import validate

_MERGED = ("vars", "options")
_UNIQUE = {"targets": "target", "agents": "agent"}
FREEZE_TARGETS = 1000  # from this size on, a loaded manifest is frozen out of the cyclic GC


@dataclass(frozen=True, slots=True)
class LoadedManifest:
    """A valid manifest, its concrete targets and graph, and where everything came from."""

    path: Path
    root: Path
    manifest: Manifest
    targets: tuple[ConcreteTarget, ...]
    graph: Graph
    spans: SpanTable
    # Run targets that come after a worktree or branch target's work: see isolation_of.
    after_merged_work: frozenset[str] = frozenset()
    # `options.dotenv`'s variables, for every target's environment (under the process's own).
    dotenv: Mapping[str, str] = field(default_factory=dict)

    def agent_of(self, target: ConcreteTarget) -> str | None:
        """The agent that runs an agent target: its own, the default, else claude."""
        if target.kind != "agent":
            return None
        return target.definition.agent or self.manifest.options.agent or "claude"

    def agent_definition(self, target: ConcreteTarget) -> tuple[str | None, Agent | None]:
        """The agent's name and definition (a bare provider name is an agent with defaults)."""
        name = self.agent_of(target)
        if name is None:
            return None, None
        return name, self.manifest.agents.get(name) or Agent.model_validate({"provider": name})

    def agent_label(self, target: ConcreteTarget) -> str | None:
        """The agent as a person reads it: `claude`, or `migrator (claude)` for a named one."""
        name, agent = self.agent_definition(target)
        if name is None or agent is None or agent.provider == name:
            return name
        return f"{name} ({agent.provider})"

    def resources_of(self, target: ConcreteTarget) -> dict[str, float]:
        """The extra Ray resources the target asks for: its agent's, then its own."""
        _, agent = self.agent_definition(target)
        return {**(agent.resources if agent else {}), **target.definition.resources}

    def checks_merged_work(self, target: ConcreteTarget) -> bool:
        """A run target in a worktree only by default, because it comes after agents' work
        (`test: migrate`): a check on that work, whose leftovers are not kept."""
        return target.definition.isolation is None and target.name in self.after_merged_work

    def in_tmux(self, target: ConcreteTarget) -> bool:
        """Whether the target runs in a tmux window: its own `terminal`, else the options'."""
        return target.kind != "group" and (
            target.definition.terminal or self.manifest.options.terminal) == "tmux"

    def isolation_of(self, target: ConcreteTarget) -> str | DirRef:
        """Agent targets default to `options.isolation` (else worktree), others to none; but
        a run target that comes after a worktree or branch target's work (through
        dependencies that, like it, chose no isolation) defaults to worktree too: it must see
        that work, which reaches the user's checkout only when the build lands (SPEC 6.1)."""
        if target.definition.isolation is not None:
            return target.definition.isolation
        if target.kind == "agent":
            return self.manifest.options.isolation or "worktree"
        return "worktree" if target.name in self.after_merged_work else "none"

    def sandboxed(self, target: ConcreteTarget) -> bool:
        """Whether the target runs under bubblewrap: its own `sandbox`, else its agent's,
        else (for agent targets) the options'; a run target only by its own."""
        own = target.definition.sandbox
        if own is not None or target.kind != "agent":
            return bool(own)
        _, agent = self.agent_definition(target)
        if agent is not None and agent.sandbox is not None:
            return agent.sandbox
        return bool(self.manifest.options.sandbox)

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Command-line target names -> concrete names (a fan-out name means all of it)."""
        by_group: dict[str, list[str]] = {}
        for target in self.targets:
            by_group.setdefault(target.name, []).append(target.name)
            if target.template != target.name:
                by_group.setdefault(target.template, []).append(target.name)
                stem = fanout_stem(target.template)
                if stem:
                    by_group.setdefault(stem, []).append(target.name)
        out: list[str] = []
        for name in names:
            if name not in by_group:
                raise UsageError(f"no target '{name}'{suggest(name, by_group)}")
            out.extend(by_group[name])
        return list(dict.fromkeys(out))


def form_of(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(suffix, "agentfile")


# Texts to read instead of the files at these (resolved) paths: an editor's unsaved buffers.
Unsaved = Mapping[Path, str]


def read_text(path: Path, display: str,
              unsaved: Unsaved | None = None) -> tuple[str | None, list[Problem]]:
    if unsaved and path.resolve() in unsaved:
        return unsaved[path.resolve()].removeprefix("\ufeff").replace("\r\n", "\n"), []
    try:
        raw = regular.read_bytes(path, limit=MANIFEST_LIMIT)
    except OSError as err:
        return None, [Problem(Span(display, 1, 1), f"cannot read the manifest: {err.strerror}")]
    try:
        # Editors may add a BOM, and Windows ones end lines with CRLF: a """ block must not
        # keep the \r of each line.
        return raw.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n"), []
    except UnicodeDecodeError as err:
        before = raw[: err.start]
        line = before.count(b"\n") + 1
        column = len(before.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace")) + 1
        return None, [Problem(Span(display, line, column),
                              f"not UTF-8 text (byte 0x{raw[err.start]:02x})")]


@dataclass
class Source:
    """A manifest's document as read, before variables and validation."""

    doc: dict[str, Any] = field(default_factory=dict)
    spans: SpanTable = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    damaged: set[str] = field(default_factory=set)  # targets/agents with a problem already


def read_document(path: Path, display: str | None = None, *,
                  unsaved: Unsaved | None = None) -> Source:
    """One file (no includes followed) -> its data-form document, spans and problems."""
    shown = display or str(path)
    text, problems = read_text(path, shown, unsaved)
    if text is None:
        return Source(problems=[Problem(p.span, p.message, blocking=True) for p in problems])
    form = form_of(path)
    # Large manifests are parsed once per content: the spans name the file as shown.
    return cached(text, kind=f"{form}\0{shown}", compute=lambda: _read(text, form, shown),
                  keep=lambda source: not source.problems)


def _read(text: str, form: str, shown: str) -> Source:
    if form == "agentfile":
        document = fastparse.parse(text, shown)
        problems: list[Problem] = []
        if document is None:  # a mistake, or a rare form: lark reads it and says what is wrong
            from agentfile.manifest.parse import parse

            document, problems = parse(text, shown)
        lowering = lower(document)
        return Source(lowering.doc, lowering.spans,
                      indented_start(text, shown) + problems + lowering.problems,
                      lowering.damaged)
    # The data forms' reader loads PyYAML, which an Agentfile never needs (a tenth of the
    # start-up of a command that reads one).
    from agentfile.manifest.dataform import load_json, load_yaml

    data, spans, problems = (load_yaml if form == "yaml" else load_json)(text, shown)
    if data is not None and not isinstance(data, dict):
        problems.append(Problem(spans.get((), Span(shown, 1, 1)),
                                "a manifest is a mapping with targets, agents and options",
                                blocking=True))
        data = None
    if problems and data is None:
        problems = [Problem(p.span, p.message, blocking=True) for p in problems]
    return Source(data or {}, spans, problems)


def display_path(path: Path) -> str:
    """Relative to the current directory when below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def read_with_includes(path: Path, stack: tuple[Path, ...] = (),
                       seen: set[Path] | None = None, *,
                       unsaved: Unsaved | None = None) -> Source:
    """A file with its includes merged in: included files first, this file on top. A file
    included from two places (a diamond) is merged once, where it is first included."""
    seen = set() if seen is None else seen
    seen.add(path.resolve())
    source = read_document(path, display_path(path), unsaved=unsaved)
    merged = Source(problems=source.problems, damaged=source.damaged)
    includes = source.doc.pop("include", [])
    if not isinstance(includes, list):
        merged.problems.append(Problem(span_for(source.spans, ("include",)),
                                       "include is a list of file names", blocking=True))
        includes = []
    for index, relative in enumerate(includes):
        where = span_for(source.spans, ("include", index))
        target = (path.parent / str(relative)).resolve()
        if target in (*stack, path.resolve()):
            chain = " -> ".join(display_path(p) for p in (*stack, path.resolve(), target))
            merged.problems.append(Problem(where, f"include cycle: {chain}", blocking=True))
            continue
        if not target.is_file() and not (unsaved and target in unsaved):
            merged.problems.append(Problem(where, f"cannot include '{relative}': no such file",
                                           blocking=True))
            continue
        if target in seen:
            continue  # merged already, through another include
        sub = read_with_includes(target, (*stack, path.resolve()), seen, unsaved=unsaved)
        merged.problems += sub.problems
        merged.damaged |= sub.damaged
        merged.problems += _merge(merged.doc, merged.spans, sub.doc, sub.spans)
    merged.problems += _merge(merged.doc, merged.spans, source.doc, source.spans)
    return merged


def _merge(into: dict[str, Any], into_spans: SpanTable, doc: Mapping[str, Any],
           spans: SpanTable) -> list[Problem]:
    problems: list[Problem] = []
    for key, value in doc.items():
        if key in _MERGED and isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        elif key in _UNIQUE and isinstance(value, dict) and isinstance(into.get(key), dict):
            for name, entry in value.items():
                if name in into[key]:
                    first = into_spans.get((key, name))
                    where = f" (first defined at {first.path}:{first.line})" if first else ""
                    problems.append(Problem(span_for(spans, (key, name)),
                                            f"duplicate {_UNIQUE[key]} '{name}'{where}"))
                else:
                    into[key][name] = entry
        else:
            into[key] = value
    if into_spans:
        for path, span in spans.items():
            into_spans.setdefault(path, span)
    else:  # the common case, a manifest without includes: one copy
        into_spans.update(spans)
    return problems


def _after_merged_work(manifest: Manifest, graph: Graph) -> frozenset[str]:
    """The run targets without an isolation of their own that depend, at any depth, on a
    target whose work is merged (worktree or branch isolation)."""
    merging: set[str] = set()  # targets whose work is merged, or that come after such work
    after: set[str] = set()
    for name in graph.order:  # dependencies first
        target = graph.targets[name]
        mode = target.definition.isolation
        if mode is None and target.kind == "agent":
            mode = manifest.options.isolation or "worktree"
        behind = any(d in merging for d in target.deps)
        if mode in ("worktree", "branch"):
            merging.add(name)
        elif mode is None and behind:
            merging.add(name)
            if target.kind == "run":
                after.add(name)
    return frozenset(after)


def load(path: Path, *, environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, str] | None = None, unsaved: Unsaved | None = None,
         long_lived: bool = False) -> LoadedManifest:
    """Load a manifest completely; raise ManifestError with every problem found.

    `overrides` set variables over the manifest's (`agentfile build NAME=VALUE`, as in
    make); `unsaved` texts are read instead of those files (an editor's buffers); a
    `long_lived` process (the language server) loads again and again: nothing is frozen."""
    # Loading builds many small objects that all live on: the cyclic garbage collector
    # would scan them again and again (a third of the time at 10k targets) for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        loaded = _load(path, environ, overrides or {}, unsaved)
    except RecursionError:
        raise ManifestError([Problem(Span(display_path(path), 1, 1),
                                     "the manifest nests values too deeply")]) from None
    finally:
        if enabled:
            gc.enable()
    if enabled and not long_lived and len(loaded.targets) >= FREEZE_TARGETS:
        # A large manifest lives as long as the process: moved out of the collector's sight,
        # its objects are not all walked by the first collection after the load (0.1 s at
        # 10k targets). Small ones are not worth it: a long process (a test run) loading
        # many would keep their cyclic garbage forever.
        gc.freeze()
    return loaded


def _load(path: Path, environ: Mapping[str, str] | None, overrides: Mapping[str, str],
          unsaved: Unsaved | None) -> LoadedManifest:
    path = path.resolve()
    source = read_with_includes(path, unsaved=unsaved)
    doc, spans, problems = source.doc, source.spans, source.problems
    if not problems and not doc.get("targets"):
        problems.append(Problem(Span(display_path(path), 1, 1), "the manifest defines no targets"))
    readable = not any(p.blocking for p in problems)
    _override(doc, spans, overrides)
    dotenv, more = read_dotenv(doc, spans, path.parent)
    problems += more
    process = os.environ if environ is None else environ
    expanded, more = expand_variables(doc, spans, {**dotenv, **process} if dotenv else process)
    problems += more
    manifest, more = validate(expanded, spans)
    problems += more
    invalid = set(source.damaged)
    if manifest is None and readable:
        # Check what is valid as well, so one bad target does not hide the others' problems.
        manifest, more_invalid = _valid_part(expanded, spans)
        invalid |= more_invalid
    if manifest is None or not readable:
        raise ManifestError(problems)
    root = repository_root(path)
    checker = Checker(manifest, spans, base=path.parent, root=root, invalid=invalid)
    targets = checker.run()
    problems += checker.problems
    try:
        graph = build_graph(targets if not problems else _known_deps_only(targets))
    except CycleError as err:  # reported beside the other problems, not instead of them
        first = next(t for t in targets if t.name == err.cycle[0])
        problems.append(Problem(span_for(spans, ("targets", first.template, "deps")),
                                str(err)))
    if problems:
        raise ManifestError(problems)
    return LoadedManifest(path, root, manifest, tuple(targets), graph, spans,
                          _after_merged_work(manifest, graph), dotenv)


def _override(doc: dict[str, Any], spans: SpanTable, overrides: Mapping[str, str]) -> None:
    """Command-line variables replace the manifest's of the same name, or add to them."""
    if not overrides:
        return
    variables = doc.setdefault("vars", {})
    if not isinstance(variables, dict):
        return  # a `vars` that is not a table is reported where it is written
    for name, value in overrides.items():
        variables[name] = value
        spans[("vars", name)] = Span("<command line>", 1, 1)


def _known_deps_only(targets: Sequence[ConcreteTarget]) -> list[ConcreteTarget]:
    """The targets with their dependencies on unknown names left out: enough to look for a
    cycle among the others while those are reported."""
    names = {t.name for t in targets}
    return [t if all(d in names for d in t.deps) else
            dataclasses.replace(t, deps=tuple(d for d in t.deps if d in names)) for t in targets]


def _valid_part(doc: dict[str, Any], spans: SpanTable) -> tuple[Manifest | None, set[str]]:
    """The manifest without the targets, agents and options that do not validate alone."""
    keep = {k: v for k, v in doc.items() if k not in _UNIQUE and k != "options"}
    invalid: set[str] = set()
    for section in _UNIQUE:
        entries = doc.get(section)
        keep[section] = {}
        for name, entry in (entries.items() if isinstance(entries, dict) else ()):
            if validate({section: {name: entry}}, spans)[1]:
                invalid.add(name)
                # Its dependencies still count: a cycle through it is reported too.
                if section == "targets" and isinstance(entry, dict) and "deps" in entry \
                        and "{" not in name and not validate(
                            {section: {name: {"deps": entry["deps"]}}}, spans)[1]:
                    keep[section][name] = {"deps": entry["deps"]}
            else:
                keep[section][name] = entry
    if "options" in doc and not validate({"options": doc["options"]}, spans)[1]:
        keep["options"] = doc["options"]
    manifest, problems = validate(keep, spans)
    return (None if problems else manifest), invalid

"""`agentfile graph`: the dependency graph after fan-out, as DOT, Mermaid or JSON."""

from __future__ import annotations

from collections.abc import Sequence

from agentfile.commands.common import load_manifest, print_json, shown_targets
from agentfile.errors import EXIT_OK
from agentfile.manifest.expand import ConcreteTarget

_DOT_SHAPES = {"agent": "box", "run": "ellipse", "group": "diamond"}
_MERMAID_SHAPES = {"agent": ("[", "]"), "run": ("([", "])"), "group": ("{", "}")}


def graph(*, file: str | None, fmt: str, targets: Sequence[str] = ()) -> int:
    """The whole graph, or the named targets and what they need."""
    loaded = load_manifest(file)
    shown = shown_targets(loaded, targets)
    names = {t.name for t in shown}  # a shown target's dependencies are shown too
    edges = [e for e in loaded.graph.edges if e[1] in names]
    if fmt == "json":
        print_json(as_json(shown, edges))
    elif fmt == "mermaid":
        print(as_mermaid(shown, edges))
    else:
        print(as_dot(shown, edges))
    return EXIT_OK


Edges = Sequence[tuple[str, str]]  # (dependency, dependent)


def as_json(targets: Sequence[ConcreteTarget], edges: Edges) -> dict[str, object]:
    """Nodes with name, kind, deps; edges [dependency, dependent]."""
    nodes = [{"name": t.name, "kind": t.kind, "deps": list(t.deps)} for t in targets]
    return {"nodes": nodes, "edges": [list(e) for e in edges]}


def _dot_id(name: str) -> str:
    """A DOT quoted ID: only `\"` is an escape there (a backslash before it, too)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def as_dot(targets: Sequence[ConcreteTarget], edges: Edges) -> str:
    lines = ["digraph agentfile {", "    rankdir=LR;"]
    for t in targets:
        lines.append(f"    {_dot_id(t.name)} [shape={_DOT_SHAPES[t.kind]}];")
    for dep, dependent in edges:
        lines.append(f"    {_dot_id(dep)} -> {_dot_id(dependent)};")
    lines.append("}")
    return "\n".join(lines)


def as_mermaid(targets: Sequence[ConcreteTarget], edges: Edges) -> str:
    ids = {t.name: f"n{i}" for i, t in enumerate(targets)}
    lines = ["graph LR"]
    for t in targets:
        open_, close = _MERMAID_SHAPES[t.kind]
        label = t.name.replace('"', "#quot;")
        lines.append(f'    {ids[t.name]}{open_}"{label}"{close}')
    for dep, dependent in edges:
        lines.append(f"    {ids[dep]} --> {ids[dependent]}")
    return "\n".join(lines)

"""`agentfile graph`: the dependency graph after fan-out, as DOT, Mermaid or JSON."""

from __future__ import annotations

from agentfile.commands.common import load_manifest, print_json
from agentfile.errors import EXIT_OK
from agentfile.manifest.load import LoadedManifest

_DOT_SHAPES = {"agent": "box", "run": "ellipse", "group": "diamond"}
_MERMAID_SHAPES = {"agent": ("[", "]"), "run": ("([", "])"), "group": ("{", "}")}


def graph(*, file: str | None, fmt: str) -> int:
    loaded = load_manifest(file)
    if fmt == "json":
        print_json(as_json(loaded))
    elif fmt == "mermaid":
        print(as_mermaid(loaded))
    else:
        print(as_dot(loaded))
    return EXIT_OK


def as_json(loaded: LoadedManifest) -> dict[str, object]:
    """The shape SPEC 5.1 fixes: nodes with name, kind, deps; edges [dependency, dependent]."""
    nodes = [{"name": t.name, "kind": t.kind, "deps": list(t.deps)} for t in loaded.targets]
    return {"nodes": nodes, "edges": [list(e) for e in loaded.graph.edges]}


def _dot_id(name: str) -> str:
    """A DOT quoted ID: only `\"` is an escape there (a backslash before it, too)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def as_dot(loaded: LoadedManifest) -> str:
    lines = ["digraph agentfile {", "    rankdir=LR;"]
    for t in loaded.targets:
        lines.append(f"    {_dot_id(t.name)} [shape={_DOT_SHAPES[t.kind]}];")
    for dep, dependent in loaded.graph.edges:
        lines.append(f"    {_dot_id(dep)} -> {_dot_id(dependent)};")
    lines.append("}")
    return "\n".join(lines)


def as_mermaid(loaded: LoadedManifest) -> str:
    ids = {t.name: f"n{i}" for i, t in enumerate(loaded.targets)}
    lines = ["graph LR"]
    for t in loaded.targets:
        open_, close = _MERMAID_SHAPES[t.kind]
        label = t.name.replace('"', "#quot;")
        lines.append(f'    {ids[t.name]}{open_}"{label}"{close}')
    for dep, dependent in loaded.graph.edges:
        lines.append(f"    {ids[dep]} --> {ids[dependent]}")
    return "\n".join(lines)

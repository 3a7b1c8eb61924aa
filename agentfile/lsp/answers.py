"""Hover, completion, go to definition and document symbols, from an Index.

What is under the cursor comes from the reader's span table (the same key paths that errors
point at); what the cursor is about to write comes from the text of its line and the lines
above it, since a half-written line does not parse. Every text shown comes from
`manifest.reference`, that is from the model's field descriptions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agentfile.lsp.index import Definition, Index, Place
from agentfile.manifest.lower import KeyPath
from agentfile.manifest.model import PROVIDERS
from agentfile.manifest.reference import BLOCKS, VALUES, attribute, example_text

_TABLES = ("budget", "throttle", "daily_budget", "price", "foreach")
# Attributes whose value names a target, an agent, or a file.
_TARGET_VALUED = ("deps", "default")
_FILE_VALUED = ("context", "inputs", "outputs", "copy", "file")
_BOOLEANS = ("always", "exclusive", "sandbox")
_VARIABLE_USE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DATA_KEY = re.compile(r"^(\s*)(?:-\s+)?[\"']?([A-Za-z0-9_.$/{}-]+)[\"']?\s*:(?:\s|$)")


@dataclass(frozen=True, slots=True)
class Hover:
    markdown: str
    place: Place | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    label: str
    kind: str  # attribute, target, agent, provider, value, keyword
    detail: str = ""
    documentation: str = ""


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    kind: str  # target, agent, options, variable
    place: Place
    selection: Place
    detail: str = ""
    children: tuple[Symbol, ...] = field(default_factory=tuple)


# -- where the cursor is --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spot:
    key: KeyPath | None
    on_value: bool
    word: str


def _spot(index: Index, line: int, column: int) -> _Spot:
    word = index.word_at(line, column)[0]
    text = index.lines[line] if 0 <= line < len(index.lines) else ""
    key = index.path_at(line, column)
    if key is None:
        # The data form gives keys their spans, not values: the key this line starts with.
        starts = [(span.column, k) for k, span in index.spans.items()
                  if k and span.line == line + 1 and span.column - 1 <= column]
        key = max(starts, key=lambda s: (s[0], len(s[1])))[1] if starts else None
    on_value = False
    if key is not None and isinstance(key[-1], str):
        sign = "=" if index.form == "agentfile" else ":"
        name_at = text.find(key[-1])
        split = text.find(sign, max(name_at, 0) + len(key[-1]))
        on_value = 0 <= split < column
    return _Spot(key, on_value or (key is not None and isinstance(key[-1], int)), word)


def _block(path: KeyPath) -> str | None:
    """Which block's attributes a key path's children are: targets, agents, options, budget..."""
    if not path:
        return "top level"
    if len(path) == 2 and path[0] in ("targets", "agents"):
        return str(path[0])
    if path == ("options",):
        return "options"
    if isinstance(path[-1], str) and path[-1] in _TABLES and len(path) >= 2:
        return path[-1]
    return None


def _attribute_of(key: KeyPath) -> tuple[KeyPath, str] | None:
    """The attribute a key path is, or is an item of: (its block's path, its name)."""
    named = [i for i, part in enumerate(key) if isinstance(part, str)]
    for i in reversed(named):
        if _block(key[:i]) is not None:
            return key[:i], str(key[i])
    return None


# -- hover ----------------------------------------------------------------------------------


def hover(index: Index, line: int, column: int) -> Hover | None:
    text = index.lines[line] if 0 <= line < len(index.lines) else ""
    for used in _VARIABLE_USE.finditer(text):
        if used.start() <= column <= used.end() and used.group(1) in index.variables:
            return _variable_hover(index, used.group(1))
    spot = _spot(index, line, column)
    key = spot.key
    if key is None:
        return _header_keyword(index, line, spot.word)
    if key[0] == "targets" and len(key) == 2:
        return _target_hover(index, str(key[1]))
    if key[0] == "targets" and len(key) >= 4 and key[2] == "deps":
        return _target_hover(index, str(index.value(key)))
    if key[0] == "agents" and len(key) == 2:
        return _agent_hover(index, str(key[1]))
    if key[0] == "vars" and len(key) == 2:
        return _variable_hover(index, str(key[1]))
    if key[0] == "include":
        return Hover(f"includes `{index.value(key)}`: its targets, agents and options come "
                     "first, this file's on top.")
    if key == ("options",):
        return Hover(f"**options**\n\n{BLOCKS['options'].__doc__}")
    found = _attribute_of(key)
    if found is None:
        return None
    block_path, name = found
    if spot.on_value:
        value = _value_hover(index, name, spot.word)
        if value is not None:
            return value
    return _attribute_hover(_block(block_path) or "", name)


def _variable_hover(index: Index, name: str) -> Hover:
    value = index.variables.get(name)
    return Hover(f"variable `{name}` = `{example_text(value)}`\n\n"
                 "`${" + name + "}` expands to it in any string; "
                 f"`agentfile build {name}=VALUE` sets another value for one build.")


def _header_keyword(index: Index, line: int, word: str) -> Hover | None:
    """`options` and `agent` in a block's header: the block's own documentation."""
    text = index.lines[line] if 0 <= line < len(index.lines) else ""
    if index.form != "agentfile" or text[:1].isspace():
        return None
    if word == "options" and text.startswith("options"):
        return Hover(f"**options**\n\n{BLOCKS['options'].__doc__}")
    if word == "agent" and text.startswith("agent "):
        return Hover(f"**agent**\n\n{BLOCKS['agents'].__doc__}")
    return None


def _attribute_hover(block: str, name: str) -> Hover | None:
    found = attribute(block, name)
    if found is None:
        return None
    where = {"targets": "target attribute", "agents": "agent attribute",
             "options": "option"}.get(block, f"{block} attribute")
    text = f"**{found.name}** ({where})\n\n{found.description}"
    if found.examples:
        text += "\n\nFor example: " + ", ".join(f"`{example_text(e)}`" for e in found.examples)
    return Hover(text)


def _value_hover(index: Index, name: str, word: str) -> Hover | None:
    if name == "provider" or (name == "agent" and word in PROVIDERS
                              and word not in index.agents):
        return Hover(f"provider **{word}**: {VALUES['provider'].get(word, '')}")
    if name == "agent" and word in index.agents:
        return _agent_hover(index, word)
    if name in _TARGET_VALUED and index.targets_named(word):
        return _target_hover(index, word)
    if name in VALUES:
        mode = "dir" if word.startswith("dir") else word
        if mode in VALUES[name]:
            return Hover(f"{name} **{mode}**: {VALUES[name][mode]}")
    return None


def _target_hover(index: Index, name: str) -> Hover | None:
    found = index.targets_named(name)
    if not found:
        return None
    if len(found) > 1 or found[0].name != name:
        listed = ", ".join(f"`{d.name}`" for d in found)
        return Hover(f"**{name}**: every instance of {listed}", found[0].place)
    return Hover(_describe_target(index, found[0]), found[0].place)


def _describe_target(index: Index, target: Definition) -> str:
    entry = target.entry
    if "prompt" in entry:
        agent = entry.get("agent") or "the default agent"
        kind = f"agent target, run by `{agent}`"
    elif "run" in entry:
        kind = f"run target: `{entry['run']}`"
    else:
        kind = "group target"
    lines = [f"**{target.name}**: {kind}"]
    if entry.get("description"):
        lines.append(str(entry["description"]))
    deps = entry.get("deps") or []
    if deps:
        lines.append("needs " + ", ".join(f"`{d}`" for d in deps))
    lines.append(f"defined at {_where(index, target.place)}")
    return "\n\n".join(lines)


def _agent_hover(index: Index, name: str) -> Hover | None:
    agent = index.agents.get(name)
    if agent is None:
        if name in PROVIDERS:
            return Hover(f"provider **{name}**: {VALUES['provider'][name]}")
        return None
    entry = agent.entry
    lines = [f"**agent {name}**: provider `{entry.get('provider')}`"
             + (f", model `{entry['model']}`" if entry.get("model") else "")]
    if entry.get("description"):
        lines.append(str(entry["description"]))
    lines.append(f"defined at {_where(index, agent.place)}")
    return Hover("\n\n".join(lines), agent.place)


def _where(index: Index, place: Place) -> str:
    shown = place.path.name if place.path == index.path else str(place.path)
    return f"{shown}:{place.line + 1}"


# -- go to definition -----------------------------------------------------------------------


def definition(index: Index, line: int, column: int) -> list[Place]:
    spot = _spot(index, line, column)
    key = spot.key
    if key is None:
        return []
    if key[0] == "targets" and len(key) == 2:
        return [d.place for d in index.targets_named(str(key[1]))]
    if key[0] == "include":
        return _file(index, index.value(key))
    found = _attribute_of(key)
    if found is None:
        return []
    name = found[1]
    value = index.value(key)
    if name in _TARGET_VALUED:
        words = [value] if isinstance(value, str) else [spot.word]
        return [d.place for w in words for d in index.targets_named(str(w))]
    if name == "agent" and spot.on_value:
        agent = index.agents.get(str(value) if isinstance(value, str) else spot.word)
        return [agent.place] if agent else []
    if name == "prompt" and isinstance(value, dict):
        return _file(index, value.get("file"))
    if name in _FILE_VALUED and spot.on_value:
        return _file(index, value if isinstance(value, str) else spot.word)
    return []


def _file(index: Index, relative: Any) -> list[Place]:
    if not isinstance(relative, str) or not relative:
        return []
    path = (index.path.parent / relative).resolve()
    return [Place(path, 0, 0, 0, 0)] if path.is_file() else []


# -- completion -----------------------------------------------------------------------------


def completion(index: Index, line: int, column: int) -> list[Completion]:
    text = index.lines[line][:column] if 0 <= line < len(index.lines) else ""
    if index.form == "agentfile":
        return _complete_agentfile(index, line, text)
    return _complete_data(index, line, text)


def _complete_agentfile(index: Index, line: int, text: str) -> list[Completion]:
    if not text[:1].isspace():  # a header, a variable, an include
        head, colon, _ = text.partition(":")
        words = head.split()
        if not colon:
            return [Completion(k, "keyword") for k in ("options", "agent", "include")
                    if not words or k.startswith(words[0])]
        if words[:1] == ["agent"]:
            return _providers()
        return _targets(index, exclude=words[0] if words else "")
    header = _agentfile_header(index, line)
    if header is None:
        return []
    block = "options" if header == ["options"] else \
        "agents" if header[0] == "agent" else "targets"
    section = _agentfile_section(index, line, len(text) - len(text.lstrip()))
    if section is not None:
        block = section if section in _TABLES else ""
    name, sign, _ = text.partition("=")
    if not sign:
        stripped = text.strip()
        if stripped.startswith("foreach"):
            return []
        extra = [Completion("foreach", "keyword", "foreach VAR in glob(\"…\")",
                            "Fan-out: one target per value.")] if block == "targets" else []
        return _attributes(block, skip=("deps",)) + extra
    return _values(index, name.strip(), agentfile=True)


def _agentfile_header(index: Index, line: int) -> list[str] | None:
    for above in range(line, -1, -1):
        text = index.lines[above]
        if text.strip() and not text[:1].isspace() and not text.startswith("#"):
            head, colon, _ = text.partition(":")
            return head.split() if colon and head.split() else None
    return None


def _agentfile_section(index: Index, line: int, indent: int) -> str | None:
    """The `NAME:` section a line is in (`env:`, `budget:`), if any."""
    for above in range(line - 1, -1, -1):
        text = index.lines[above]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        outer = len(text) - len(text.lstrip())
        if outer == 0:
            return None
        if outer < indent:
            stripped = text.strip()
            return stripped[:-1].strip() if stripped.endswith(":") else None
    return None


def _complete_data(index: Index, line: int, text: str) -> list[Completion]:
    parents = _data_parents(index, line, len(text) - len(text.lstrip(" -")))
    match = _DATA_KEY.match(text)
    if match:  # `key: ` — its value
        return _values(index, match.group(2), agentfile=False)
    if text.lstrip().startswith("-"):  # an item of the parent key's list
        return _values(index, parents[-1], agentfile=False) if parents else []
    block = _block(tuple(parents))
    return _attributes(block or "", skip=()) if block else []


def _data_parents(index: Index, line: int, indent: int) -> list[str]:
    """The keys above a line in YAML (or indented JSON), outermost first."""
    parents: list[str] = []
    for above in range(line - 1, -1, -1):
        text = index.lines[above]
        match = _DATA_KEY.match(text)
        if not match or text.lstrip().startswith("#"):
            continue
        outer = len(match.group(1))
        if outer < indent:
            parents.insert(0, match.group(2))
            indent = outer
            if outer == 0:
                break
    if parents[:1] == ["$schema"]:
        return []
    return parents


def _attributes(block: str, *, skip: tuple[str, ...]) -> list[Completion]:
    if block not in BLOCKS:
        return []
    from agentfile.manifest.reference import attributes

    return [Completion(a.name, "attribute", block, a.description)
            for a in attributes(block) if a.name not in skip]


def _values(index: Index, name: str, *, agentfile: bool) -> list[Completion]:
    if name == "provider":
        return _providers()
    if name == "agent":
        named = [Completion(a, "agent", f"agent: {d.entry.get('provider')}",
                            str(d.entry.get("description") or ""))
                 for a, d in index.agents.items()]
        return named + [p for p in _providers() if p.label not in index.agents]
    if name in _TARGET_VALUED:
        return _targets(index)
    if name in _BOOLEANS:
        return [Completion("true", "value"), Completion("false", "value")]
    if name in VALUES:
        out = [Completion(word, "value", name, text) for word, text in VALUES[name].items()
               if word != "dir"]
        if name == "isolation" and agentfile:
            out.append(Completion('dir("")', "value", name, VALUES[name]["dir"]))
        return out
    return []


def _providers() -> list[Completion]:
    return [Completion(p, "provider", "provider", VALUES["provider"][p]) for p in PROVIDERS]


def _targets(index: Index, exclude: str = "") -> list[Completion]:
    names = dict.fromkeys(index.targets)
    for name in index.targets:  # a fan-out's stem stands for all its instances
        stem = name.split("{", 1)[0].rstrip("/.-_") if "{" in name else ""
        if stem:
            names.setdefault(stem)
    # The description as the detail only: thousands of items, each serialised.
    return [Completion(n, "target", _target_detail(index, n) or "target")
            for n in names if n != exclude]


def _target_detail(index: Index, name: str) -> str:
    found = index.targets_named(name)
    return str(found[0].entry.get("description") or "") if len(found) == 1 else ""


# -- document symbols -----------------------------------------------------------------------


def symbols(index: Index) -> list[Symbol]:
    out: list[Symbol] = []
    for key, span in index.spans.items():
        if len(key) == 1 and key[0] == "options":
            kind, name = "options", "options"
        elif len(key) == 2 and key[0] in ("targets", "agents", "vars"):
            kind = {"targets": "target", "agents": "agent", "vars": "variable"}[str(key[0])]
            name = str(key[1])
        else:
            continue
        whole = index.extent(key)
        selection = Place.of(span)
        if whole is None or whole.path != index.path:
            continue
        detail = ""
        if kind == "target":
            detail = _target_detail(index, name)
        elif kind == "agent":
            detail = str(index.value((*key, "provider")) or "")
        out.append(Symbol(name, kind, whole, selection, detail))
    return sorted(out, key=lambda s: (s.place.line, s.place.column))


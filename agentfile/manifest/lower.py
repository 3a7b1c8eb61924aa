"""Syntax nodes -> the data-form document (a JSON-able dict), plus a table key path -> span.

This is where the Agentfile language becomes the same document a YAML or JSON manifest is;
typed quantity lists (`budget = $1.50, 10m`) are classified here, by the kind of each item.
Problems are collected, not raised one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentfile import quantities as q
from agentfile.errors import Problem, Span, suggest
from agentfile.manifest import syntax as s
from agentfile.manifest.model import AGENT_ATTRIBUTES, OPTION_NAMES, TARGET_ATTRIBUTES

KeyPath = tuple[str | int, ...]
ATTRIBUTES = frozenset({*TARGET_ATTRIBUTES, *AGENT_ATTRIBUTES, *OPTION_NAMES} - {"default"})
SpanTable = dict[KeyPath, Span]
CALLS = ("file", "glob", "lines", "dir")
# Attributes whose value is a list of typed quantities, each lowered by the method of its name.
_TYPED = frozenset({"budget", "throttle", "daily_budget", "price"})


class Lowering:
    """Walks one Document, filling `doc`, `spans` and `problems`."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {}
        self.spans: SpanTable = {}
        self.problems: list[Problem] = []
        # Targets and agents with a problem here: checks across the manifest skip them, as
        # what they lack (a foreach, a value) would only be reported again as an echo.
        self.damaged: set[str] = set()
        self.current: str | None = None
        self.last_block: s.Block | None = None

    def fail(self, span: Span, message: str) -> None:
        self.problems.append(Problem(span, message))
        if self.current is not None:
            self.damaged.add(self.current)

    # -- statements ---------------------------------------------------------------------

    def document(self, document: s.Document) -> None:
        for statement in document.statements:
            if isinstance(statement, s.Include):
                includes = self.doc.setdefault("include", [])
                self.spans[("include", len(includes))] = statement.span
                includes.append(statement.path)
            elif isinstance(statement, s.Variable):
                self.variable(statement)
            else:
                self.current = statement.head[-1].text
                self.block(statement)
                self.current = None
                self.last_block = statement
                continue
            self.last_block = None

    def variable(self, statement: s.Variable) -> None:
        name = statement.name.text
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            self.fail(statement.name.span, f"'{name}' is not a variable name "
                      "(letters, digits and _; a target needs ':')")
            return
        if self.last_block is not None and not self.last_block.body and name in ATTRIBUTES:
            owner = self.last_block.head[-1].text
            self.fail(statement.name.span, f"'{name}' is not indented: as written it is a "
                      f"variable; indent it to make it an attribute of '{owner}'")
            return
        variables = self.doc.setdefault("vars", {})
        self.spans[("vars", name)] = statement.span
        variables[name] = self.plain(statement.value, ("vars", name))

    def block(self, block: s.Block) -> None:
        words = [w.text for w in block.head]
        if words == ["options"]:
            if block.tail:
                self.fail(block.tail[0].span, "options takes no dependencies")
            self.spans.setdefault(("options",), block.span)
            self.attributes(block.body, self.doc.setdefault("options", {}), ("options",))
        elif words[0] == "agent" and len(words) > 1:
            self.agent(block)
        elif len(words) == 1:
            self.target(block)
        else:
            self.fail(block.head[1].span, f"unexpected '{words[1]}'; a target is written "
                      "`NAME: DEPENDENCIES` and an agent `agent NAME: PROVIDER`")

    def agent(self, block: s.Block) -> None:
        if len(block.head) != 2 or len(block.tail) != 1:
            self.fail(block.span, "an agent is written `agent NAME: PROVIDER`")
            return
        name, provider = block.head[1], block.tail[0]
        agents = self.doc.setdefault("agents", {})
        if not self.unique(agents, name, "agent", ("agents", name.text)):
            return
        path: KeyPath = ("agents", name.text)
        self.spans[path] = name.span
        self.spans[(*path, "provider")] = provider.span
        agents[name.text] = {"provider": provider.text}
        self.attributes(block.body, agents[name.text], path)

    def target(self, block: s.Block) -> None:
        name = block.head[0]
        targets = self.doc.setdefault("targets", {})
        path: KeyPath = ("targets", name.text)
        if not self.unique(targets, name, "target", path):
            return
        self.spans[path] = name.span
        entry: dict[str, Any] = {}
        if block.tail:
            entry["deps"] = [w.text for w in block.tail]
            self.spans[(*path, "deps")] = block.tail[0].span
            for index, word in enumerate(block.tail):
                self.spans[(*path, "deps", index)] = word.span
        targets[name.text] = entry
        self.attributes(block.body, entry, path)

    def unique(self, table: dict[str, Any], name: s.Word, kind: str, path: KeyPath) -> bool:
        if name.text not in table:
            return True
        first = self.spans.get(path)
        where = f" (first defined at line {first.line})" if first else ""
        self.fail(name.span, f"duplicate {kind} '{name.text}'{where}")
        return False

    def attributes(self, body: tuple[s.BodyLine, ...], into: dict[str, Any],
                   path: KeyPath) -> None:
        for line in body:
            key = "foreach" if isinstance(line, s.Foreach) else line.name
            if key in into:
                self.fail(line.span, f"'{key}' is given twice")
                continue
            self.spans[(*path, key)] = line.span
            if isinstance(line, s.Foreach):
                value = self.foreach(line, (*path, key))
            elif isinstance(line, s.Section):
                value = {}
                self.attributes(line.attributes, value, (*path, key))
            else:
                value = self.attribute(line, (*path, key))
            if value is not None:
                into[key] = value

    # -- values -------------------------------------------------------------------------

    def attribute(self, attribute: s.Attribute, path: KeyPath) -> Any:
        if attribute.name in _TYPED and not _is_single(attribute.value, s.MapNode, s.VarRef):
            lower: Callable[[s.Value], Any] = getattr(self, attribute.name)
            return lower(attribute.value)
        return self.plain(attribute.value, path)

    def foreach(self, line: s.Foreach, path: KeyPath) -> Any:
        source = self.plain(line.source, path)
        if isinstance(source, list):
            return {"var": line.var, "list": source}
        if isinstance(source, dict) and len(source) == 1 and next(iter(source)) in (
                "glob", "lines"):
            return {"var": line.var, **source}
        if source is not None:
            self.fail(line.source.span,
                      "foreach takes glob(\"PATTERN\"), lines(\"FILE\") or a [list]")
        return None

    def plain(self, value: s.Value, path: KeyPath) -> Any:
        """A value without typed items: one atom, or a comma list of atoms (a list)."""
        for item in value.items:
            if len(item.atoms) > 1:
                self.fail(item.atoms[1].span, "expected ',' or end of line between values")
                return None
        if len(value.items) == 1:
            return self.atom(value.items[0].atoms[0], path)
        return [self.atom(item.atoms[0], (*path, i)) for i, item in enumerate(value.items)]

    def atom(self, atom: s.Atom, path: KeyPath) -> Any:
        self.spans.setdefault(path, atom.span)
        if isinstance(atom, s.Str | s.Quantity):
            return atom.text
        if isinstance(atom, s.Num):
            return atom.value
        if isinstance(atom, s.Money):
            if atom.per:
                self.fail(atom.span, f"a rate (${atom.amount:g}/{atom.per}) is only "
                          "meaningful in `price`")
            return atom.amount
        if isinstance(atom, s.VarRef):
            return "${" + atom.name + "}"
        if isinstance(atom, s.Name):
            return {"true": True, "false": False}.get(atom.text, atom.text)
        if isinstance(atom, s.ListNode):
            return [self.atom(e, (*path, i)) for i, e in enumerate(atom.elements)]
        if isinstance(atom, s.Call):
            return self.call(atom, path)
        self.spans[path] = atom.span
        out: dict[str, Any] = {}
        for key, key_span, entry in atom.entries:
            self.spans[(*path, key)] = key_span
            out[key] = self.atom(entry, (*path, key))
        return out

    def call(self, call: s.Call, path: KeyPath) -> Any:
        if call.func not in CALLS:
            self.fail(call.span, f"unknown function '{call.func}'{suggest(call.func, CALLS)}")
            return None
        if len(call.args) != 1 or not isinstance(call.args[0], s.Str):
            self.fail(call.span, f"{call.func}() takes one string")
            return None
        return {call.func: call.args[0].text}

    def typed_items(self, value: s.Value, what: str,
                    kinds: Callable[[s.Item], tuple[str, Any] | None]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in value.items:
            try:
                kind = kinds(item)
            except ValueError as err:
                self.fail(item.atoms[-1].span, str(err))
                continue
            if kind is None:
                self.fail(item.span, f"'{_text(item)}' is not {what}")
            elif kind[0] in out:
                self.fail(item.span, f"{kind[0]} is given twice")
            else:
                out[kind[0]] = kind[1]
        return out

    def budget(self, value: s.Value) -> dict[str, Any]:
        return self.typed_items(value, "a budget quantity (money $1.50, duration 10m, "
                                "size 2GiB or N tokens)", _budget_item)

    def throttle(self, value: s.Value) -> dict[str, Any]:
        return self.typed_items(value, "a throttle (memory 85%, load 2.0, free 1GiB)",
                                _throttle_item)

    def daily_budget(self, value: s.Value) -> dict[str, Any]:
        return self.typed_items(value, "a daily budget ($50, alert 80%)", _daily_item)

    def price(self, value: s.Value) -> dict[str, Any]:
        return self.typed_items(value, "a price ($3/Mtok in, $15/Mtok out)", _price_item)


def _is_single(value: s.Value, *kinds: type) -> bool:
    return len(value.items) == 1 and len(value.items[0].atoms) == 1 and isinstance(
        value.items[0].atoms[0], kinds)


def _text(item: s.Item) -> str:
    parts = []
    for atom in item.atoms:
        if isinstance(atom, s.Money):
            parts.append(f"${atom.amount:g}" + (f"/{atom.per}" if atom.per else ""))
        elif isinstance(atom, s.Str | s.Quantity | s.Name):
            parts.append(atom.text)
        elif isinstance(atom, s.Num):
            parts.append(str(atom.value))
        else:
            parts.append("…")
    return " ".join(parts)


def _budget_item(item: s.Item) -> tuple[str, Any] | None:
    atoms = item.atoms
    if len(atoms) == 1 and isinstance(atoms[0], s.Money) and not atoms[0].per:
        return ("usd", atoms[0].amount)
    if len(atoms) == 1 and isinstance(atoms[0], s.Quantity):
        kind = q.classify(atoms[0].text)
        if kind == "duration":
            return ("time", atoms[0].text)
        if kind == "size":
            return ("memory", atoms[0].text)
        if kind == "tokens":
            raise ValueError(f"write '{atoms[0].text} tokens' for a token count")
        return None
    if (len(atoms) == 2 and isinstance(atoms[0], s.Quantity | s.Num)
            and isinstance(atoms[1], s.Name) and atoms[1].text in ("tokens", "token")):
        text = atoms[0].text if isinstance(atoms[0], s.Quantity) else str(atoms[0].value)
        return ("tokens", q.parse_tokens(text))
    return None


def _throttle_item(item: s.Item) -> tuple[str, Any] | None:
    atoms = item.atoms
    if len(atoms) != 2 or not isinstance(atoms[0], s.Name):
        return None
    key, arg = atoms[0].text, atoms[1]
    if key == "memory" and isinstance(arg, s.Quantity):
        q.parse_percent(arg.text)
        return ("memory", arg.text)
    if key == "load" and isinstance(arg, s.Num):
        return ("load", arg.value)
    if key == "free" and isinstance(arg, s.Quantity):
        q.parse_size(arg.text)
        return ("free", arg.text)
    return None


def _daily_item(item: s.Item) -> tuple[str, Any] | None:
    atoms = item.atoms
    if len(atoms) == 1 and isinstance(atoms[0], s.Money) and not atoms[0].per:
        return ("usd", atoms[0].amount)
    if (len(atoms) == 2 and isinstance(atoms[0], s.Name) and atoms[0].text == "alert"
            and isinstance(atoms[1], s.Quantity)):
        q.parse_percent(atoms[1].text)
        return ("alert", atoms[1].text)
    return None


def _price_item(item: s.Item) -> tuple[str, Any] | None:
    atoms = item.atoms
    if (len(atoms) == 2 and isinstance(atoms[0], s.Money) and atoms[0].per == "Mtok"
            and isinstance(atoms[1], s.Name)):
        side = {"in": "input", "input": "input", "out": "output", "output": "output"}
        if atoms[1].text in side:
            return (side[atoms[1].text], atoms[0].amount)
    return None


def lower(document: s.Document) -> Lowering:
    """The document, its span table, every problem found on the way, and damaged names."""
    lowering = Lowering()
    lowering.document(document)
    return lowering

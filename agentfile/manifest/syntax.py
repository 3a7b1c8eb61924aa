"""Typed syntax nodes of the Agentfile language; each keeps the span it was read from."""

from __future__ import annotations

from dataclasses import dataclass

from agentfile.errors import Span


@dataclass(frozen=True, slots=True)
class Str:
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Num:
    value: int | float
    span: Span


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number with a unit, kept as written (`10m`, `2GiB`, `85%`, `200k`)."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Money:
    """`$1.50`, or a rate such as `$3/Mtok`."""

    amount: float
    per: str | None
    span: Span


@dataclass(frozen=True, slots=True)
class VarRef:
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class ListNode:
    elements: tuple[Atom, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Atom, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class MapNode:
    entries: tuple[tuple[str, Span, Atom], ...]
    span: Span


Atom = Str | Num | Quantity | Money | VarRef | Name | ListNode | Call | MapNode


@dataclass(frozen=True, slots=True)
class Item:
    """Atoms side by side, e.g. `memory 85%` or `200k tokens`."""

    atoms: tuple[Atom, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Value:
    """A comma list of items: `$1.50, 10m, 2GiB`."""

    items: tuple[Item, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    value: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Foreach:
    var: str
    source: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Section:
    """A nested block of attributes, e.g. `env:`."""

    name: str
    attributes: tuple[Attribute, ...]
    span: Span


BodyLine = Attribute | Foreach | Section


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Block:
    """`WORDS ':' WORDS` and its indented body: options, an agent or a target."""

    head: tuple[Word, ...]
    tail: tuple[Word, ...]
    body: tuple[BodyLine, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Include:
    path: str
    span: Span


@dataclass(frozen=True, slots=True)
class Variable:
    name: Word
    value: Value
    span: Span


Statement = Include | Variable | Block


@dataclass(frozen=True, slots=True)
class Document:
    path: str
    statements: tuple[Statement, ...]

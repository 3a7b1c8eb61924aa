"""YAML and JSON manifests -> the data-form document, plus a table key path -> span.

PyYAML's composer gives every node its position, so a schema error on `targets.x.budget`
points at the line of that key, as it does in the Agentfile language.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from agentfile.errors import Problem, Span
from agentfile.manifest.lower import KeyPath, SpanTable


def _span(path: str, node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    return Span(path, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def _walk(path: str, node: yaml.Node, key: KeyPath, spans: SpanTable,
          problems: list[Problem], count: _Count, inside: frozenset[int] = frozenset()) -> None:
    count.one()
    if id(node) in inside:  # `&x [*x]`: an alias to a node that contains it
        raise yaml.YAMLError("an alias refers to a node that contains it")
    inside = inside | {id(node)}
    if isinstance(node, yaml.MappingNode):
        names: set[str] = set()
        for key_node, value_node in node.value:
            name = str(key_node.value)
            if name in names:
                problems.append(Problem(_span(path, key_node), f"duplicate key '{name}'"))
            names.add(name)
            spans[(*key, name)] = _span(path, key_node)
            _walk(path, value_node, (*key, name), spans, problems, count, inside)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            spans[(*key, index)] = _span(path, item)
            _walk(path, item, (*key, index), spans, problems, count, inside)


# libyaml's loader where PyYAML was built with it: ten times faster, same positions.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# libyaml composes nested values recursively in C: tens of thousands of levels overflow its
# stack and kill the process. Deeper than this is refused before it is asked (load() says
# "nests too deeply" for anything past Python's own limit anyway).
MAX_DEPTH = 2000
# Aliases let a few lines stand for billions of values ("billion laughs"): a document may
# expand to this many values besides one per character of its text.
MAX_VALUES = 1_000_000
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class TooLarge(yaml.YAMLError):
    """Nested too deeply, or aliases that expand to too many values."""


def _too_deep(text: str) -> bool:
    """Whether the text may nest deeper than MAX_DEPTH: flow brackets (counted as if none
    were inside a string, an over-estimate), or block items opened on one line (`- - - x`)."""
    brackets = _NOT_BRACKET.sub("", text)
    if len(brackets) > MAX_DEPTH:
        depth = 0
        for char in brackets:
            depth += 1 if char in "[{" else -1
            if depth > MAX_DEPTH:
                return True
    # Items opened on one line nest by twos (`- - `) or by `? `: only then look line by line.
    if text.count("- - ") + text.count("? ") > MAX_DEPTH // 2:
        return any(line.count("- ") + line.count("? ") > MAX_DEPTH
                   for line in text.splitlines())
    return False


class _Count:
    """Values built so far, against the most a document may expand to."""

    def __init__(self, text: str) -> None:
        self.left = MAX_VALUES + len(text)

    def one(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise TooLarge(f"the manifest's aliases expand to more than {MAX_VALUES:,} values")


def _compose(text: str, path: str) -> tuple[Any, SpanTable, list[Problem]]:
    if _too_deep(text):
        raise TooLarge(f"the manifest nests values more than {MAX_DEPTH} deep")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        spans: SpanTable = {}
        problems: list[Problem] = []
        if node is None:
            return None, spans, problems
        spans[()] = _span(path, node)
        try:
            return (_Builder(path, loader, spans, problems, _Count(text)).build(node, ()),
                    spans, problems)
        except _Unusual:
            spans, problems = {(): spans[()]}, []
        _walk(path, node, (), spans, problems, _Count(text))
        return _string_keys(loader.construct_document(node)), spans, problems
    finally:
        loader.dispose()


class _Unusual(Exception):
    """A tag, merge key or key that only PyYAML's own constructor handles."""


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class _Builder:
    """Spans and values from the composed nodes in one walk: the work of `_walk`, PyYAML's
    constructor and `_string_keys` together, for the plain YAML manifests are made of (its
    constructor is a third of a cold load of a large manifest). Anything else is _Unusual."""

    def __init__(self, path: str, loader: yaml.SafeLoader, spans: SpanTable,
                 problems: list[Problem], count: _Count) -> None:
        self.path, self.loader, self.spans, self.problems = path, loader, spans, problems
        self.count = count
        self.inside: set[int] = set()

    def scalar(self, node: yaml.Node) -> Any:
        if node.tag == _STR:
            return node.value
        value = self.loader.construct_object(node, deep=True)  # int, float, bool, null, ...
        if not isinstance(value, _JSON_SCALARS):  # a date or timestamp: no such thing in JSON
            self.problems.append(Problem(_span(self.path, node), _not_json(node.value, value)))
            return node.value
        return value

    def build(self, node: yaml.Node, key: KeyPath) -> Any:
        self.count.one()
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if id(node) in self.inside:  # `&x [*x]`: an alias to a node that contains it
            raise yaml.YAMLError("an alias refers to a node that contains it")
        self.inside.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
                return self.mapping(node, key)
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
                out = []
                for index, item in enumerate(node.value):
                    self.spans[(*key, index)] = _span(self.path, item)
                    out.append(self.build(item, (*key, index)))
                return out
            raise _Unusual
        finally:
            self.inside.discard(id(node))

    def mapping(self, node: yaml.MappingNode, key: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        names: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (
                    _STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool",
                    "tag:yaml.org,2002:float", "tag:yaml.org,2002:null"):
                raise _Unusual  # a merge key `<<`, a collection as a key, a timestamp
            name = str(key_node.value)
            if name in names:
                self.problems.append(Problem(_span(self.path, key_node),
                                             f"duplicate key '{name}'"))
            names.add(name)
            self.spans[(*key, name)] = _span(self.path, key_node)
            out[str(self.scalar(key_node))] = self.build(value_node, (*key, name))
        return out


_JSON_SCALARS = (str, int, float, type(None))  # bool is an int


def _not_json(text: str, value: Any) -> str:
    return (f"'{text}' is a YAML {type(value).__name__}, which a manifest cannot hold: "
            "quote it to make it a string")


def _string_keys(value: Any) -> Any:
    """YAML allows `1:` or `true:` as keys; a manifest's keys are names, as in JSON. Values
    JSON has no type for (dates, binary, sets) are refused."""
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    if not isinstance(value, _JSON_SCALARS):
        raise ValueError(_not_json(str(value)[:40], value))
    return value


def load_yaml(text: str, path: str) -> tuple[Any, SpanTable, list[Problem]]:
    try:
        return _compose(text, path)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        if err.context_mark and mark and mark.line >= text.count("\n"):
            mark = err.context_mark  # at the end of the file: say where the opened thing began
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"invalid YAML: {err.problem or err.context or 'syntax error'}"
        return None, {}, [Problem(Span(path, line, column), message)]
    except yaml.YAMLError as err:
        return None, {}, [Problem(Span(path, 1, 1), f"invalid YAML: {err}")]
    except (ValueError, IndexError, TypeError, OverflowError) as err:
        # PyYAML's constructors raise these for a bad date, tag or escape.
        return None, {}, [Problem(Span(path, 1, 1), f"invalid YAML: {err}")]


def load_json(text: str, path: str) -> tuple[Any, SpanTable, list[Problem]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return None, {}, [Problem(Span(path, err.lineno, err.colno), f"invalid JSON: {err.msg}")]
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        return None, {}, [Problem(Span(path, 1, 1), f"invalid JSON: {err}")]
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # "\udfff": half a surrogate pair, which no file can hold
        at = re.search(r"\\u[dD][89a-fA-F]", text)
        before = text[: at.start()] if at else ""
        line, column = before.count("\n") + 1, len(before.rsplit("\n", 1)[-1]) + 1
        return None, {}, [Problem(Span(path, line, column), "invalid JSON: a \\u escape of "
                                  "half a surrogate pair is no character")]
    try:
        _, spans, problems = _compose(text, path)
    except yaml.YAMLError:
        # Valid JSON that YAML 1.1 reads differently (rare): errors point at the file start.
        spans, problems = {(): Span(path, 1, 1)}, []
    return data, spans, problems

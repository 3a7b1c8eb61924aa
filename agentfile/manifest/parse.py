"""Agentfile text -> syntax nodes with spans. The only module that imports lark.

Syntax errors are collected, not stopped at: when the file does not parse, each top-level
statement is parsed on its own to find every broken one, and the broken ones are blanked so
that the rest still reaches the later checks.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs
from lark import Lark, Token, Transformer, v_args
from lark import __version__ as lark_version
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken
from lark.indenter import Indenter

from agentfile.errors import ManifestError, Problem, Span
from agentfile.manifest import syntax as s
from agentfile.manifest.text import CONTROL, TAB_INDENT, dedent_block, unescape
from agentfile.resources import resource_path

# What the parser expected, said in words rather than terminal names.
_TOKEN_WORDS = {
    "_NL": "end of line",
    "_INDENT": "an indented block",
    "_DEDENT": "end of block",
    "$END": "end of file",
    "COLON": "':'",
    "EQUAL": "'='",
    "COMMA": "','",
    "WORD": "a name",
    "NAME": "a name",
    "STRING": "a string",
    "LONG_STRING": "a string",
    "NUMBER": "a number",
    "QUANTITY": "a quantity",
    "MONEY": "an amount",
    "VARREF": "a variable",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "IN": "'in'",
    "INCLUDE": "'include'",
    "FOREACH": "'foreach'",
}


class _DedentError(LarkError):
    def __init__(self, token: Token) -> None:
        super().__init__("unindent does not match any outer indentation level")
        self.token = token


class _Indenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LSQB", "LPAR", "LBRACE"]  # noqa: RUF012 - lark's interface
    CLOSE_PAREN_types = ["RSQB", "RPAR", "RBRACE"]  # noqa: RUF012
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def handle_NL(self, token: Token) -> Iterator[Token]:
        if self.paren_level > 0:
            return
        yield token
        indent = len(token.rsplit("\n", 1)[1])
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            yield Token.new_borrow_pos(self.INDENT_type, "", token)
            return
        while indent < self.indent_level[-1]:
            self.indent_level.pop()
            yield Token.new_borrow_pos(self.DEDENT_type, "", token)
        if indent != self.indent_level[-1]:
            raise _DedentError(token)


def _span_of(path: str, children: list[Any]) -> Span:
    """The span from the first to the last of the children (nodes or tokens), which the
    parser hands over in source order."""
    placed = [c for c in children if isinstance(c, Token) or hasattr(c, "span")]
    first, last = placed[0], placed[-1]
    start = _token_span(path, first) if isinstance(first, Token) else first.span
    end = _token_span(path, last) if isinstance(last, Token) else last.span
    return Span(path, start.line, start.column, end.end_line, end.end_column)


def _token_span(path: str, tok: Token) -> Span:
    return Span(path, tok.line or 1, tok.column or 1, tok.end_line, tok.end_column)


@v_args(inline=False)
class _Builder(Transformer[Token, s.Document]):
    """Builds syntax nodes while the LALR parser reduces (no intermediate tree)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _sp(self, children: list[Any]) -> Span:
        return _span_of(self.path, children)

    def start(self, children: list[Any]) -> s.Document:
        return s.Document(self.path, tuple(children))

    def include(self, children: list[Any]) -> s.Include:
        tok = children[1]
        text = unescape(tok[1:-1], _token_span(self.path, tok))
        return s.Include(text, self._sp(children[:2]))

    def variable(self, children: list[Any]) -> s.Variable:
        name, value = children
        return s.Variable(s.Word(str(name), _token_span(self.path, name)), value,
                          self._sp(children))

    def block(self, children: list[Any]) -> s.Block:
        head: list[s.Word] = []
        tail: list[s.Word] = []
        body: list[s.BodyLine] = []
        seen_colon = False
        for child in children:
            if isinstance(child, Token) and child.type == "WORD":
                word = s.Word(str(child), _token_span(self.path, child))
                (tail if seen_colon else head).append(word)
            elif isinstance(child, Token) and child.type == "COLON":
                seen_colon = True
            elif child is not None:
                body.append(child)
        return s.Block(tuple(head), tuple(tail), tuple(body), self._sp(children))

    def attribute(self, children: list[Any]) -> s.Attribute:
        name, value = children
        return s.Attribute(str(name), value, self._sp(children))

    def foreach(self, children: list[Any]) -> s.Foreach:
        var, source = children
        return s.Foreach(str(var), source, self._sp(children))

    def section(self, children: list[Any]) -> s.Section:
        name, *attributes = children
        return s.Section(str(name), tuple(attributes), self._sp(children))

    def value(self, children: list[Any]) -> s.Value:
        return s.Value(tuple(children), self._sp(children))

    def item(self, children: list[Any]) -> s.Item:
        return s.Item(tuple(children), self._sp(children))

    def string(self, children: list[Any]) -> s.Str:
        span = self._sp(children)
        return s.Str(unescape(children[0][1:-1], span), span)

    def long_string(self, children: list[Any]) -> s.Str:
        span = self._sp(children)
        return s.Str(unescape(dedent_block(children[0][3:-3]), span), span)

    def number(self, children: list[Any]) -> s.Num:
        text = str(children[0])
        span = self._sp(children)
        try:
            value: int | float = float(text) if "." in text else int(text)
        except ValueError:  # more digits than Python converts
            raise ManifestError([Problem(span, f"number '{text[:20]}…' is out of range")]
                                ) from None
        return s.Num(value, span)

    def quantity(self, children: list[Any]) -> s.Quantity:
        return s.Quantity(str(children[0]), self._sp(children))

    def money(self, children: list[Any]) -> s.Money:
        amount, _, per = str(children[0])[1:].partition("/")
        return s.Money(float(amount), per or None, self._sp(children))

    def varref(self, children: list[Any]) -> s.VarRef:
        return s.VarRef(str(children[0])[2:-1], self._sp(children))

    def name(self, children: list[Any]) -> s.Name:
        return s.Name(str(children[0]), self._sp(children))

    def list_value(self, children: list[Any]) -> s.ListNode:
        atoms = tuple(c for c in children if c is not None and not isinstance(c, Token))
        return s.ListNode(atoms, self._sp(children))

    def call(self, children: list[Any]) -> s.Call:
        func, *args = children
        return s.Call(str(func), tuple(a for a in args if a is not None
                                       and not isinstance(a, Token)),
                      self._sp(children))

    def map_value(self, children: list[Any]) -> s.MapNode:
        entries = tuple(c for c in children if isinstance(c, tuple))
        return s.MapNode(entries, self._sp(children))

    def entry(self, children: list[Any]) -> tuple[str, Span, s.Atom]:
        key, atom = children
        span = _token_span(self.path, key)
        text = unescape(key[1:-1], span) if key.type == "STRING" else str(key)
        return (text, span, atom)


@functools.cache
def _grammar() -> str:
    return resource_path("agentfile.lark").read_text(encoding="utf-8")


def _analysis_cache() -> str | bool:
    """Where lark keeps its analysis of the grammar (a 10x faster start), per grammar."""
    if os.environ.get("AGENTFILE_NO_CACHE"):
        return False
    digest = hashlib.sha256(_grammar().encode()).hexdigest()[:16]
    folder = Path(platformdirs.user_cache_dir("agentfile"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return str(folder / f"grammar-{digest}-lark{lark_version}.cache")


@functools.cache
def _parser() -> tuple[Lark, _Builder]:
    builder = _Builder("")
    lark = Lark(
        _grammar(),
        parser="lalr",
        postlex=_Indenter(),
        propagate_positions=False,  # the builder makes its own spans from the tokens
        maybe_placeholders=True,
        transformer=builder,
        cache=_analysis_cache(),
    )
    return lark, builder


@functools.cache
def _bare_parser() -> Lark:
    """A parser without a transformer, used to find syntax errors statement by statement."""
    return Lark(_grammar(), parser="lalr", postlex=_Indenter(), maybe_placeholders=True)


def parse(text: str, path: str) -> tuple[s.Document, list[Problem]]:
    """Parse Agentfile text: the document and every syntax problem found.

    With problems, the document holds the statements that did parse.
    """
    problems = _prescan(text, path)
    source = text if text.endswith("\n") else text + "\n"
    if problems:
        source = _repair_lines(source, {p.span.line for p in problems})
    try:
        return _run(source, path), _blocking(problems, text)
    except ManifestError as err:
        problems += err.problems
    except LarkError as first:
        problems.append(_problem_from(first, path, 0))
    blanked, more = _recover(source, path)
    problems += [p for p in more if p not in problems]
    try:
        return _run(blanked, path), _blocking(problems, text)
    except ManifestError as err:
        problems += err.problems
    except LarkError:
        pass
    return s.Document(path, ()), _blocking(problems, text)


def _blocking(problems: list[Problem], source: str = "") -> list[Problem]:
    """Syntax problems block later checks; one found at the end of the file (an indented
    block that never came) is reported on its last line, not past it."""
    last = max(source.count("\n"), 1)
    out = []
    for p in problems:
        span = p.span
        if span.line > last:
            line_text = source.split("\n")[last - 1] if source else ""
            span = Span(span.path, last, len(line_text) + 1)
        out.append(Problem(span, p.message, blocking=True))
    return list(dict.fromkeys(out))


def _repair_lines(source: str, numbers: set[int]) -> str:
    """Lines with a tab or control character, made parseable to find the other problems:
    leading tabs become four spaces, other lines with a bad character are blanked."""
    lines = source.split("\n")
    for number in numbers:
        line = lines[number - 1]
        stripped = line.lstrip(" \t")
        fixed = line[: len(line) - len(stripped)].replace("\t", "    ") + stripped
        lines[number - 1] = fixed if _prescan(fixed, "") == [] else ""
    return "\n".join(lines)


def _run(source: str, path: str) -> s.Document:
    # One parser for the process (building it costs far more than a parse); the builder
    # is told which file it is reading. Parsing is not re-entrant, and need not be.
    lark, builder = _parser()
    builder.path = path
    tree = lark.parse(source)
    assert isinstance(tree, s.Document)
    return tree


def _prescan(text: str, path: str) -> list[Problem]:
    """Problems a parser would report badly: tabs in indentation and control characters."""
    if not TAB_INDENT.search(text) and not CONTROL.search(text):
        return []  # the common case, in one pass of two regular expressions
    problems: list[Problem] = []
    for number, line in enumerate(text.split("\n"), start=1):
        tab = TAB_INDENT.match(line)
        if tab:
            problems.append(Problem(Span(path, number, tab.end()),
                                    "tab in indentation; indent with spaces"))
        bad = CONTROL.search(line)
        if bad:
            problems.append(Problem(Span(path, number, bad.start() + 1),
                                    f"unexpected control character U+{ord(bad.group()):04X}"))
    return problems


def _statement_starts(lines: list[str]) -> list[int]:
    """0-based indexes of lines that begin a top-level statement (outside `\"\"\"` strings)."""
    starts: list[int] = []
    in_long = False
    for index, line in enumerate(lines):
        if not in_long and line[:1] not in ("", " ", "#", "\r"):
            starts.append(index)
        if line.count('"""') % 2:
            in_long = not in_long
    return starts


def _recover(source: str, path: str) -> tuple[str, list[Problem]]:
    """Parse each top-level statement alone; blank the broken ones, keeping line numbers."""
    lines = source.split("\n")
    starts = _statement_starts(lines) or [0]
    problems: list[Problem] = []
    bounds = list(zip(starts, [*starts[1:], len(lines)], strict=True))
    for begin, end in bounds:
        chunk = "\n".join(lines[begin:end]) + "\n"
        try:
            _bare_parser().parse(chunk)
        except LarkError as err:
            problems.append(_problem_from(err, path, begin))
            for index in range(begin, end):
                lines[index] = ""
    return "\n".join(lines), problems


def _problem_from(err: LarkError, path: str, line_offset: int) -> Problem:
    if isinstance(err, _DedentError):
        tok = err.token
        line = (tok.end_line or tok.line or 1) + line_offset
        column = len(str(tok).rsplit("\n", 1)[1]) + 1
        return Problem(Span(path, line, column), str(err))
    if isinstance(err, UnexpectedCharacters):
        line, column = err.line + line_offset, err.column
        char = err.char
        if char in "\"'":
            return Problem(Span(path, line, column), "unterminated string")
        if char == "\t":
            return Problem(Span(path, line, column), "tab character; use spaces")
        return Problem(Span(path, line, column), f"unexpected character {char!r}")
    if isinstance(err, UnexpectedEOF):
        return Problem(Span(path, line_offset + 1, 1), "unexpected end of file")
    if isinstance(err, UnexpectedToken):
        tok = err.token
        line = (tok.line or 1) + line_offset
        column = tok.column or 1
        if tok.type in ("_INDENT", "_DEDENT") and tok.end_line:
            # These borrow the newline's position; the user means the line they start.
            line, column = tok.end_line + line_offset, tok.end_column or 1
        return Problem(Span(path, line, column), _unexpected_message(tok, set(err.expected)))
    return Problem(Span(path, line_offset + 1, 1), str(err))


def _unexpected_message(tok: Token, expected: set[str]) -> str:
    kind = tok.type
    if kind == "_INDENT":
        return "unexpected indentation"
    if kind == "_DEDENT" or kind == "_NL":
        found = "end of line"
    elif kind == "$END":
        found = "end of file"
    else:
        found = repr(str(tok))
    if expected == {"COLON", "WORD"} or expected == {"COLON", "WORD", "EQUAL"}:
        return f"unexpected {found}; a target is written `NAME: DEPENDENCIES`"
    if "EQUAL" in expected and len(expected) <= 2:
        return f"unexpected {found}; an attribute is written `name = value`"
    words = sorted({_TOKEN_WORDS.get(e, e.lower()) for e in expected})
    if len(words) > 6:
        return f"unexpected {found}"
    return f"unexpected {found}; expected {' or '.join(words)}"

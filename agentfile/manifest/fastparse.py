"""A hand-written reader for well-formed Agentfiles: the same syntax nodes as the LALR parser.

lark's lexer, LALR driver and tree callbacks cost about 165 µs per target of a generated
10k-target manifest, most of a cold load; this reader takes about 30 µs. It walks the text
once with a few compiled regular expressions and builds the nodes of `syntax.py` directly,
with the very spans lark's tokens would give. It accepts a strict subset of the grammar: on
anything it is not sure of (a syntax error, a tab, a carriage return, an indented first line,
a dedent that needs thought) it gives up and returns None, and the loader asks lark, which
also writes the error messages. So a manifest with a mistake costs one extra, fast attempt,
and a valid one never meets lark at all.

The contract, checked by tests/test_fastparse.py on the examples, on generated and on broken
manifests: whenever this returns a Document, lark returns an equal one (spans included) and
no problem.
"""

from __future__ import annotations

import re

from agentfile.errors import ManifestError, Span
from agentfile.manifest import syntax as s
from agentfile.manifest.text import CONTROL, dedent_block, unescape

# The terminals of grammar/agentfile.lark that can start an atom, in lark's order of trial
# (priority first: LONG_STRING.3, QUANTITY.2), as one alternation: the first that matches wins,
# as in lark's lexer. PUNCT is the grammar's punctuation. The strings' `([^"\\\n]|\\.)*` is
# unrolled to `[^"\\\n]*(\\.[^"\\\n]*)*`: the same language, without a branch per character.
_ATOM = re.compile(
    r'(?P<LONG>"""[\s\S]*?""")'
    r'|(?P<STRING>"(?!"")[^"\\\n]*(?:\\.[^"\\\n]*)*"|\'[^\'\\\n]*(?:\\.[^\'\\\n]*)*\')'
    r"|(?P<QUANTITY>\d+(?:\.\d+)?[A-Za-z%]+(?:\d+(?:\.\d+)?[A-Za-z]+)*)"
    r"|(?P<NUMBER>-?\d+(?:\.\d+)?(?![A-Za-z%\d.]))"
    r"|(?P<MONEY>\$\d+(?:\.\d+)?(?:/[A-Za-z]+)?)"
    r"|(?P<VARREF>\$\{[A-Za-z_][A-Za-z0-9_]*\})"
    r"|(?P<NAME>[A-Za-z_][A-Za-z0-9_-]*)"
    r"|(?P<PUNCT>[\[\]{}(),=])"
)
_WORD = re.compile(r"[A-Za-z0-9_./{}-]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SPACES = re.compile(r" *")
# Lines holding nothing, or only a comment (lark's _NL token swallows them whole), then the
# indent of the next line that holds something.
_NEXT_LINE = re.compile(r"(?: *(?:#[^\n]*)?\n)*( *)")
# Inside brackets newlines and comments are dropped too (the indenter ignores them there).
_GAP = re.compile(r"(?:[ \n]|#[^\n]*)*")
_LINE_END = re.compile(r" *(?:#[^\n]*)?\n")
# The most common header, `name: dep dep`, read in one match. The dependencies are words
# with at least one space between them: written `(?: *WORD+)*`, a word could be cut anywhere
# and a line that does not end well (`a: bbbb…!`) took time exponential in its length.
_TARGET_HEADER = re.compile(
    r"([A-Za-z0-9_./{}-]+) *(:)((?: *[A-Za-z0-9_./{}-]+(?: +[A-Za-z0-9_./{}-]+)*)?)"
    r" *(?:#[^\n]*)?\n")
# The most common line of all, `    name = "text"`, read in one match.
_STRING_ATTRIBUTE = re.compile(
    r'([A-Za-z_][A-Za-z0-9_-]*) *= *("(?!"")[^"\\\n]*(?:\\.[^"\\\n]*)*") *(?:#[^\n]*)?\n')
# lark reads a keyword where its parser state allows one: `include` at a statement's start,
# `foreach` at a body line's start in a block (not in a section), `in` after `foreach VAR`.
# Everywhere else these are plain names, as in `price = $3/Mtok in`.
_OPENERS = {"[": "]", "(": ")", "{": "}"}


class _GiveUp(Exception):
    """Not sure: let lark read this text."""


def parse(text: str, path: str) -> s.Document | None:
    """The syntax nodes of an Agentfile's text, or None to ask lark."""
    if "\r" in text or "\t" in text or CONTROL.search(text):
        return None  # line ends, tabs and control characters: lark's rules and messages
    source = text if text.endswith("\n") else text + "\n"
    try:
        return _Reader(source, path).document()
    except (_GiveUp, ManifestError, IndexError, ValueError, RecursionError):
        return None


class _Reader:
    """A cursor over the text that knows its line and how many brackets are open."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.pos = 0
        self.line = 1
        self.line_start = 0  # offset of the current line's first character
        self.depth = 0  # open brackets

    # -- positions ------------------------------------------------------------------------

    def span(self, start: int, end: int) -> Span:
        """The span of text[start:end], which lies on the current line."""
        return Span(self.path, self.line, start - self.line_start + 1, self.line,
                    end - self.line_start + 1)

    def advance_lines(self, start: int, end: int) -> None:
        """Move the cursor to `end`, counting the newlines in text[start:end]."""
        newlines = self.text.count("\n", start, end)
        if newlines:
            self.line += newlines
            self.line_start = self.text.rindex("\n", start, end) + 1
        self.pos = end

    def next_line(self) -> int:
        """From a line's start, past blank and comment-only lines to the start of a line that
        holds something (or the end of the text): its indent."""
        match = _NEXT_LINE.match(self.text, self.pos)
        assert match is not None  # the pattern matches the empty string
        start, end = match.span(1)
        if start != self.pos:
            self.advance_lines(self.pos, start)
        return end - start

    def skip_gap(self) -> None:
        """Spaces; inside brackets also newlines and comments."""
        if self.depth:
            end = _GAP.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if end != self.pos:
                self.advance_lines(self.pos, end)
        elif self.text[self.pos] == " ":
            self.pos = _SPACES.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def end_line(self) -> None:
        """Past trailing spaces, a comment and the newline that end a statement."""
        match = _LINE_END.match(self.text, self.pos)
        if match is None:
            raise _GiveUp
        self.pos = match.end()
        self.line += 1
        self.line_start = self.pos

    def expect(self, char: str) -> None:
        self.skip_gap()
        if self.text[self.pos] != char:
            raise _GiveUp
        self.pos += 1

    # -- statements -----------------------------------------------------------------------

    def document(self) -> s.Document:
        statements: list[s.Statement] = []
        while True:
            indent = self.next_line()
            if self.pos >= len(self.text):
                break
            if indent:
                raise _GiveUp  # an indented first statement, or an indent after a block
            statements.append(self.statement())
        return s.Document(self.path, tuple(statements))

    def word(self) -> s.Word:
        match = _WORD.match(self.text, self.pos)
        if match is None:
            raise _GiveUp
        self.pos = match.end()
        return s.Word(match.group(), self.span(match.start(), match.end()))

    def statement(self) -> s.Statement:
        text = self.text
        quick = _TARGET_HEADER.match(text, self.pos)
        if quick is not None:
            return self.target_header(quick)
        if text.startswith("include", self.pos):
            keyword = _WORD.match(text, self.pos)
            if keyword is not None and keyword.group() == "include":
                return self.include(keyword.start(), keyword.end())
        head = [self.word()]
        self.skip_gap()
        if text[self.pos] == "=":
            if len(head) != 1:
                raise _GiveUp
            self.pos += 1
            value = self.value()
            return s.Variable(head[0], value, _between(head[0].span, value.span))
        while text[self.pos] != ":":
            head.append(self.word())
            self.skip_gap()
        colon = self.span(self.pos, self.pos + 1)
        self.pos += 1
        tail: list[s.Word] = []
        self.skip_gap()
        while text[self.pos] not in "#\n":
            tail.append(self.word())
            self.skip_gap()
        self.end_line()
        return self.block(head, tail, colon)

    def target_header(self, match: re.Match[str]) -> s.Block:
        """`name: dep dep`, then its body."""
        deps_start, deps_end = match.span(3)
        words = [s.Word(match.group(1), self.span(*match.span(1)))]
        words += [s.Word(w.group(), self.span(w.start(), w.end()))
                  for w in _WORD.finditer(self.text, deps_start, deps_end)]
        if words[0].text == "include":
            raise _GiveUp  # the keyword, then ':' where a string belongs
        colon = self.span(*match.span(2))
        self.pos = match.end()
        self.line += 1
        self.line_start = self.pos
        return self.block(words[:1], words[1:], colon)

    def block(self, head: list[s.Word], tail: list[s.Word], colon: Span) -> s.Block:
        """A header's block, its body read from the next line: spanning from the first word to
        the end of its last body line, else of its last word or colon (as lark's rule)."""
        body = self.body(0, allow_sections=True)
        last = body[-1].span if body else tail[-1].span if tail else colon
        return s.Block(tuple(head), tuple(tail), body, _between(head[0].span, last))

    def include(self, start: int, end: int) -> s.Include:
        keyword = self.span(start, end)
        self.pos = end
        self.skip_gap()
        match = _ATOM.match(self.text, self.pos)
        if match is None or match.lastgroup != "STRING":
            raise _GiveUp
        self.pos = match.end()
        token = self.span(match.start(), match.end())
        text = unescape(match.group()[1:-1], token)
        self.end_line()
        return s.Include(text, _between(keyword, token))

    def body(self, outer: int, *, allow_sections: bool) -> tuple[s.BodyLine, ...]:
        """The lines indented deeper than `outer` that follow a header; the first of them sets
        the block's indent. Afterwards pos is at the start of the next outer line."""
        indent = self.next_line()
        if indent <= outer or self.pos >= len(self.text):
            return ()
        lines: list[s.BodyLine] = []
        while True:
            self.pos += indent
            lines.append(self.body_line(indent, allow_sections))
            following = self.next_line()
            if self.pos >= len(self.text):
                break
            if following == indent:
                continue
            if following > indent or (following != outer and following != 0):
                raise _GiveUp  # an unexpected indent, or a dedent lark must judge
            break
        return tuple(lines)

    def body_line(self, indent: int, allow_sections: bool) -> s.BodyLine:
        text, start = self.text, self.pos
        quick = _STRING_ATTRIBUTE.match(text, start)
        if quick is not None and (quick.group(1) != "foreach" or not allow_sections):
            return self.string_attribute(quick)
        name = _NAME.match(text, start)
        if name is None:
            raise _GiveUp
        self.pos = name.end()
        word = name.group()
        name_span = self.span(start, self.pos)
        if word == "foreach" and allow_sections:
            return self.foreach()
        self.skip_gap()
        char = text[self.pos]
        if char == "=":
            self.pos += 1
            value = self.value()
            return s.Attribute(word, value, _between(name_span, value.span))
        if char == ":" and allow_sections:
            self.pos += 1
            self.end_line()
            attributes = self.body(indent, allow_sections=False)
            if not attributes:
                raise _GiveUp  # a section needs an indented attribute
            # Read with allow_sections=False, the lines are all attributes.
            return s.Section(word, attributes,  # type: ignore[arg-type]
                             _between(name_span, attributes[-1].span))
        raise _GiveUp

    def string_attribute(self, match: re.Match[str]) -> s.Attribute:
        """`name = "text"`: the common line, without the general value reader."""
        path, line, base = self.path, self.line, self.line_start - 1
        name_start, value_start, value_end = match.start(1), match.start(2), match.end(2)
        value_span = Span(path, line, value_start - base, line, value_end - base)
        raw = match.group(2)[1:-1]
        atom = s.Str(unescape(raw, value_span) if "\\" in raw else raw, value_span)
        value = s.Value((s.Item((atom,), value_span),), value_span)
        self.pos = self.line_start = match.end()
        self.line = line + 1
        return s.Attribute(match.group(1), value,
                           Span(path, line, name_start - base, line, value_end - base))

    def foreach(self) -> s.Foreach:
        self.skip_gap()
        var = _NAME.match(self.text, self.pos)
        if var is None:
            raise _GiveUp
        var_span = self.span(var.start(), var.end())
        self.pos = var.end()
        self.skip_gap()
        keyword = _NAME.match(self.text, self.pos)
        if keyword is None or keyword.group() != "in":
            raise _GiveUp
        self.pos = keyword.end()
        source = self.value()
        return s.Foreach(var.group(), source, _between(var_span, source.span))

    # -- values ---------------------------------------------------------------------------

    def value(self) -> s.Value:
        """`item, item, ...` up to the end of the line, which it consumes."""
        items = [self.item()]
        while self.text[self.pos] == ",":
            self.pos += 1
            items.append(self.item())
        self.end_line()
        span = items[0].span if len(items) == 1 else _between(items[0].span, items[-1].span)
        return s.Value(tuple(items), span)

    def item(self) -> s.Item:
        atoms = [self.atom()]
        self.skip_gap()
        while self.text[self.pos] not in ",#\n":
            atoms.append(self.atom())
            self.skip_gap()
        span = atoms[0].span if len(atoms) == 1 else _between(atoms[0].span, atoms[-1].span)
        return s.Item(tuple(atoms), span)

    def atom(self) -> s.Atom:
        self.skip_gap()
        match = _ATOM.match(self.text, self.pos)
        if match is None:
            raise _GiveUp
        kind, token, start, end = match.lastgroup, match.group(), match.start(), match.end()
        if kind == "LONG":
            line, column = self.line, start - self.line_start + 1
            self.advance_lines(start, end)
            span = Span(self.path, line, column, self.line, end - self.line_start + 1)
            return s.Str(unescape(dedent_block(token[3:-3]), span), span)
        self.pos = end
        if kind == "PUNCT":
            if token in _OPENERS:
                return self.bracketed(token, start)
            raise _GiveUp
        span = self.span(start, end)
        if kind == "STRING":
            raw = token[1:-1]
            return s.Str(unescape(raw, span) if "\\" in raw else raw, span)
        if kind == "NAME":
            self.skip_gap()
            if self.text[self.pos] == "(":
                self.pos += 1
                return self.bracketed("(", start, func=token, func_span=span)
            return s.Name(token, span)
        if kind == "NUMBER":
            return s.Num(float(token) if "." in token else int(token), span)
        if kind == "QUANTITY":
            return s.Quantity(token, span)
        if kind == "MONEY":
            amount, _, per = token[1:].partition("/")
            return s.Money(float(amount), per or None, span)
        return s.VarRef(token[2:-1], span)  # VARREF

    def bracketed(self, opener: str, start: int, func: str = "",
                  func_span: Span | None = None) -> s.Atom:
        """A list, a call's arguments or a map, from just after its opening bracket."""
        first = func_span or self.span(start, start + 1)
        closer = _OPENERS[opener]
        self.depth += 1
        elements: list[s.Atom] = []
        entries: list[tuple[str, Span, s.Atom]] = []
        self.skip_gap()
        while self.text[self.pos] != closer:
            if opener == "{":
                entries.append(self.entry())
            else:
                elements.append(self.atom())
            self.skip_gap()
            if self.text[self.pos] == ",":
                self.pos += 1
                self.skip_gap()
            elif self.text[self.pos] != closer:
                raise _GiveUp
        self.depth -= 1
        span = _between(first, self.span(self.pos, self.pos + 1))
        self.pos += 1
        if opener == "[":
            return s.ListNode(tuple(elements), span)
        if opener == "(":
            return s.Call(func, tuple(elements), span)
        return s.MapNode(tuple(entries), span)

    def entry(self) -> tuple[str, Span, s.Atom]:
        match = _ATOM.match(self.text, self.pos)
        if match is None or match.lastgroup not in ("NAME", "STRING"):
            raise _GiveUp
        key_span = self.span(match.start(), match.end())
        self.pos = match.end()
        key = match.group()
        if match.lastgroup == "STRING":
            key = unescape(key[1:-1], key_span)
        self.expect("=")
        return (key, key_span, self.atom())


def _between(first: Span, last: Span) -> Span:
    """From the start of `first` to the end of `last`, as lark's spans of a rule."""
    return Span(first.path, first.line, first.column, last.end_line, last.end_column)

"""What an open manifest holds and where: the reader's span table, turned into lookups.

Built from the manifest's own reader (`read_document`, `read_with_includes`), so the language
server sees exactly what `agentfile check` reads. Places are 0-based lines and columns in
characters; the server converts them to the client's units.
"""

from __future__ import annotations

import functools
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentfile.errors import Span
from agentfile.manifest.expand import fanout_stem
from agentfile.manifest.load import Unsaved, form_of, read_document, read_with_includes
from agentfile.manifest.lower import KeyPath, SpanTable


@dataclass(frozen=True, slots=True)
class Place:
    """A range in a file: 0-based, the end exclusive."""

    path: Path
    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def of(cls, span: Span) -> Place:
        end_line = span.end_line if span.end_line is not None else span.line
        end_column = span.end_column if span.end_column is not None else span.column + 1
        return cls(_resolved(span.path), span.line - 1, span.column - 1, end_line - 1,
                   end_column - 1)

    def contains(self, line: int, column: int) -> bool:
        return (self.line, self.column) <= (line, column) <= (self.end_line, self.end_column)


@dataclass(frozen=True, slots=True)
class Definition:
    """A target or agent as defined: its name, where, and its entry in the document."""

    name: str
    place: Place
    entry: dict[str, Any]


class Index:
    """One open document: its own spans (for what is under the cursor) and the names the
    manifest defines with its includes (for hover, completion and definition)."""

    def __init__(self, path: Path, text: str, unsaved: Unsaved) -> None:
        # Reading makes many small objects that live on: as in manifest.load, the cyclic
        # collector would only scan them again and again.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._read(path, text, unsaved)
        finally:
            if enabled:
                gc.enable()

    def _read(self, path: Path, text: str, unsaved: Unsaved) -> None:
        self.path = path.resolve()
        self.form = form_of(path)
        self.lines = text.split("\n")
        own = read_document(self.path, str(self.path), unsaved=unsaved)
        self.doc: dict[str, Any] = own.doc
        self.spans: SpanTable = own.spans
        whole = read_with_includes(self.path, unsaved=unsaved) if own.doc.get("include") \
            else own
        self.targets = self._definitions(whole.doc, whole.spans, "targets")
        self.agents = self._definitions(whole.doc, whole.spans, "agents")
        self.variables: dict[str, Any] = dict(whole.doc.get("vars") or {})
        self._block_ends: dict[KeyPath, tuple[int, int]] | None = None
        self._stems: dict[str, list[str]] = {}
        for name in self.targets:
            stem = fanout_stem(name)
            if stem:
                self._stems.setdefault(stem, []).append(name)

    @staticmethod
    def _definitions(doc: dict[str, Any], spans: SpanTable,
                     section: str) -> dict[str, Definition]:
        entries = doc.get(section)
        if not isinstance(entries, dict):
            return {}
        out: dict[str, Definition] = {}
        for name, entry in entries.items():
            span = spans.get((section, name))
            if span is not None:
                out[str(name)] = Definition(str(name), Place.of(span),
                                            entry if isinstance(entry, dict) else {})
        return out

    def path_at(self, line: int, column: int) -> KeyPath | None:
        """The deepest key path whose span holds the position in this file, else None."""
        best: tuple[int, int, KeyPath] | None = None
        here = (line + 1, column + 1)  # spans count from 1
        for key, span in self.spans.items():
            end = (span.end_line or span.line, span.end_column or span.column + 1)
            if not key or not (span.line, span.column) <= here <= end:
                continue
            rank = (-len(key), (end[0] - span.line) * 100_000 + end[1] - span.column, key)
            if best is None or rank[:2] < best[:2]:
                best = rank
        return best[2] if best else None

    def value(self, key: KeyPath) -> Any:
        """The value at a key path of this file's document, else None."""
        node: Any = self.doc
        for part in key:
            found = (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node))
            if not found:
                return None
            node = node[part]
        return node

    def targets_named(self, name: str) -> list[Definition]:
        """A dependency's targets: the one of that name, else every instance template of a
        fan-out whose stem it is (`migrate` for `migrate/{file}`)."""
        if name in self.targets:
            return [self.targets[name]]
        return [self.targets[t] for t in self._stems.get(name, [])]

    def extent(self, key: KeyPath) -> Place | None:
        """The whole block of a top-level entry (a target with all its attributes)."""
        head = self.spans.get(key)
        if head is None:
            return None
        place = Place.of(head)
        end = self._ends().get(key[:2], (place.end_line + 1, place.end_column + 1))
        return Place(place.path, place.line, 0 if self.form == "agentfile" else place.column,
                     end[0] - 1, end[1] - 1)

    def _ends(self) -> dict[KeyPath, tuple[int, int]]:
        """Where each top-level entry's spans end, in one pass over the table."""
        if self._block_ends is None:
            ends: dict[KeyPath, tuple[int, int]] = {}
            for key, span in self.spans.items():
                top = key[:2] if key[:1] != ("options",) else key[:1]
                end = (span.end_line or span.line, span.end_column or span.column + 1)
                if end > ends.get(top, (0, 0)):
                    ends[top] = end
            self._block_ends = ends
        return self._block_ends

    def word_at(self, line: int, column: int) -> tuple[str, int, int]:
        """The name-like word under the cursor, with its start and end columns."""
        text = self.lines[line] if 0 <= line < len(self.lines) else ""
        start = column
        while start > 0 and _word_char(text[start - 1]):
            start -= 1
        end = column
        while end < len(text) and _word_char(text[end]):
            end += 1
        return text[start:end], start, end


@functools.lru_cache(maxsize=256)
def _resolved(shown: str) -> Path:
    """A span's file as shown (relative to the current directory) -> its full path; the
    same few files for thousands of spans, each resolved once."""
    return Path(shown).resolve()


def _word_char(char: str) -> bool:
    return char.isalnum() or char in "_-./{}"

"""Errors users can meet, each with the exit code it maps to (SPEC section 5.5).

A ManifestError carries one or more Problems, each pinned to a file, line and column, and
renders them make-style with the source line and a caret under the offending column.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_INTERRUPTED = 130


class Span(NamedTuple):
    """Where something stands in a manifest: 1-based line and column.

    A named tuple rather than a frozen dataclass: a large manifest makes a few hundred
    thousand of them, and a tuple is built three times faster."""

    path: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a manifest."""

    span: Span
    message: str
    # A problem that leaves the manifest incomplete (a syntax error, a missing include):
    # checks across the whole manifest would only report its echoes, so they are skipped.
    blocking: bool = field(default=False, compare=False)

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.span.path,
            "line": self.span.line,
            "column": self.span.column,
            "message": self.message,
        }


class AgentfileError(Exception):
    """An error meant for the user: printed without a traceback, with an exit code."""

    exit_code = EXIT_FAILED

    def render(self) -> str:
        return f"agentfile: error: {self}"


class UsageError(AgentfileError):
    """The command line is wrong; nothing ran."""

    exit_code = EXIT_USAGE


class ManifestError(AgentfileError):
    """Everything wrong with a manifest, reported together; nothing ran."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(
            dict.fromkeys(problems),
            key=lambda p: (p.span.path, p.span.line, p.span.column, p.message),
        )
        super().__init__("; ".join(p.message for p in self.problems))

    def render(self) -> str:
        return "\n".join(render_problem(p) for p in self.problems)


def render_problem(problem: Problem) -> str:
    """`PATH:LINE:COLUMN: error: message`, then the source line and a caret."""
    span = problem.span
    head = f"{span.path}:{span.line}:{span.column}: error: {problem.message}"
    source = _source_line(span.path, span.line)
    if source is None:
        return head
    width = len(source[: max(span.column - 1, 0)])
    caret_len = 1
    if span.end_line == span.line and span.end_column and span.end_column > span.column:
        caret_len = span.end_column - span.column
    return f"{head}\n    {source}\n    {' ' * width}^{'~' * (caret_len - 1)}"


def _source_line(path: str, line: int) -> str | None:
    from agentfile import regular

    try:
        raw = regular.read_bytes(Path(path))  # never a FIFO's wait, nor /dev/zero's end
    except (OSError, ValueError):
        return None
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if not 1 <= line <= len(lines):
        return None
    # Control characters would garble the terminal; show them as the replacement mark, and
    # a tab as the symbol for one (a column wide, as the caret below counts it).
    return "".join(c if c.isprintable() or c == " " else "\u2409" if c == "\t" else "\ufffd"
                   for c in lines[line - 1])


def suggest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?`, else an empty string. Matches about as close as the closest
    are all offered (`clod`: 'codex' or 'claude'?), up to three; a far second is not
    (`promt`: 'prompt', not 'priority')."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=3, cutoff=0.6)
    ratios = [difflib.SequenceMatcher(None, word, c).ratio() for c in close]
    matches = [c for c, ratio in zip(close, ratios, strict=True) if ratio >= ratios[0] - CLOSE]
    return f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""


CLOSE = 0.1  # how much less close than the closest match another may be, to be offered

"""Diagnostics: `manifest.load` itself, on the editor's buffers, grouped by file.

The same problems, positions and messages as `agentfile check`, because it is the same call;
only a caret's width is added where a problem marks a single column (the word there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentfile.errors import ManifestError, Problem, Span, UsageError
from agentfile.lsp.index import Place
from agentfile.manifest.load import Unsaved, load


@dataclass(frozen=True, slots=True)
class Diagnostic:
    place: Place
    message: str


def diagnose(path: Path, unsaved: Unsaved) -> dict[Path, list[Diagnostic]]:
    """Every problem of the manifest at `path` (read from `unsaved` where open), by file."""
    try:
        load(path, unsaved=unsaved, long_lived=True)
        problems: list[Problem] = []
    except ManifestError as err:
        problems = list(err.problems)
    except UsageError as err:
        problems = [Problem(Span(str(path), 1, 1), str(err))]
    out: dict[Path, list[Diagnostic]] = {path.resolve(): []}
    for problem in problems:
        place = _widened(Place.of(problem.span), problem.span, unsaved)
        out.setdefault(place.path, []).append(Diagnostic(place, problem.message))
    return out


def _widened(place: Place, span: Span, unsaved: Unsaved) -> Place:
    """A one-column problem underlines the word it points at, as an editor shows errors."""
    if span.end_column is not None:
        return place
    text = unsaved.get(place.path)
    if text is None:
        try:
            text = place.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return place
    lines = text.split("\n")
    line = lines[place.line] if place.line < len(lines) else ""
    end = place.column
    while end < len(line) and not line[end].isspace():
        end += 1
    return Place(place.path, place.line, place.column, place.line, max(end, place.column + 1))

"""The language server over stdio: pygls and the protocol's types, and nothing else knows them.

Requests are answered from an Index of the document's current text, built once per version;
diagnostics run `manifest.load` in a worker thread a moment after the last keystroke, and are
published only if the document has not changed since.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
from lsprotocol import types as t
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace import TextDocument

from agentfile import __version__
from agentfile.errors import UsageError
from agentfile.lsp import answers
from agentfile.lsp.diagnose import Diagnostic, diagnose
from agentfile.lsp.index import Index, Place
from agentfile.manifest.locate import MANIFEST_NAMES, find_manifest

_T = TypeVar("_T")
DEBOUNCE = 0.15  # seconds of quiet after a change before the manifest is loaded again
MAX_ITEMS = 200  # completion items sent at once
_SYMBOL_KINDS = {"target": t.SymbolKind.Function, "agent": t.SymbolKind.Object,
                 "options": t.SymbolKind.Namespace, "variable": t.SymbolKind.Variable}
_COMPLETION_KINDS = {"attribute": t.CompletionItemKind.Property,
                     "target": t.CompletionItemKind.Function,
                     "agent": t.CompletionItemKind.Class,
                     "provider": t.CompletionItemKind.Module,
                     "value": t.CompletionItemKind.EnumMember,
                     "keyword": t.CompletionItemKind.Keyword}


class AgentfileServer(LanguageServer):
    """The server, with each open document's index and the diagnostics it published."""

    def __init__(self) -> None:
        super().__init__("agentfile", __version__)
        self.indexes: dict[str, tuple[int | None, Index]] = {}
        self.published: dict[str, set[str]] = {}  # document -> the files it published for
        self.pending: dict[str, asyncio.Task[None]] = {}
        self.shut_down = False  # the exit code says whether the client asked first
        # The manifest's reader is not made for threads (lark's parser of a text with
        # mistakes keeps state): one reading at a time, in a worker or for a request.
        self.reading = threading.Lock()

    def unsaved(self) -> dict[Path, str]:
        return {Path(to_fs_path(uri) or uri).resolve(): doc.source
                for uri, doc in self.workspace.text_documents.items()}

    def index(self, uri: str) -> tuple[TextDocument, Index]:
        """The document's index, built now if its text changed since the last one."""
        document = self.workspace.get_text_document(uri)
        cached = self.indexes.get(uri)
        if cached is None or cached[0] != document.version:
            with self.reading:  # a worker may be indexing this very version
                cached = self.indexes.get(uri)
                if cached is None or cached[0] != document.version:
                    cached = (document.version, Index(Path(document.path), document.source,
                                                      self.unsaved()))
                    self.indexes[uri] = cached
        return document, cached[1]

    def lines(self, path: Path, index: Index) -> list[str]:
        """A file's lines, to count columns as the client does: the indexed text's own."""
        if path == index.path:
            return index.lines
        shown = self.workspace.text_documents.get(from_fs_path(str(path)) or "")
        return _lines_of(path, shown)

    def schedule(self, uri: str, delay: float) -> None:
        """Load the manifest again after `delay`, replacing a load not yet started."""
        earlier = self.pending.pop(uri, None)
        if earlier is not None:
            earlier.cancel()
        self.pending[uri] = asyncio.ensure_future(self._publish(uri, delay))

    async def _publish(self, uri: str, delay: float) -> None:
        await asyncio.sleep(delay)
        document = self.workspace.get_text_document(uri)
        version = document.version
        path = Path(document.path)
        unsaved = self.unsaved()
        loop = asyncio.get_running_loop()
        # Indexed in the worker first, ready for the requests that follow the diagnostics.
        await loop.run_in_executor(self.thread_pool, self._index_in_worker, uri, version,
                                   document.source, unsaved)
        found = await loop.run_in_executor(self.thread_pool, self._locked,
                                           _diagnose_in_context, path, unsaved)
        if self.workspace.text_documents.get(uri) is None or document.version != version:
            return  # closed or changed meanwhile: a newer load is on its way
        sent: set[str] = set()
        for file, problems in found.items():
            file_uri = from_fs_path(str(file)) or str(file)
            shown = self.workspace.text_documents.get(file_uri)
            lines = _lines_of(file, shown)
            self.text_document_publish_diagnostics(t.PublishDiagnosticsParams(
                uri=file_uri, diagnostics=[_diagnostic(p, shown, lines) for p in problems],
                version=shown.version if shown else None))
            sent.add(file_uri)
        for stale in self.published.get(uri, set()) - sent:
            self.text_document_publish_diagnostics(
                t.PublishDiagnosticsParams(uri=stale, diagnostics=[]))
        self.published[uri] = sent
        self.pending.pop(uri, None)


    def _index_in_worker(self, uri: str, version: int | None, text: str,
                         unsaved: dict[Path, str]) -> None:
        with self.reading:
            if self.indexes.get(uri, (None,))[0] != version:
                self.indexes[uri] = (version, Index(Path(to_fs_path(uri) or uri), text,
                                                    unsaved))

    def _locked(self, read: Callable[[Path, dict[Path, str]], _T], path: Path,
                unsaved: dict[Path, str]) -> _T:
        with self.reading:
            return read(path, unsaved)


def _diagnose_in_context(path: Path, unsaved: dict[Path, str]) -> dict[Path, list[Diagnostic]]:
    """A file that is not a manifest of its own (an included fragment) is checked as part of
    the manifest found above it, when that manifest includes it."""
    if path.name not in MANIFEST_NAMES:
        try:
            manifest: Path | None = find_manifest(path.parent)
        except UsageError:  # no manifest above: the fragment is checked alone
            manifest = None
        if manifest is not None and manifest.resolve() != path.resolve():
            found = diagnose(manifest, unsaved)
            if path.resolve() in found or _includes(manifest, path, unsaved):
                return {path.resolve(): found.get(path.resolve(), []),
                        **{f: d for f, d in found.items() if f != manifest.resolve()}}
    return diagnose(path, unsaved)


def _includes(manifest: Path, path: Path, unsaved: dict[Path, str]) -> bool:
    from agentfile.manifest.load import read_document

    includes = read_document(manifest, unsaved=unsaved).doc.get("include") or []
    return any((manifest.parent / str(i)).resolve() == path.resolve() for i in includes)


def _lines_of(path: Path, shown: TextDocument | None) -> list[str]:
    if shown is not None:
        return list(shown.lines)
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    except OSError:
        return []


def _range(place: Place, shown: TextDocument | None, lines: list[str]) -> t.Range:
    """A place (columns in characters) as the client counts (UTF-16 by default)."""
    server = t.Range(start=t.Position(line=place.line, character=place.column),
                     end=t.Position(line=place.end_line, character=place.end_column))
    if shown is None or all(line.isascii() for line in
                            lines[place.line:place.line + 1] + lines[place.end_line:
                                                                     place.end_line + 1]):
        return server  # a character is one unit in every encoding
    return shown.position_codec.range_to_client_units(lines, server)


def _diagnostic(problem: Diagnostic, shown: TextDocument | None,
                lines: list[str]) -> t.Diagnostic:
    return t.Diagnostic(range=_range(problem.place, shown, lines), message=problem.message,
                        severity=t.DiagnosticSeverity.Error, source="agentfile")


def _location(server: AgentfileServer, place: Place, index: Index) -> t.Location:
    uri = from_fs_path(str(place.path)) or str(place.path)
    shown = server.workspace.text_documents.get(uri)
    return t.Location(uri=uri, range=_range(place, shown, server.lines(place.path, index)))


def _position(document: TextDocument, position: t.Position) -> tuple[int, int]:
    server = document.position_codec.position_from_client_units(document.lines, position)
    return server.line, server.character


def build_server() -> AgentfileServer:
    server = AgentfileServer()

    @server.feature(t.SHUTDOWN)
    def shutdown(ls: AgentfileServer, params: None) -> None:
        ls.shut_down = True

    @server.feature(t.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: AgentfileServer, params: t.DidOpenTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri, 0)

    @server.feature(t.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: AgentfileServer, params: t.DidChangeTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri, DEBOUNCE)

    @server.feature(t.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: AgentfileServer, params: t.DidSaveTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri, 0)

    @server.feature(t.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: AgentfileServer, params: t.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.indexes.pop(uri, None)
        pending = ls.pending.pop(uri, None)
        if pending is not None:
            pending.cancel()
        for stale in ls.published.pop(uri, set()):
            ls.text_document_publish_diagnostics(
                t.PublishDiagnosticsParams(uri=stale, diagnostics=[]))

    @server.feature(t.TEXT_DOCUMENT_HOVER)
    def hover(ls: AgentfileServer, params: t.HoverParams) -> t.Hover | None:
        document, index = ls.index(params.text_document.uri)
        found = answers.hover(index, *_position(document, params.position))
        if found is None:
            return None
        return t.Hover(contents=t.MarkupContent(kind=t.MarkupKind.Markdown,
                                                value=found.markdown))

    @server.feature(t.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: AgentfileServer, params: t.DefinitionParams) -> list[t.Location]:
        document, index = ls.index(params.text_document.uri)
        places = answers.definition(index, *_position(document, params.position))
        return [_location(ls, place, index) for place in places]

    @server.feature(t.TEXT_DOCUMENT_COMPLETION,
                    t.CompletionOptions(trigger_characters=[":", "=", " ", "-"]))
    def completion(ls: AgentfileServer, params: t.CompletionParams) -> t.CompletionList:
        document, index = ls.index(params.text_document.uri)
        line, column = _position(document, params.position)
        items = answers.completion(index, line, column)
        # Thousands of target names cost the client more than they help: those that start
        # with what is typed, at most MAX_ITEMS, and the client asks again as typing goes on.
        typed = index.word_at(line, column)[0][: column - index.word_at(line, column)[1]]
        fitting = [item for item in items if item.label.startswith(typed)] or items
        return t.CompletionList(is_incomplete=len(fitting) > MAX_ITEMS, items=[
            t.CompletionItem(label=item.label, kind=_COMPLETION_KINDS.get(item.kind),
                             detail=item.detail or None,
                             documentation=t.MarkupContent(kind=t.MarkupKind.Markdown,
                                                           value=item.documentation)
                             if item.documentation else None)
            for item in fitting[:MAX_ITEMS]])

    @server.feature(t.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def document_symbol(ls: AgentfileServer,
                        params: t.DocumentSymbolParams) -> list[t.DocumentSymbol]:
        document, index = ls.index(params.text_document.uri)
        # Thousands of positions, all made here from valid places: lsprotocol's checks of
        # each field would take most of the answer's time (attrs turns them off for a while,
        # on this thread's watch: nothing else builds protocol objects meanwhile).
        with attrs.validators.disabled():
            return [t.DocumentSymbol(name=s.name, kind=_SYMBOL_KINDS[s.kind],
                                     detail=s.detail or None,
                                     range=_range(s.place, document, index.lines),
                                     selection_range=_range(s.selection, document,
                                                            index.lines))
                    for s in answers.symbols(index)]

    return server


def serve() -> int:
    """`agentfile lsp`: speak the protocol on stdin/stdout until the client says exit."""
    # Each keystroke is a new text: the parse cache on disk would only fill with drafts.
    os.environ["AGENTFILE_NO_CACHE"] = "1"
    server = build_server()
    server.start_io()
    return 0 if server.shut_down else 1  # as the protocol asks of an exit without shutdown

"""`agentfile lsp` driven as an editor drives it: a real subprocess speaking JSON-RPC with
Content-Length framing on stdin/stdout (initialize, didOpen, didChange, publishDiagnostics,
hover, completion, definition, documentSymbol, shutdown, exit)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import Run

from agentfile.manifest.model import Target

MANIFEST = """\
include "agents.agentfile"

MODEL = "claude-sonnet-4-5"

options:
    jobs = 2
    isolation = worktree

agent reviewer: claude
    model = ${MODEL}
    description = "Reads diffs"

schema:
    description = "Database schema"
    prompt = "Create the schema"
    retries = 2

migrate/{t}: schema
    foreach t in ["users", "orders"]
    run = "echo {t}"

review: migrate schema
    agent = reviewer
    isolation = none
    prompt = file("prompts/review.md")
"""
INCLUDED = 'agent helper: codex\n    model = "gpt-5-codex"\n'
BROKEN = """\
a: c
    run = "true"

b: a
    run = "true"

d:
    run = "true"
    promt = "x"

c: b
    run = "true"

e: zz
    run = "true"
"""


class Client:
    """A language client: frames messages, matches responses to requests, keeps
    notifications until a test asks for them."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "agentfile", "lsp"], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.notifications: list[dict[str, Any]] = []
        self.next_id = 0
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        while True:
            headers: dict[str, str] = {}
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = stream.read(int(headers["content-length"]))
            self.messages.put(json.loads(body))

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = self.messages.get(timeout=60)
            if message.get("id") == self.next_id and "method" not in message:
                assert "error" not in message, message
                return message.get("result")
            self._keep(message)

    def _keep(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" in message:  # a request of the server's: answer it
            self.send({"id": message["id"], "result": None})
        elif "method" in message:
            self.notifications.append(message)

    def diagnostics(self, uri: str, *, when: Callable[[list[dict[str, Any]]], bool]
                    = lambda d: True) -> list[dict[str, Any]]:
        """The next published diagnostics of `uri` that satisfy `when`."""
        while True:
            for i, note in enumerate(self.notifications):
                if note["method"] == "textDocument/publishDiagnostics" and \
                        note["params"]["uri"] == uri:
                    del self.notifications[: i + 1]
                    found: list[dict[str, Any]] = note["params"]["diagnostics"]
                    if when(found):
                        return found
                    break
            else:
                self._keep(self.messages.get(timeout=60))

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path.as_uri()
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "agentfile", "version": 1,
            "text": path.read_text() if text is None else text}})
        return uri

    def at(self, method: str, uri: str, line: int, character: int) -> Any:
        return self.request(method, {"textDocument": {"uri": uri},
                                     "position": {"line": line, "character": character}})

    def close(self) -> int:
        assert self.request("shutdown") is None
        self.notify("exit", {})
        return self.proc.wait(timeout=30)


@pytest.fixture
def client(repo: Path) -> Iterator[Client]:
    (repo / "Agentfile").write_text(MANIFEST)
    (repo / "agents.agentfile").write_text(INCLUDED)
    (repo / "prompts").mkdir()
    (repo / "prompts" / "review.md").write_text("Review it.\n")
    started = Client(repo)
    result = started.request("initialize", {"processId": None, "rootUri": repo.as_uri(),
                                            "capabilities": {}})
    capabilities = result["capabilities"]
    assert capabilities["hoverProvider"] and capabilities["definitionProvider"]
    assert capabilities["documentSymbolProvider"] and capabilities["completionProvider"]
    started.notify("initialized", {})
    yield started
    if started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait()


def _line_of(text: str, needle: str) -> tuple[int, int]:
    for number, line in enumerate(text.splitlines()):
        if needle in line:
            return number, line.index(needle)
    raise AssertionError(f"{needle!r} not in the text")


def _labels(result: Any) -> list[str]:
    items = result["items"] if isinstance(result, dict) else result
    return [item["label"] for item in items]


def test_diagnostics_are_those_of_check(client: Client, repo: Path,
                                        agentfile_cli: Run) -> None:
    (repo / "Broken").write_text(BROKEN)
    checked = json.loads(agentfile_cli("check", "--json", "-f", "Broken", cwd=repo).out)
    expected = sorted((p["line"] - 1, p["column"] - 1, p["message"])
                      for p in checked["problems"])
    assert len(expected) == 3  # the cycle, the misspelt attribute, the unknown target
    uri = client.open(repo / "Broken")
    found = client.diagnostics(uri)
    assert sorted((d["range"]["start"]["line"], d["range"]["start"]["character"],
                   d["message"]) for d in found) == expected
    assert all(d["severity"] == 1 and d["source"] == "agentfile" for d in found)
    misspelt = next(d for d in found if "promt" in d["message"])
    assert misspelt["range"]["end"]["character"] > misspelt["range"]["start"]["character"]
    assert client.close() == 0


def test_diagnostics_follow_changes_of_the_buffer(client: Client, repo: Path) -> None:
    uri = client.open(repo / "Agentfile")
    assert client.diagnostics(uri) == []
    # The buffer, not the file: a misspelt attribute typed but not saved.
    line, column = _line_of(MANIFEST, "retries = 2")
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"range": {"start": {"line": line, "character": column},
                                      "end": {"line": line, "character": column + 7}},
                            "text": "retires"}]})
    found = client.diagnostics(uri, when=bool)
    assert [d["message"] for d in found] == [
        "unknown target attribute 'retires'; did you mean 'retries'?"]
    assert found[0]["range"]["start"] == {"line": line, "character": column}
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 3},
        "contentChanges": [{"text": MANIFEST.replace("review: migrate schema",
                                                     "review: migrate schemas")}]})
    found = client.diagnostics(uri, when=lambda d: any("schemas" in x["message"] for x in d))
    assert [d["message"] for d in found] == [
        "'review' depends on unknown target 'schemas'; did you mean 'schema'?"]
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 4},
                                             "contentChanges": [{"text": MANIFEST}]})
    assert client.diagnostics(uri, when=lambda d: not d) == []
    assert client.close() == 0


def test_hover_documents_attributes_values_and_dependencies(client: Client,
                                                            repo: Path) -> None:
    uri = client.open(repo / "Agentfile")

    def hover(needle: str, offset: int = 0) -> str:
        line, column = _line_of(MANIFEST, needle)
        result = client.at("textDocument/hover", uri, line, column + offset)
        assert result is not None, needle
        value: str = result["contents"]["value"]
        return value

    described = Target.model_fields["retries"].description
    assert described and described in hover("retries = 2")
    assert "target attribute" in hover("retries = 2")
    assert "Database schema" in hover("review: migrate schema", len("review: migrate "))
    assert "every instance of `migrate/{t}`" in hover("review: migrate", len("review: "))
    assert "Claude Code" in hover("agent reviewer: claude", len("agent reviewer: "))
    assert "Reads diffs" in hover("agent = reviewer", len("agent = "))
    assert "own git worktree" in hover("isolation = worktree", len("isolation = "))
    assert "option" in hover("jobs = 2") and "-j N" in hover("jobs = 2")
    assert "claude-sonnet-4-5" in hover('MODEL = "claude')
    assert "claude-sonnet-4-5" in hover("model = ${MODEL}", len("model = ${M"))
    assert client.close() == 0


def test_completion_offers_what_fits_where_the_cursor_is(client: Client, repo: Path) -> None:
    text = MANIFEST + "\nnew: \n    \n    isolation = \n    agent = \n\nagent x: \n"
    uri = client.open(repo / "Agentfile", text)
    lines = text.splitlines()
    new = lines.index("new: ")

    def complete(line: int, character: int) -> list[str]:
        return _labels(client.at("textDocument/completion", uri, line, character))

    targets = complete(new, len("new: "))
    assert {"schema", "review", "migrate/{t}", "migrate"} <= set(targets)
    attributes = complete(new + 1, 4)
    assert {"prompt", "run", "verify", "retries", "isolation", "foreach"} <= set(attributes)
    assert "deps" not in attributes
    assert complete(new + 2, len("    isolation = ")) == ["worktree", "branch", "none",
                                                        'dir("")']
    agents = complete(new + 3, len("    agent = "))
    assert set(agents[:2]) == {"reviewer", "helper"} and "claude" in agents
    assert complete(lines.index("agent x: "), len("agent x: ")) == [
        "claude", "codex", "gemini", "aider", "command"]
    options = complete(_line_of(text, "jobs = 2")[0], 4)
    assert {"jobs", "default", "throttle", "daily_budget"} <= set(options)
    assert client.close() == 0


def test_definition_of_dependencies_agents_and_includes(client: Client, repo: Path) -> None:
    uri = client.open(repo / "Agentfile")

    def where(needle: str, offset: int) -> list[tuple[str, int]]:
        line, column = _line_of(MANIFEST, needle)
        found = client.at("textDocument/definition", uri, line, column + offset)
        return [(Path(loc["uri"].removeprefix("file://")).name, loc["range"]["start"]["line"])
                for loc in found]

    assert where("review: migrate schema", len("review: migrate s")) == [
        ("Agentfile", _line_of(MANIFEST, "schema:")[0])]
    assert where("review: migrate", len("review: m")) == [
        ("Agentfile", _line_of(MANIFEST, "migrate/{t}:")[0])]
    assert where("agent = reviewer", len("agent = r")) == [
        ("Agentfile", _line_of(MANIFEST, "agent reviewer")[0])]
    assert where('include "agents', 10) == [("agents.agentfile", 0)]
    assert where('prompt = file("prompts', len('prompt = file("p')) == [("review.md", 0)]
    assert client.close() == 0


def test_document_symbols_are_targets_agents_and_options(client: Client, repo: Path) -> None:
    uri = client.open(repo / "Agentfile")
    found = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    kinds = {s["name"]: s["kind"] for s in found}
    assert kinds == {"MODEL": 13, "options": 3, "reviewer": 19, "schema": 12,
                     "migrate/{t}": 12, "review": 12}
    review = next(s for s in found if s["name"] == "review")
    assert review["range"]["start"]["line"] == _line_of(MANIFEST, "review:")[0]
    assert review["range"]["end"]["line"] == _line_of(MANIFEST, 'prompt = file(')[0]
    assert client.close() == 0


def test_the_yaml_form(client: Client, repo: Path, agentfile_cli: Run) -> None:
    text = ("targets:\n  schema:\n    prompt: make it\n    retries: 1\n"
            "  models:\n    deps: [schema, nothing]\n    run: make\n    \n")
    (repo / "Agentfile.yaml").write_text(text)
    uri = client.open(repo / "Agentfile.yaml")
    checked = json.loads(agentfile_cli("check", "--json", "-f", "Agentfile.yaml",
                                       cwd=repo).out)
    found = client.diagnostics(uri)
    assert [(d["range"]["start"]["line"] + 1, d["range"]["start"]["character"] + 1,
             d["message"]) for d in found] == [
        (p["line"], p["column"], p["message"]) for p in checked["problems"]]
    assert "nothing" in found[0]["message"]
    hovered = client.at("textDocument/hover", uri, 3, 6)
    assert "Further attempts" in hovered["contents"]["value"]
    dep = client.at("textDocument/definition", uri, 5, 12)
    assert [loc["range"]["start"]["line"] for loc in dep] == [1]
    assert "verify" in _labels(client.at("textDocument/completion", uri, 7, 4))
    assert client.close() == 0


def test_exit_without_shutdown_is_an_error_exit(repo: Path) -> None:
    started = Client(repo)
    started.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    started.notify("exit", {})
    assert started.proc.wait(timeout=30) == 1

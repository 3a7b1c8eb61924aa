"""A scripted stand-in for the Anthropic Messages API, for driving the real Claude Code CLI.

Standard library only (http.server + threading).  Bind it to 127.0.0.1 on a free port, point the
CLI at it with ``ANTHROPIC_BASE_URL`` and give it any ``ANTHROPIC_API_KEY``::

    from standin.anthropic import AnthropicStandin, text, tool_use   # tests/ is on sys.path

    plan = [tool_use("Write", {"file_path": str(path), "content": "hi\\n"}), text("Done.")]
    with AnthropicStandin(plan) as server:
        env = {**os.environ, **server.claude_env()}
        subprocess.run([claude, "-p", "make hello", ...], env=env)
        assert server.main_requests[1]["messages"][-1]["content"][0]["type"] == "tool_result"

Routing.  Claude Code sends the *agent turns* (the requests that carry the ``tools`` list) and,
besides them, side requests without tools (e.g. a title or a quota check).  Only agent turns
consume the reply plan; every other ``/v1/messages`` request gets ``side_reply``.  Pass
``handler=`` to take the whole decision yourself: it is called with every /v1/messages body and
returns a reply (or None to fall back on the plan).

A reply is a dict made by :func:`text`, :func:`tool_use`, :func:`turn` (several blocks in one
message), :func:`http_error` (an HTTP error status with an Anthropic error body) or
:func:`stream_error` (HTTP 200, then an ``error`` SSE event mid-stream).  A plan entry may also
be a callable taking the request body and returning a reply.  Any reply may carry ``headers``
(a dict), sent with it (the rate headers of a bucket's state, say).  Once the plan is used up, agent
turns get ``text("(stand-in: reply plan exhausted)")`` and ``exhausted`` counts them.

Every request the server receives, whatever its path, is kept in ``log`` (method, path, headers,
body) so a test can see what the CLI called; ``requests`` holds the JSON bodies sent to
``/v1/messages`` in arrival order.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = dict[str, Any]
PlanEntry = Reply | Callable[[dict[str, Any]], Reply]

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_standin{next(_ids):06d}{int(time.time() * 1000) % 10**8:08d}"


def text(message: str, *, input_tokens: int = 100, output_tokens: int = 50) -> Reply:
    """A final assistant message holding one text block (stop_reason ``end_turn``)."""
    return turn({"type": "text", "text": message}, input_tokens=input_tokens,
                output_tokens=output_tokens)


def tool_use(name: str, tool_input: dict[str, Any], *, tool_id: str | None = None,
             preamble: str | None = None, input_tokens: int = 100,
             output_tokens: int = 50) -> Reply:
    """An assistant message calling one tool (stop_reason ``tool_use``), after optional text."""
    blocks: list[dict[str, Any]] = []
    if preamble:
        blocks.append({"type": "text", "text": preamble})
    blocks.append({"type": "tool_use", "id": tool_id or _new_id("toolu"), "name": name,
                   "input": tool_input})
    return turn(*blocks, input_tokens=input_tokens, output_tokens=output_tokens)


def turn(*blocks: dict[str, Any], stop_reason: str | None = None, input_tokens: int = 100,
         output_tokens: int = 50) -> Reply:
    """An assistant message made of the given content blocks."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return {"kind": "message", "content": list(blocks), "stop_reason": stop_reason,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


def http_error(status: int = 500, error_type: str = "api_error",
               message: str = "stand-in: internal server error",
               retry: bool | None = False, headers: dict[str, str] | None = None) -> Reply:
    """An HTTP error status with Anthropic's JSON error body.

    ``retry`` sets the ``x-should-retry`` header the Anthropic SDK obeys (None: no header, so the
    SDK decides by status: 408/409/429/5xx are retried with backoff); ``headers`` adds others
    (``retry-after``, ``anthropic-ratelimit-*``).
    """
    return {"kind": "http_error", "status": status, "error_type": error_type,
            "message": message, "retry": retry, "headers": dict(headers or {})}


def stream_error(error_type: str = "overloaded_error", message: str = "stand-in: overloaded",
                 after_text: str | None = None) -> Reply:
    """HTTP 200 and message_start, then an ``error`` event (optionally after some text)."""
    return {"kind": "stream_error", "error_type": error_type, "message": message,
            "after_text": after_text}


def has_tools(body: dict[str, Any]) -> bool:
    """True for an agent turn: a /v1/messages request that offers tools."""
    return bool(body.get("tools"))


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (string content or its text blocks joined)."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(b.get("text", "") for b in content or [] if b.get("type") == "text")
    return ""


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the last user message."""
    messages = body.get("messages") or []
    if not messages or not isinstance(messages[-1].get("content"), list):
        return []
    return [b for b in messages[-1]["content"] if b.get("type") == "tool_result"]


class AnthropicStandin:
    """A threaded HTTP server answering like the Anthropic Messages API, from a script."""

    def __init__(self, plan: list[PlanEntry] | None = None, *,
                 handler: Callable[[dict[str, Any]], Reply | None] | None = None,
                 side_reply: PlanEntry | None = None, host: str = "127.0.0.1",
                 port: int = 0, delay: float = 0.0) -> None:
        self.plan: list[PlanEntry] = list(plan or [])
        self.handler = handler
        self.side_reply: PlanEntry = side_reply or text("Stand-in side reply.",
                                                        input_tokens=10, output_tokens=5)
        self.host = host
        self.port = port
        self.delay = delay
        self.log: list[dict[str, Any]] = []  # every request: method, path, headers, body
        self.requests: list[dict[str, Any]] = []  # JSON bodies sent to /v1/messages
        self.main_requests: list[dict[str, Any]] = []  # those that consumed the plan
        self.exhausted = 0
        self.headers: dict[str, str] = {}  # sent with every streamed reply (rate-limit state)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("stand-in not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> str:
        standin = self

        class Handler(_Handler):
            server_version = "anthropic-standin/1"
            owner = standin

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="anthropic-standin", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AnthropicStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def claude_env(self) -> dict[str, str]:
        """Environment that points the real `claude` CLI at this server and keeps it offline."""
        return {
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-standin",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "IS_SANDBOX": "1",
        }

    # -- reply selection ---------------------------------------------------------------------

    def paths(self) -> list[str]:
        """`METHOD path` of every request received, in order."""
        with self._lock:
            return [f"{r['method']} {r['path']}" for r in self.log]

    def _choose(self, body: dict[str, Any]) -> Reply:
        if self.handler is not None:
            reply = self.handler(body)
            if reply is not None:
                return reply
        if not has_tools(body):
            entry = self.side_reply
        else:
            with self._lock:
                self.main_requests.append(body)
                if self.plan:
                    entry = self.plan.pop(0)
                else:
                    self.exhausted += 1
                    entry = text("(stand-in: reply plan exhausted)")
        return entry(body) if callable(entry) else entry


class _Handler(BaseHTTPRequestHandler):
    owner: AnthropicStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet; the owner's log has everything

    # -- plumbing ----------------------------------------------------------------------------

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _record(self, body: Any) -> None:
        with self.owner._lock:
            self.owner.log.append({"method": self.command, "path": self.path,
                                   "headers": dict(self.headers.items()), "body": body,
                                   "time": time.time()})

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", _new_id("req"))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, name: str, payload: dict[str, Any]) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    # -- verbs -------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._record(None)
        self._send_json(200, {})

    def do_GET(self) -> None:
        self._record(None)
        path = self.path.split("?", 1)[0]
        if path.startswith("/v1/models"):
            self._send_json(200, {"data": [], "has_more": False, "first_id": None,
                                  "last_id": None})
        else:
            self._send_json(404, {"type": "error", "error": {
                "type": "not_found_error", "message": f"stand-in: no {path}"}})

    def do_POST(self) -> None:
        body = self._read_body()
        self._record(body)
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": 100})
            return
        if path != "/v1/messages" or not isinstance(body, dict):
            self._send_json(404, {"type": "error", "error": {
                "type": "not_found_error", "message": f"stand-in: no POST {path}"}})
            return
        with self.owner._lock:
            self.owner.requests.append(body)
        reply = self.owner._choose(body)
        if self.owner.delay:
            time.sleep(self.owner.delay)
        model = str(body.get("model") or "claude-sonnet-4-5")
        if reply["kind"] == "stream_error" and not body.get("stream"):
            # The CLI falls back to a non-streaming request after repeated stream failures;
            # answer that one with the matching HTTP error.
            reply = http_error(_ERROR_STATUS.get(reply["error_type"], 500), reply["error_type"],
                               reply["message"], retry=False)
        if reply["kind"] == "http_error":
            extra = dict(reply.get("headers") or {})
            if reply.get("retry") is not None:
                extra["x-should-retry"] = "true" if reply["retry"] else "false"
            self._send_json(reply["status"], {"type": "error", "error": {
                "type": reply["error_type"], "message": reply["message"]}}, extra)
        elif body.get("stream"):
            self._stream(reply, model)
        else:
            self._send_json(200, _message(reply, model, _new_id("msg")), reply.get("headers"))

    # -- streaming ---------------------------------------------------------------------------

    def _stream(self, reply: Reply, model: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", _new_id("req"))
        for key, value in {**self.owner.headers, **(reply.get("headers") or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        usage = reply.get("usage") or {"input_tokens": 100, "output_tokens": 50}
        start = _message(reply, model, _new_id("msg"))
        start.update(content=[], stop_reason=None, stop_sequence=None)
        start["usage"] = {**start["usage"], "output_tokens": 1}
        self._event("message_start", {"type": "message_start", "message": start})
        if reply["kind"] == "stream_error":
            if reply.get("after_text"):
                self._event("content_block_start", {"type": "content_block_start", "index": 0,
                                                    "content_block": {"type": "text",
                                                                      "text": ""}})
                self._event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta",
                                                              "text": reply["after_text"]}})
            self._event("error", {"type": "error", "error": {
                "type": reply["error_type"], "message": reply["message"]}})
            self._chunk(b"")
            return
        self._event("ping", {"type": "ping"})
        for index, block in enumerate(reply["content"]):
            for name, payload in _block_events(index, block):
                self._event(name, payload)
        self._event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reply["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]}})
        self._event("message_stop", {"type": "message_stop"})
        self._chunk(b"")


_ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
                 "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                 "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529}


def _usage(reply: Reply) -> dict[str, Any]:
    usage = reply.get("usage") or {"input_tokens": 100, "output_tokens": 50}
    return {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"],
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "service_tier": "standard"}


def _message(reply: Reply, model: str, msg_id: str) -> dict[str, Any]:
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": reply.get("content", []), "stop_reason": reply.get("stop_reason"),
            "stop_sequence": None, "usage": _usage(reply)}


def _block_events(index: int, block: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if block["type"] == "text":
        yield "content_block_start", {"type": "content_block_start", "index": index,
                                      "content_block": {"type": "text", "text": ""}}
        words = block["text"].split(" ")
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "text_delta", "text": piece}}
    elif block["type"] == "tool_use":
        yield "content_block_start", {"type": "content_block_start", "index": index,
                                      "content_block": {"type": "tool_use", "id": block["id"],
                                                        "name": block["name"], "input": {}}}
        raw = json.dumps(block["input"])
        for i in range(0, len(raw), 40):
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "input_json_delta",
                                                    "partial_json": raw[i:i + 40]}}
    else:
        yield "content_block_start", {"type": "content_block_start", "index": index,
                                      "content_block": block}
    yield "content_block_stop", {"type": "content_block_stop", "index": index}

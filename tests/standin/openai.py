"""A stand-in for the OpenAI Responses API, for driving the real Codex CLI offline.

Stdlib only.  It listens on 127.0.0.1 (port 0 by default: the OS picks one),
records every request it receives, and answers ``POST /v1/responses`` with a
scripted reply streamed as server-sent events, the way the Codex CLI expects:

    response.created
    response.output_item.added / response.output_text.delta / response.output_item.done
    response.completed            (with usage)

Usage::

    from standin.openai import OpenAIStandin, message, shell_call, error  # tests/ on sys.path

    script = [shell_call("printf hi > out.txt"), message("done")]
    with OpenAIStandin(script) as srv:
        # point Codex at srv.base_url (".../v1") through a custom model provider
        ...
        srv.requests      # list of Request(method, path, headers, body, json)

A script is a list of replies, used one per ``POST /v1/responses`` in order;
when it runs out the last reply repeats.  A reply is:

* ``message(text)``                    - a final assistant message
* ``shell_call(cmd)``                  - a call of Codex's shell tool
  (``exec_command`` with ``{"cmd": ...}``); Codex runs it and posts the output back
* ``apply_patch_call(patch)``          - Codex's freeform apply_patch tool
  (``add_file_patch(path, text)`` builds a patch that creates a file)
* ``reasoning(summary)``               - a reasoning item with a summary
* ``function_call(name, arguments)``   - any other function call
* ``error(status, message)``           - an HTTP error with an OpenAI error body
* ``failed(message)``                  - a 200 stream that ends in ``response.failed``
* a list of the item replies above (several output items in one response)
* a callable ``f(request) -> reply``

Each reply may carry a ``usage`` dict; the default counts a few tokens.

``POST /v1/chat/completions`` (streamed or not) answers from the same script,
for Chat Completions clients such as aider (through litellm): ``message`` text
becomes the assistant content, ``function_call`` replies become ``tool_calls``,
``error`` replies the same HTTP error; the usage goes out as ``prompt_tokens`` /
``completion_tokens`` (in the last chunk when ``stream_options.include_usage``).

Other endpoints: ``GET /v1/models`` answers a one-model list, everything else a
404 with an OpenAI-style error body.  All of them are recorded.
"""

from __future__ import annotations

import http.server
import itertools
import json
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

# A model slug Codex 0.169 ships metadata for: with it Codex offers its
# apply_patch tool and prints no "Model metadata ... not found" error item.
DEFAULT_MODEL = "gpt-5.5"

DEFAULT_USAGE: JSON = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 200},
    "output_tokens": 50,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 1250,
}


# ----------------------------------------------------------------------------
# replies


def message(text: str, usage: JSON | None = None) -> JSON:
    return {"kind": "message", "text": text, "usage": usage}


def function_call(name: str, arguments: Any, usage: JSON | None = None) -> JSON:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"kind": "function_call", "name": name, "arguments": arguments, "usage": usage}


def shell_call(cmd: str, workdir: str | None = None, usage: JSON | None = None) -> JSON:
    """A call of Codex's shell tool (``exec_command`` with ``cmd`` in Codex 0.169)."""
    args: dict[str, Any] = {"cmd": cmd, "login": False}
    if workdir is not None:
        args["workdir"] = workdir
    return function_call("exec_command", args, usage=usage)


def apply_patch_call(patch: str, usage: JSON | None = None) -> JSON:
    """A call of Codex's freeform ``apply_patch`` tool (a ``custom_tool_call``).

    Codex offers that tool only for models it has metadata for (e.g. "gpt-5.5");
    ``patch`` is the text from ``*** Begin Patch`` to ``*** End Patch``.
    """
    return {"kind": "custom_tool_call", "name": "apply_patch", "input": patch, "usage": usage}


def add_file_patch(path: str, text: str) -> str:
    """An apply_patch body that creates ``path`` holding ``text``."""
    lines = "".join(f"+{line}\n" for line in text.splitlines())
    return f"*** Begin Patch\n*** Add File: {path}\n{lines}*** End Patch\n"


def reasoning(summary: str, usage: JSON | None = None) -> JSON:
    """A reasoning item with a summary (shown by Codex as a ``reasoning`` item)."""
    return {"kind": "reasoning", "text": summary, "usage": usage}


def error(
    status: int = 500,
    msg: str = "stand-in server error",
    code: str | None = "server_error",
    headers: JSON | None = None,
    fields: JSON | None = None,
) -> JSON:
    """An HTTP error; ``fields`` go into the body's ``error`` object (``type``,
    ``resets_in_seconds`` of a usage limit)."""
    return {
        "kind": "error",
        "status": status,
        "message": msg,
        "code": code,
        "headers": headers or {},
        "fields": fields or {},
    }


def failed(msg: str = "stand-in response failed", code: str = "server_error") -> JSON:
    return {"kind": "failed", "message": msg, "code": code}


# ----------------------------------------------------------------------------
# server


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: OpenAIStandin

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up (retry, kill, keep-alive close) is not our error
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------

    def _record(self) -> Request:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        req = Request(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        self.server.standin._log(req)
        return req

    def _read_chunked(self) -> bytes:
        out = b""
        while True:
            size = int(self.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def _send_json(self, status: int, obj: Any, headers: JSON | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._send_json(
            404,
            {
                "error": {
                    "message": f"no route {self.command} {self.path}",
                    "type": "invalid_request_error",
                    "code": "not_found",
                }
            },
        )

    # -- routes ---------------------------------------------------------------

    def do_GET(self) -> None:
        self._record()
        path = self.path.split("?")[0]
        if path.endswith("/models"):
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": DEFAULT_MODEL,
                            "object": "model",
                            "created": 0,
                            "owned_by": "standin",
                        }
                    ],
                },
            )
        else:
            self._not_found()

    def do_POST(self) -> None:
        req = self._record()
        path = self.path.split("?")[0]
        if path.endswith("/responses"):
            self._responses(req)
        elif path.endswith("/chat/completions"):
            self._chat(req)
        else:
            self._not_found()

    def do_DELETE(self) -> None:
        self._record()
        self._not_found()

    def _responses(self, req: Request) -> None:
        standin = self.server.standin
        reply = standin._next_reply(req)
        if callable(reply):
            reply = reply(req)
        if isinstance(reply, dict) and reply.get("kind") == "error":
            self._send_json(
                reply["status"],
                {
                    "error": {
                        "message": reply["message"],
                        "type": "server_error",
                        "param": None,
                        "code": reply["code"],
                        **reply.get("fields", {}),
                    }
                },
                reply.get("headers"),
            )
            return
        body = req.json or {}
        items = reply if isinstance(reply, list) else [reply]
        self._stream(body, items)

    # -- Chat Completions (what litellm-based clients such as aider call) ---------

    def _chat(self, req: Request) -> None:
        standin = self.server.standin
        reply = standin._next_reply(req)
        if callable(reply):
            reply = reply(req)
        if isinstance(reply, dict) and reply.get("kind") == "error":
            self._send_json(
                reply["status"],
                {
                    "error": {
                        "message": reply["message"],
                        "type": "server_error",
                        "param": None,
                        "code": reply["code"],
                        **reply.get("fields", {}),
                    }
                },
                reply.get("headers"),
            )
            return
        body = req.json or {}
        items = reply if isinstance(reply, list) else [reply]
        text = "".join(i["text"] for i in items if i["kind"] == "message")
        calls = [
            {
                "id": f"call_standin_{next(standin._ids)}",
                "type": "function",
                "function": {"name": i["name"], "arguments": i["arguments"]},
            }
            for i in items
            if i["kind"] == "function_call"
        ]
        usage: JSON = next((i["usage"] for i in items if i.get("usage")), DEFAULT_USAGE)
        chat_usage = {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            "prompt_tokens_details": {
                "cached_tokens": usage.get("input_tokens_details", {}).get("cached_tokens", 0)
            },
        }
        cid = f"chatcmpl-standin-{next(standin._ids)}"
        model = body.get("model") or DEFAULT_MODEL
        created = int(time.time())
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            self._send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                    "usage": chat_usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: JSON, finish_reason: str | None = None, **extra: Any) -> None:
            obj: JSON = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        for piece in _chunks(text) if text else []:
            chunk({"content": piece})
        for n, call in enumerate(calls):
            chunk({"tool_calls": [{"index": n, **call}]})
        chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            obj: JSON = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": chat_usage,
            }
            self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    # -- Responses ----------------------------------------------------------------

    def _stream(self, body: JSON, items: list[JSON]) -> None:
        standin = self.server.standin
        resp_id = f"resp_standin_{next(standin._ids)}"
        model = body.get("model") or DEFAULT_MODEL
        created = int(time.time())
        base: JSON = {
            "id": resp_id,
            "object": "response",
            "created_at": created,
            "model": model,
            "output": [],
        }

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("x-request-id", resp_id)
        self.end_headers()
        self.close_connection = True
        seq = itertools.count()

        def emit(event: JSON) -> None:
            event = {
                "type": event["type"],
                "sequence_number": next(seq),
                **{k: v for k, v in event.items() if k != "type"},
            }
            data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            self.wfile.write(data.encode())
            self.wfile.flush()

        emit({"type": "response.created", "response": {**base, "status": "in_progress"}})
        emit({"type": "response.in_progress", "response": {**base, "status": "in_progress"}})

        usage = None
        outputs: list[JSON] = []
        for idx, item in enumerate(items):
            usage = item.get("usage") or usage
            kind = item["kind"]
            if kind == "failed":
                emit(
                    {
                        "type": "response.failed",
                        "response": {
                            **base,
                            "status": "failed",
                            "output": outputs,
                            "error": {"code": item["code"], "message": item["message"]},
                        },
                    }
                )
                return
            n = next(standin._ids)
            if kind == "message":
                item_id = f"msg_standin_{n}"
                done = {
                    "id": item_id,
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": item["text"], "annotations": []}],
                }
                emit(
                    {
                        "type": "response.output_item.added",
                        "output_index": idx,
                        "item": {**done, "status": "in_progress", "content": []},
                    }
                )
                emit(
                    {
                        "type": "response.content_part.added",
                        "item_id": item_id,
                        "output_index": idx,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    }
                )
                for chunk in _chunks(item["text"]):
                    emit(
                        {
                            "type": "response.output_text.delta",
                            "item_id": item_id,
                            "output_index": idx,
                            "content_index": 0,
                            "delta": chunk,
                        }
                    )
                emit(
                    {
                        "type": "response.output_text.done",
                        "item_id": item_id,
                        "output_index": idx,
                        "content_index": 0,
                        "text": item["text"],
                    }
                )
                emit(
                    {
                        "type": "response.content_part.done",
                        "item_id": item_id,
                        "output_index": idx,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": item["text"], "annotations": []},
                    }
                )
            elif kind == "function_call":
                item_id = f"fc_standin_{n}"
                done = {
                    "id": item_id,
                    "type": "function_call",
                    "status": "completed",
                    "name": item["name"],
                    "arguments": item["arguments"],
                    "call_id": f"call_standin_{n}",
                }
                emit(
                    {
                        "type": "response.output_item.added",
                        "output_index": idx,
                        "item": {**done, "status": "in_progress", "arguments": ""},
                    }
                )
                emit(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item_id,
                        "output_index": idx,
                        "delta": item["arguments"],
                    }
                )
                emit(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item_id,
                        "output_index": idx,
                        "arguments": item["arguments"],
                    }
                )
            elif kind == "custom_tool_call":
                item_id = f"ctc_standin_{n}"
                done = {
                    "id": item_id,
                    "type": "custom_tool_call",
                    "status": "completed",
                    "name": item["name"],
                    "input": item["input"],
                    "call_id": f"call_standin_{n}",
                }
                emit(
                    {
                        "type": "response.output_item.added",
                        "output_index": idx,
                        "item": {**done, "status": "in_progress", "input": ""},
                    }
                )
                emit(
                    {
                        "type": "response.custom_tool_call_input.delta",
                        "item_id": item_id,
                        "output_index": idx,
                        "delta": item["input"],
                    }
                )
                emit(
                    {
                        "type": "response.custom_tool_call_input.done",
                        "item_id": item_id,
                        "output_index": idx,
                        "input": item["input"],
                    }
                )
            elif kind == "reasoning":
                item_id = f"rs_standin_{n}"
                done = {
                    "id": item_id,
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": item["text"]}],
                }
                emit(
                    {
                        "type": "response.output_item.added",
                        "output_index": idx,
                        "item": {**done, "summary": []},
                    }
                )
                emit(
                    {
                        "type": "response.reasoning_summary_part.added",
                        "item_id": item_id,
                        "output_index": idx,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    }
                )
                emit(
                    {
                        "type": "response.reasoning_summary_text.delta",
                        "item_id": item_id,
                        "output_index": idx,
                        "summary_index": 0,
                        "delta": item["text"],
                    }
                )
                emit(
                    {
                        "type": "response.reasoning_summary_text.done",
                        "item_id": item_id,
                        "output_index": idx,
                        "summary_index": 0,
                        "text": item["text"],
                    }
                )
                emit(
                    {
                        "type": "response.reasoning_summary_part.done",
                        "item_id": item_id,
                        "output_index": idx,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": item["text"]},
                    }
                )
            else:
                raise ValueError(f"unknown reply kind {kind!r}")
            emit({"type": "response.output_item.done", "output_index": idx, "item": done})
            outputs.append(done)

        emit(
            {
                "type": "response.completed",
                "response": {
                    **base,
                    "status": "completed",
                    "output": outputs,
                    "usage": usage or DEFAULT_USAGE,
                },
            }
        )


def _chunks(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class OpenAIStandin:
    """Start/stop a stand-in Responses API server; see the module docstring."""

    def __init__(self, script: list[Any] | None = None, host: str = "127.0.0.1", port: int = 0):
        self.script = list(script or [message("ok")])
        self.host = host
        self.port = port
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._n_responses = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> OpenAIStandin:
        self._server = _Server((self.host, self.port), _Handler)
        self._server.standin = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openai-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenAIStandin:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give a client as its OpenAI base URL (ends in /v1)."""
        return self.url + "/v1"

    @property
    def chat_requests(self) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.method == "POST" and r.path.split("?")[0].endswith("/chat/completions")
        ]

    @property
    def response_requests(self) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.method == "POST" and r.path.split("?")[0].endswith("/responses")
        ]

    # internals
    def _log(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def _next_reply(self, req: Request) -> Any:
        with self._lock:
            i = min(self._n_responses, len(self.script) - 1)
            self._n_responses += 1
            return self.script[i]


def codex_config(
    base_url: str,
    model: str = DEFAULT_MODEL,
    env_key: str = "STANDIN_API_KEY",
    provider: str = "standin",
    retries: int | None = 0,
) -> str:
    """A config.toml for $CODEX_HOME that sends Codex to the stand-in.

    ``retries=0`` makes a failed request fail the turn at once; ``None`` keeps
    Codex's own retry policy (it retries with back-off, printing
    ``{"type":"error","message":"Reconnecting... N/M ..."}`` events meanwhile).
    """
    text = (
        f'model = "{model}"\n'
        f'model_provider = "{provider}"\n'
        f"\n[model_providers.{provider}]\n"
        f'name = "Stand-in"\n'
        f'base_url = "{base_url}"\n'
        f'env_key = "{env_key}"\n'
        f'wire_api = "responses"\n'
    )
    if retries is not None:
        text += f"request_max_retries = {retries}\nstream_max_retries = {retries}\n"
    return text


if __name__ == "__main__":  # manual use: python -m tests.standin.openai [PORT]
    import sys

    srv = OpenAIStandin(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(srv.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()

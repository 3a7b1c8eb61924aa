"""A relay on 127.0.0.1 between agent CLIs and their provider's API: it holds each request
until the provider has room, so that a fleet of agents sharing one rate limit is refused
almost never, where each CLI retrying on its own is refused about once per call.

Pacing whole targets (run/pacing.py) cannot do this: one CLI asks for its next model call
the moment the last is answered. So, for a CLI that talks to the API with a key (never a
subscription's login: agentfile does not stand between a person's account and its
provider), agentfile points the CLI's base URL at the relay (`ANTHROPIC_BASE_URL=
http://127.0.0.1:PORT/t3`, one path per target, to tell who was held). The relay sends each
request on unchanged, streams the answer back unchanged, and paces:

- From the rate headers on the provider's answers (`anthropic-ratelimit-requests-remaining`
  and `-limit`, per minute) it keeps a copy of the provider's bucket: a request waits while
  the copy holds less than one request. Until the first answer says, one request goes at a
  time, or one per `PROBE_WAIT_S` while an answer is slow to come (its headers come only
  once the model has begun: a request the provider keeps waiting holds no one else for
  long).
- A 429 or 529 that names a short wait (`retry-after`, at most `HOLD_LIMIT_S` in all) is
  not passed on: every request is held until the wait is over and the refused one is sent
  again. A provider that sends no rate headers gets its requests spaced, the spacing widened
  on each refusal and narrowed on each answer, as TCP does.
- A refusal naming no wait or a longer one (a spent quota), or saying `x-should-retry:
  false`, and every other answer, reaches the CLI as it came: it reports it, retries on its
  own, or gives up, and pacing.py takes over as without the relay.

Standard library only: http.server for the CLIs' side, urllib for the provider's (which
honours HTTPS_PROXY and NO_PROXY, as the CLI would).
"""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import json
import math
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

HOLD_LIMIT_S = 60.0  # a refusal asking for a longer wait goes to the CLI (a spent quota)
REFUSED = {429: "rate limit", 529: "overloaded"}
WIDEN = 1.5  # the spacing of a provider without rate headers, on a refusal
NARROW = 0.95  # … and on an answer
LEAST_GAP_S = 0.25
PROBE_WAIT_S = 2.0  # until a first answer, the most a request waits for the one before
UPSTREAM_TIMEOUT_S = 600.0  # as long as the CLIs wait for an answer themselves
# Connection-level headers: each side of the relay has its own (RFC 9110 §7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}


class Headers(Protocol):
    """An answer's headers, looked up without regard to case (an HTTPMessage), or a dict."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True)
class Refusal:
    """A refusal the relay held on to, for the build to report (a `rate_limited` event)."""

    target: str
    status: int
    wait_s: float


class Gate:
    """When the next request may go to one provider: its bucket as its answers said, a
    pause a refusal asked for, and a spacing learnt from refusals."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.changed = threading.Condition()
        self.known = False  # an answer has come: until then, one request at a time
        self.in_flight = 0
        self.probed_at = -math.inf  # … when the last of those went
        self.tokens: float | None = None  # requests the provider has room for, as it said
        self.rate: float | None = None  # … refilled per second
        self.capacity = 1.0  # … at most (the most it ever said it had, with the one it took)
        self.stamp = clock()
        self.paused_until = 0.0
        self.gap = 0.0  # spacing, for a provider that sends no rate headers
        self.next_at = 0.0
        self.closed = False

    def _room(self, now: float) -> float:
        """Seconds until a request may go (0: now)."""
        waits = [self.paused_until - now, self.next_at - now]
        if not self.known and self.in_flight:
            waits.append(self.probed_at + PROBE_WAIT_S - now)
        filled = self._filled(now)
        if filled is not None and self.rate and filled < 1:
            waits.append((1 - filled) / self.rate)
        return max(max(waits), 0.0)

    def _filled(self, now: float) -> float | None:
        """The copy of the provider's bucket now: None while it is not known."""
        if self.tokens is None or not self.rate:
            return None
        return min(self.tokens + (now - self.stamp) * self.rate, self.capacity)

    def enter(self, gone: Callable[[], bool]) -> bool:
        """Wait until a request may go, and count it as gone; False when the relay closed
        or the CLI hung up while it waited."""
        with self.changed:
            while True:
                if self.closed or gone():
                    return False
                now = self.clock()
                wait = self._room(now)
                if wait <= 0:
                    break
                self.changed.wait(min(wait, 0.5))
            filled = self._filled(now)
            if filled is not None:
                self.tokens = filled - 1
                self.stamp = now
            self.next_at = now + self.gap
            self.in_flight += 1
            if not self.known:
                self.probed_at = now
            return True

    def answered(self, headers: Headers) -> None:
        """An answer (not a refusal): what its rate headers say of the provider's bucket."""
        with self.changed:
            self.in_flight -= 1
            self.known = True
            self.gap = self.gap * NARROW if self.gap > LEAST_GAP_S else 0.0
            remaining, per_minute = _rate_headers(headers)
            if remaining is not None and per_minute:
                now = self.clock()
                self.rate = per_minute / 60.0
                self.capacity = max(self.capacity, remaining + 1)
                mine = self._filled(now)
                # What it says is as of when it took the request: never more than the copy
                # knows was sent since.
                self.tokens = remaining if mine is None else min(mine, remaining)
                self.stamp = now
            self.changed.notify_all()

    def refused(self, headers: Headers) -> float | None:
        """A refusal: every request waits as long as the provider said; that wait (None: it
        named none, and the CLI's own back-off decides)."""
        with self.changed:
            self.in_flight -= 1
            self.known = True
            now = self.clock()
            wait = _retry_after(headers, time.time())
            if wait is not None:
                self.paused_until = max(self.paused_until, now + wait)
            _, per_minute = _rate_headers(headers)
            if per_minute:
                self.rate = per_minute / 60.0
                self.tokens = 0.0
                # Room for one request once the wait is over.
                self.stamp = now + (wait or 0.0) - 1 / self.rate
            else:
                self.gap = max(self.gap * WIDEN, LEAST_GAP_S)
            self.changed.notify_all()
            return wait

    def failed(self) -> None:
        """The provider could not be reached: the request no longer counts as going."""
        with self.changed:
            self.in_flight -= 1
            self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()


class Relay:
    """One provider's relay: a threaded HTTP server on 127.0.0.1 forwarding to `upstream`."""

    def __init__(self, upstream: str, on_refused: Callable[[Refusal], None]) -> None:
        self.upstream = upstream.rstrip("/")
        self.on_refused = on_refused
        self.gate = Gate()
        self.targets: dict[str, str] = {}  # path segment -> target
        self.segments: dict[str, str] = {}  # target -> path segment
        self._numbers = itertools.count(1)
        relay = self

        class Handler(_Forward):
            owner = relay

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="agentfile-relay",
                                       daemon=True)
        self.thread.start()

    def url_for(self, target: str) -> str:
        """The base URL a target's CLI is given: its own path on the relay."""
        segment = self.segments.get(target)
        if segment is None:
            segment = self.segments[target] = f"t{next(self._numbers)}"
            self.targets[segment] = target
        return f"http://127.0.0.1:{self.server.server_address[1]}/{segment}"

    def close(self) -> None:
        self.gate.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Relays:
    """A build's relays: one per provider API, started when a target first needs it."""

    def __init__(self, on_refused: Callable[[str, Refusal], None]) -> None:
        self.on_refused = on_refused
        self.relays: dict[tuple[str, str], Relay] = {}
        self.lock = threading.Lock()

    def url_for(self, provider: str, upstream: str, target: str) -> str:
        with self.lock:
            relay = self.relays.get((provider, upstream))
            if relay is None:
                relay = self.relays[(provider, upstream)] = Relay(
                    upstream, lambda refusal: self.on_refused(provider, refusal))
            return relay.url_for(target)

    def close(self) -> None:
        with self.lock:
            relays, self.relays = list(self.relays.values()), {}
        for relay in relays:
            relay.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a CLI that hung up mid-answer ends its connection, not the build's output
        (the server's default prints a traceback)."""


class _Forward(BaseHTTPRequestHandler):
    owner: Relay
    protocol_version = "HTTP/1.1"  # the CLIs keep their connections open

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a build's output is its targets'

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def _forward(self) -> None:
        segment, _, rest = self.path.lstrip("/").partition("/")
        target = self.owner.targets.get(segment, "")
        url = f"{self.owner.upstream}/{rest}"
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        held_s = 0.0
        gate = self.owner.gate
        while True:
            if not gate.enter(self._gone):
                self.close_connection = True
                return
            try:
                answer = _send(url, self.command, headers, body)
            except (OSError, HTTPException) as err:
                gate.failed()
                reason = getattr(err, "reason", err)
                self._error(502, f"agentfile's relay could not reach {self.owner.upstream}: "
                                 f"{reason}")
                return
            with answer:
                status = answer.status
                if status in REFUSED:
                    wait = gate.refused(answer.headers)
                    # Held when the provider named a short wait and did not say its
                    # clients should not retry (then the CLI decides: a fallback model?).
                    if wait is not None and held_s + wait <= HOLD_LIMIT_S and \
                            answer.headers.get("x-should-retry", "").lower() != "false":
                        held_s += wait
                        answer.read()
                        self.owner.on_refused(Refusal(target, status, wait))
                        continue
                else:
                    gate.answered(answer.headers)
                self._pass_on(answer)
                return

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else (b"" if self.command == "POST" else None)

    def _gone(self) -> bool:
        """The CLI hung up (it was stopped) while its request waited: nothing to send."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def _pass_on(self, answer: HTTPResponse) -> None:
        """The provider's answer, as it came (streamed: a model's answer arrives in parts)."""
        length = answer.headers.get("Content-Length")
        self.send_response(answer.status, answer.reason)
        for key, value in answer.headers.items():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        chunked = length is None and self.command != "HEAD"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        try:
            while self.command != "HEAD":
                part = answer.read1(65536)
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                elif part:
                    self.wfile.write(part)
                self.wfile.flush()
                if not part:
                    break
        except (OSError, HTTPException):
            self.close_connection = True  # the CLI hung up, or the provider broke off

    def _error(self, status: int, message: str) -> None:
        data = json.dumps({"type": "error", "error": {"type": "api_error",
                                                      "message": message}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)


def _send(url: str, method: str, headers: Mapping[str, str],
          body: bytes | None) -> HTTPResponse:
    """The provider's answer to one request, whatever its status."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)
    try:
        answer = urllib.request.urlopen(request, timeout=UPSTREAM_TIMEOUT_S)
    except urllib.error.HTTPError as refused:  # an answer too: an error status
        return refused  # type: ignore[return-value]  # an HTTPResponse underneath
    return answer  # type: ignore[no-any-return]


def _rate_headers(headers: Headers) -> tuple[float | None, float | None]:
    """Requests left and the limit per minute, as the provider's answer said."""
    return (_number(headers.get("anthropic-ratelimit-requests-remaining")),
            _number(headers.get("anthropic-ratelimit-requests-limit")))


def _retry_after(headers: Headers, now: float) -> float | None:
    """Seconds the provider asked to wait: `retry-after` as seconds or as an HTTP date."""
    said = headers.get("retry-after")
    if said is None:
        return None
    seconds = _number(said)
    if seconds is None:
        with contextlib.suppress(TypeError, ValueError):
            return max(email.utils.parsedate_to_datetime(said).timestamp() - now, 0.0)
        return None
    return max(seconds, 0.0)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None

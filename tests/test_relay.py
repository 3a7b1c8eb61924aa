"""agentfile's relay between agent CLIs and their API (agents/relay.py): its gate on a fake
clock, its forwarding against the Anthropic stand-in, and builds of the real Claude Code CLI
through it against a token bucket, with and without the API's rate headers."""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Run, git, installed_cli
from standin.anthropic import AnthropicStandin, Reply, http_error, text, tool_use
from standin.bucket import TokenBucket

from agentfile.agents import provider
from agentfile.agents.relay import LEAST_GAP_S, PROBE_WAIT_S, Gate, Refusal, Relay

# -- the gate, on a clock the test moves ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def never_gone() -> bool:
    return False


def test_until_the_first_answer_one_request_goes_at_a_time() -> None:
    clock = Clock()
    gate = Gate(clock)
    assert gate.enter(never_gone)
    assert gate._room(clock.now) == PROBE_WAIT_S  # the second waits for an answer …
    clock.now += PROBE_WAIT_S  # … but not for one the provider keeps waiting
    assert gate._room(clock.now) == 0.0
    assert gate.enter(never_gone)
    assert gate._room(clock.now) == PROBE_WAIT_S  # the third, for an answer to either
    gate.answered({})
    assert gate._room(clock.now) == 0.0  # no rate headers, no refusal: no limit known


def test_the_rate_headers_keep_a_copy_of_the_providers_bucket() -> None:
    clock = Clock()
    gate = Gate(clock)
    assert gate.enter(never_gone)
    gate.answered({"anthropic-ratelimit-requests-limit": "30",  # one every 2 s
                   "anthropic-ratelimit-requests-remaining": "2"})
    for _ in range(2):
        assert gate._room(clock.now) == 0.0
        assert gate.enter(never_gone)
    assert gate._room(clock.now) == pytest.approx(2.0)  # the bucket is empty: its pace
    clock.now += 2.0
    assert gate._room(clock.now) == 0.0
    # An answer never raises the copy above what was sent since (it speaks of its own time).
    gate.answered({"anthropic-ratelimit-requests-limit": "30",
                   "anthropic-ratelimit-requests-remaining": "5"})
    assert gate.tokens == pytest.approx(1.0)
    # Idle for an hour: room for as many as it ever said it had (5, and the one it took).
    clock.now += 3600
    assert gate._filled(clock.now) == 6.0


def test_a_refusal_pauses_every_request_for_the_wait_it_names() -> None:
    clock = Clock()
    gate = Gate(clock)
    assert gate.enter(never_gone)
    assert gate.refused({"retry-after": "3"}) == 3.0
    assert gate._room(clock.now) == pytest.approx(3.0)
    assert gate.gap == LEAST_GAP_S  # no rate headers: requests are spaced from now on
    clock.now += 3.0
    assert gate.enter(never_gone)
    assert gate._room(clock.now) == pytest.approx(LEAST_GAP_S)
    assert gate.refused({}) is None  # named no wait: the CLI's own back-off decides
    assert gate.gap == pytest.approx(LEAST_GAP_S * 1.5)


def test_a_request_whose_cli_hung_up_is_not_sent() -> None:
    gate = Gate(Clock())
    assert gate.enter(never_gone)
    assert not gate.enter(lambda: True)
    gate.close()
    assert not gate.enter(never_gone)


def test_a_login_is_never_relayed_an_api_key_is() -> None:
    claude = provider("claude")
    assert claude.api({}) is None  # a claude.ai login
    assert claude.api({"ANTHROPIC_API_KEY": "k", "CLAUDE_CODE_USE_BEDROCK": "1"}) is None
    assert claude.api({"ANTHROPIC_API_KEY": "k"}) == ("ANTHROPIC_BASE_URL",
                                                       "https://api.anthropic.com")
    assert claude.api({"ANTHROPIC_AUTH_TOKEN": "t", "ANTHROPIC_BASE_URL": "http://gw/x"}) == (
        "ANTHROPIC_BASE_URL", "http://gw/x")
    assert provider("codex").api({"OPENAI_API_KEY": "k"}) is None


# -- the relay against the stand-in ----------------------------------------------------------


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json",
                                              "x-api-key": "sk-test"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_it_forwards_a_streamed_answer_unchanged_under_its_base_path() -> None:
    held: list[Refusal] = []
    with AnthropicStandin([text("Hello there.")]) as server:
        relay = Relay(server.base_url + "/", held.append)
        try:
            base = relay.url_for("greet")
            assert relay.url_for("greet") == base  # one path per target
            status, headers, body = post(base + "/v1/messages?beta=true", {
                "model": "m", "stream": True, "tools": [{"name": "x"}],
                "messages": [{"role": "user", "content": "hi"}]})
        finally:
            relay.close()
        sent = server.log[-1]
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert b"event: message_stop" in body and b"Hello" in body
    assert sent["path"] == "/v1/messages?beta=true"
    passed = {k.lower(): v for k, v in sent["headers"].items()}
    assert passed["x-api-key"] == "sk-test"  # the CLI's credentials, passed on
    assert held == []


def test_a_short_named_wait_is_held_and_the_request_sent_again() -> None:
    answers = [http_error(429, "rate_limit_error", "slow down", retry=None,
                          headers={"retry-after": "1"}), text("Done.")]
    held: list[Refusal] = []
    with AnthropicStandin(handler=lambda body: answers.pop(0)) as server:
        relay = Relay(server.base_url, held.append)
        try:
            status, _, body = post(relay.url_for("t") + "/v1/messages",
                                   {"model": "m", "messages": []})
        finally:
            relay.close()
        times = [r["time"] for r in server.log]
    assert status == 200 and b"Done." in body
    assert held == [Refusal("t", 429, 1.0)]
    assert times[1] - times[0] >= 1.0  # sent again once the wait was over


@pytest.mark.parametrize("refusal", [
    http_error(529, "overloaded_error", "busy", retry=False),  # x-should-retry: false
    http_error(429, "rate_limit_error", "quota", retry=None, headers={"retry-after": "3600"}),
    http_error(429, "rate_limit_error", "no wait named", retry=None),
])
def test_other_refusals_reach_the_cli_as_they_came(refusal: Reply) -> None:
    held: list[Refusal] = []
    with AnthropicStandin(handler=lambda body: refusal) as server:
        relay = Relay(server.base_url, held.append)
        try:
            status, headers, body = post(relay.url_for("t") + "/v1/messages",
                                         {"model": "m", "messages": []})
        finally:
            relay.close()
        sent = len(server.log)
    assert status == refusal["status"] and refusal["message"].encode() in body
    assert sent == 1 and held == []
    got = {k.lower(): v for k, v in headers.items()}
    for key, value in refusal["headers"].items():
        assert got[key.lower()] == value


def test_an_api_it_cannot_reach_is_an_api_error_the_cli_reports() -> None:
    relay = Relay("http://127.0.0.1:9", lambda refusal: None)  # the discard port: refused
    try:
        status, _, body = post(relay.url_for("t") + "/v1/messages", {"messages": []})
    finally:
        relay.close()
    assert status == 502
    assert "agentfile's relay could not reach http://127.0.0.1:9" in \
        json.loads(body)["error"]["message"]


# -- builds of the real Claude Code through the relay -----------------------------------------


@pytest.fixture(scope="module")
def claude() -> str:
    return installed_cli("install_claude.sh")


def bucket_api(bucket: TokenBucket, rate_headers: bool) -> Any:
    """An API behind the bucket (its rate headers on every answer, or none): a Write of the
    file the prompt names, then a final message."""
    lock = threading.Lock()

    def api(body: dict[str, Any]) -> Reply:
        with lock:
            wait = bucket.take()
            said = bucket.headers() if rate_headers else {}
        if wait:
            return http_error(429, "rate_limit_error", "stand-in: rate limited", retry=None,
                              headers={"retry-after": TokenBucket.retry_after(wait), **said})
        blob = json.dumps(body)
        if '"tool_result"' in blob:
            return {**text("Wrote it."), "headers": said}
        name = re.search(r"Create (\w+\.txt)", blob)
        folder = re.search(r"[Ww]orking directory: ([^\\\"\n]+)", blob)
        assert name and folder
        return {**tool_use("Write", {"file_path": f"{folder.group(1)}/{name.group(1)}",
                                     "content": "done\n"}), "headers": said}

    return api


@pytest.mark.parametrize("rate_headers", [True, False], ids=["rate-headers", "retry-after"])
def test_three_agents_share_a_bucket_through_the_relay(
        repo: Path, agentfile_cli: Run, claude: str, tmp_path: Path,
        rate_headers: bool) -> None:
    """-j3 against an API that admits one call, then one a second. With its rate headers
    the relay never lets a call be refused; with retry-after alone, every refusal is held
    by the relay (a `rate_limited` event each), never seen by a CLI; every target lands."""
    bucket = TokenBucket(burst=1, interval=1.0)
    targets = "".join(f't{i}:\n    agent = sonnet\n    prompt = "Create t{i}.txt"\n'
                      for i in range(3))
    (repo / "Agentfile").write_text('agent sonnet: claude\n    model = "claude-sonnet-4-5"\n'
                                    + targets)
    git(repo, "add", "Agentfile")
    git(repo, "commit", "-qm", "manifest")
    with AnthropicStandin(handler=bucket_api(bucket, rate_headers)) as server:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CLAUDE", "ANTHROPIC"))}
        env.update(server.claude_env(), HOME=str(tmp_path), AGENTFILE_CLAUDE=claude)
        result = agentfile_cli("build", "-j3", "--json", cwd=repo, env=env, timeout=180)
    assert result.code == 0, result.out + result.err
    assert all((repo / f"t{i}.txt").read_text() == "done\n" for i in range(3))
    assert bucket.admitted == 6
    run = sorted((repo / ".agentfile" / "runs").iterdir())[-1]
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    limited = [e for e in events if e["event"] == "rate_limited"]
    if rate_headers:
        assert bucket.rejected == 0 and limited == []
    else:
        assert len(limited) == bucket.rejected
        assert all(e["retrying"] and "held by agentfile's relay" in e["detail"]
                   for e in limited)
    logs = "".join(p.read_text() for p in (run / "logs").glob("*.jsonl"))
    assert '"api_retry"' not in logs  # no CLI met a refusal
    assert {e["attempt"] for e in events if e["event"] == "target_finished"} == {1}

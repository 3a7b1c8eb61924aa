"""Rate limits, overloads and spent quotas: each provider's signals, read from what the real
CLIs printed (tests/data/*/), and builds with the real Claude Code and Codex CLIs against
stand-ins that refuse (429/529 with retry-after, a token bucket, a spent plan)."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, Run, codex_env, git, installed_cli
from standin.anthropic import AnthropicStandin, Reply, http_error, text, tool_use
from standin.bucket import TokenBucket
from standin.openai import OpenAIStandin, error, message

from agentfile.agents import provider
from agentfile.agents.base import RateLimit
from agentfile.agents.events import time_in, wait_in
from agentfile.run.pacing import FIRST_BACKOFF_S


def signals(name: str, capture: Path) -> list[RateLimit]:
    chosen = provider(name)
    return [s for line in capture.read_text().splitlines()
            if (s := chosen.rate_limit(line)) is not None]


# -- what each CLI prints ---------------------------------------------------------------------


def test_claude_retrying_on_its_own_and_giving_up() -> None:
    retried = signals("claude", DATA / "claude" / "rate_limit_retry.jsonl")
    assert [(s.reason, s.retrying) for s in retried] == [("rate limit", True)] * 2
    assert all(s.wait_s is not None and 1.0 <= s.wait_s < 1.5 for s in retried)  # retry-after 1
    gave_up = signals("claude", DATA / "claude" / "rate_limited.jsonl")
    assert [(s.reason, s.retrying) for s in gave_up] == [("rate limit", False)]
    overloaded = signals("claude", DATA / "claude" / "overloaded.jsonl")
    assert [(s.reason, s.retrying) for s in overloaded] == [("overloaded", True),
                                                            ("overloaded", False)]
    # an `overloaded_error` in the stream, then the 529 the CLI's last try got
    assert [s.reason for s in signals("claude", DATA / "claude" / "stream_error.jsonl")] == [
        "overloaded"]
    for other in ("success", "api_error", "budget"):  # not the provider's limits
        assert signals("claude", DATA / "claude" / f"{other}.jsonl") == [], other


def test_claude_subscription_limit_rejected_until_its_reset() -> None:
    found = signals("claude", DATA / "claude" / "rate_limit_event.jsonl")
    assert [(s.reason, s.resets_at) for s in found] == [("quota", 1778565600.0)]


def test_codex_retry_limit_and_usage_limit() -> None:
    found = signals("codex", DATA / "codex" / "fail-http429-ratelimit.jsonl")
    assert [(s.reason, s.retrying) for s in found] == [("rate limit", True)] * 2 + [
        ("rate limit", False)]
    quota = signals("codex", DATA / "codex" / "fail-http429-quota.jsonl")
    assert [(s.reason, s.resets_at) for s in quota] == [("quota", None)]
    assert signals("codex", DATA / "codex" / "fail-http500-default-retries.jsonl") == []
    # "try again at 8:13 PM", captured at 18:13: two hours on, in local time
    capture = (DATA / "codex" / "fail-http429-usage-limit.jsonl").read_text()
    captured_at = datetime.datetime(2026, 12, 4, 18, 13, 30).timestamp()
    reset = time_in(capture, captured_at)
    assert reset == datetime.datetime(2026, 12, 4, 20, 13).timestamp()
    assert [s.reason for s in signals("codex", DATA / "codex" /
                                      "fail-http429-usage-limit.jsonl")] == ["quota"]


def test_gemini_and_aider_from_their_captured_output() -> None:
    gemini = signals("gemini", DATA / "gemini" / "fail-http429.jsonl") + signals(
        "gemini", DATA / "gemini" / "fail-http429.stderr.txt")
    assert [(s.reason, s.retrying) for s in gemini] == [("rate limit", False)] * 2
    for other in ("fail-http500.jsonl", "fail-http500.stderr.txt", "success.jsonl"):
        assert signals("gemini", DATA / "gemini" / other) == [], other
    aider = signals("aider", DATA / "aider" / "ratelimit-then-success.stdout.txt")
    assert [s.reason for s in aider] == ["rate limit"]
    for other in ("fail-http500.stdout.txt", "fail-http401.stdout.txt"):
        assert signals("aider", DATA / "aider" / other) == [], other


def test_waits_and_times_named_in_messages() -> None:
    assert wait_in("Please try again in 20ms.") == pytest.approx(0.02)
    assert wait_in("Please retry in 1m30s") == 90
    assert wait_in("no wait here") is None
    now = datetime.datetime(2026, 12, 4, 23, 0).timestamp()
    assert time_in("try again at 1:34 AM.", now) == \
        datetime.datetime(2026, 12, 5, 1, 34).timestamp()  # the next 1:34 AM
    assert time_in("try again at Dec 7th, 2026 1:34 AM.", now) == \
        datetime.datetime(2026, 12, 7, 1, 34).timestamp()


# -- builds with the real Claude Code CLI -------------------------------------------------------


@pytest.fixture(scope="module")
def claude() -> str:
    return installed_cli("install_claude.sh")


def claude_env(server: AnthropicStandin, claude: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "ANTHROPIC"))}
    env.update(server.claude_env(), HOME=str(home), AGENTFILE_CLAUDE=claude)
    return env


def commit(repo: Path, manifest: str) -> None:
    (repo / "Agentfile").write_text(manifest)
    git(repo, "add", "Agentfile")
    git(repo, "commit", "-qm", "manifest")


def last_run(repo: Path) -> Path:
    return sorted((repo / ".agentfile" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)[-1]


def events(repo: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (last_run(repo) / "events.jsonl").read_text().splitlines()]


def finished(repo: Path) -> dict[str, dict[str, Any]]:
    return {e["target"]: e for e in events(repo) if e["event"] == "target_finished"}


def workdir(body: dict[str, Any]) -> str:
    found = re.search(r"[Ww]orking directory: ([^\\\"\n]+)", json.dumps(body))
    assert found, "no working directory in the request"
    return found.group(1)


def tool_results(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages") or [] if isinstance(m.get("content"), list)
               for b in m["content"] if b.get("type") == "tool_result")


def write_then_done(name: str) -> Callable[[dict[str, Any]], Reply]:
    """The model of these tests: write NAME, then say so (from where the conversation is)."""

    def reply(body: dict[str, Any]) -> Reply:
        if tool_results(body):
            return text(f"Wrote {name}.")
        return tool_use("Write", {"file_path": f"{workdir(body)}/{name}", "content": "done\n"})

    return reply


SONNET = 'agent sonnet: claude\n    model = "claude-sonnet-4-5"\n'
# The CLI itself meets the provider's refusals: no relay holds them (test_relay.py has it).
UNRELAYED = SONNET + "    relay = false\n"


def test_a_refusal_after_paid_work_is_waited_out_and_resumed_not_retried_or_paid_again(
        repo: Path, agentfile_cli: Run, claude: str, tmp_path: Path) -> None:
    """The CLI gives up on a 429 after its Write turn (CLAUDE_CODE_MAX_RETRIES=0): agentfile
    waits, resumes the session (the Write is not asked for again), and `retries = 0` is not
    spent on it."""
    served: list[str] = []

    def api(body: dict[str, Any]) -> Reply:
        if tool_results(body) and "refused" not in served:
            served.append("refused")
            return http_error(429, "rate_limit_error", "stand-in: slow down", retry=None,
                              headers={"retry-after": "1"})
        reply = write_then_done("hello.txt")(body)
        served.append(reply["content"][0]["type"])
        return reply

    with AnthropicStandin(handler=api) as server:
        commit(repo, UNRELAYED + '    env = {CLAUDE_CODE_MAX_RETRIES = "0"}\n'
               'hello:\n    agent = sonnet\n    prompt = "Create hello.txt"\n')
        result = agentfile_cli("build", cwd=repo, env=claude_env(server, claude, tmp_path))
        resumed = server.requests[-1]["messages"]
    assert result.code == 0, result.out + result.err
    assert (repo / "hello.txt").read_text() == "done\n"
    assert served == ["tool_use", "refused", "text"]  # one Write, one final message: paid once
    assert any(isinstance(m["content"], list) and any(
        b.get("type") == "tool_result" for b in m["content"]) for m in resumed)
    done = finished(repo)["hello"]
    assert done["status"] == "succeeded" and done["attempt"] == 2
    limited = [e for e in events(repo) if e["event"] == "rate_limited"]
    assert [(e["target"], e["provider"], e["model"], e["reason"], e["retrying"])
            for e in limited] == [("hello", "claude", "claude-sonnet-4-5", "rate limit", False)]
    assert limited[0]["wait_s"] > 0  # agentfile's own wait: the CLI named none
    logs = last_run(repo) / "logs"
    session = re.search(r'"session_id":"([^"]+)"', (logs / "hello.jsonl").read_text())
    assert session and f"--resume {session.group(1)}" in (logs / "hello.log").read_text()
    summary = json.loads((last_run(repo) / "summary.json").read_text())
    assert summary["rate_limits"] == {"signals": 1, "waits": 1}
    assert "rate limited 1 time, 1 attempt waited for the provider" in result.out


def test_targets_share_a_token_bucket_without_failing(repo: Path, agentfile_cli: Run,
                                                       claude: str, tmp_path: Path) -> None:
    """Three agents at -j3 against an API that admits one call, then one a second: the CLIs
    say so (api_retry), agentfile cuts the claude lane's window, and every target lands."""
    bucket = TokenBucket(burst=1, interval=1.0)

    def api(body: dict[str, Any]) -> Reply:
        wait = bucket.take()
        if wait:
            return http_error(429, "rate_limit_error", "stand-in: rate limited", retry=None,
                              headers={"retry-after": TokenBucket.retry_after(wait)})
        name = re.search(r"Create (\w+\.txt)", json.dumps(body))
        return write_then_done(name.group(1) if name else "x.txt")(body)

    targets = "".join(f't{i}:\n    agent = sonnet\n    prompt = "Create t{i}.txt"\n'
                      for i in range(3))
    with AnthropicStandin(handler=api) as server:
        commit(repo, UNRELAYED + targets)
        result = agentfile_cli("build", "-j3", "--json", cwd=repo,
                               env=claude_env(server, claude, tmp_path), timeout=180)
    assert result.code == 0, result.out + result.err
    assert all((repo / f"t{i}.txt").exists() for i in range(3))
    assert bucket.rejected > 0 and bucket.admitted == 6
    limited = [e for e in events(repo) if e["event"] == "rate_limited"]
    assert limited and all(e["provider"] == "claude" for e in limited)
    assert min(e["window"] for e in limited) < 3  # the window was cut
    lines = [json.loads(x) for x in result.out.splitlines()]
    assert any(e["event"] == "rate_limited" for e in lines)  # --json shows them too


def test_a_fallback_model_takes_over_when_the_model_is_overloaded(
        repo: Path, agentfile_cli: Run, claude: str, tmp_path: Path) -> None:
    def api(body: dict[str, Any]) -> Reply:
        if body.get("model") == "claude-sonnet-4-5":
            return http_error(529, "overloaded_error", "stand-in: overloaded", retry=False)
        return write_then_done("hello.txt")(body)

    with AnthropicStandin(handler=api) as server:
        commit(repo, SONNET + '    fallback = ["claude-haiku-4-5"]\n'
               'hello:\n    agent = sonnet\n    prompt = "Create hello.txt"\n')
        result = agentfile_cli("build", cwd=repo, env=claude_env(server, claude, tmp_path))
        models = [r["model"] for r in server.requests]
    assert result.code == 0, result.out + result.err
    # (the CLI may name the fallback model its own way: it is not the overloaded one)
    assert models[0] == "claude-sonnet-4-5" and "claude-sonnet-4-5" not in models[1:]
    assert finished(repo)["hello"]["attempt"] == 2
    assert (repo / "hello.txt").read_text() == "done\n"


# -- builds with the real Codex CLI -------------------------------------------------------------


def test_codex_gives_up_on_a_429_and_agentfile_resumes_its_thread(
        repo: Path, agentfile_cli: Run, codex_binary: str, codex_home: Path) -> None:
    script = [error(429, "Rate limit reached. Please try again in 1s.", "rate_limit_exceeded",
                    headers={"retry-after": "1"}), message("Said hi.")]
    with OpenAIStandin(script) as server:
        commit(repo, 'hi:\n    agent = codex\n    isolation = none\n    prompt = "say hi"\n')
        result = agentfile_cli("build", cwd=repo, env=codex_env(server, codex_binary, codex_home))
    assert result.code == 0, result.out + result.err
    done = finished(repo)["hi"]
    assert done["status"] == "succeeded" and done["attempt"] == 2
    logs = last_run(repo) / "logs"
    thread = re.search(r'"thread_id":"([^"]+)"', (logs / "hi.jsonl").read_text())
    assert thread and re.search(rf"exec resume .*{thread.group(1)}", (logs / "hi.log").read_text())
    limited = [e for e in events(repo) if e["event"] == "rate_limited"]
    assert [(e["provider"], e["reason"]) for e in limited] == [("codex", "rate limit")]
    # Codex's message names no wait (not the API's either): agentfile's own first backoff
    assert limited[0]["wait_s"] == pytest.approx(FIRST_BACKOFF_S, abs=0.5)


def test_a_spent_plan_past_the_patience_stops_its_target_and_the_build_goes_on(
        repo: Path, agentfile_cli: Run, codex_binary: str, codex_home: Path) -> None:
    resets = int(time.time()) + 7200
    script = [error(429, "usage limit", "usage_limit_reached",
                    fields={"type": "usage_limit_reached", "resets_at": resets})]
    with OpenAIStandin(script) as server:
        commit(repo, "options:\n    rate_limit_wait = 30m\n"
               'hi:\n    agent = codex\n    isolation = none\n    prompt = "say hi"\n'
               "    priority = 1\n"
               'other:\n    run = "echo ok > ok.txt"\n')
        result = agentfile_cli("build", "-j1", cwd=repo,
                               env=codex_env(server, codex_binary, codex_home))
    assert result.code == 1, result.out + result.err
    done = finished(repo)
    assert done["hi"]["status"] == "rate-limited" and done["hi"]["attempt"] == 1
    back = time.strftime("%H:%M", time.localtime(resets))
    assert f"it comes back at {back}" in done["hi"]["detail"]
    assert "rate_limit_wait" in done["hi"]["detail"]
    assert done["other"]["status"] == "succeeded"  # another provider's work went on
    assert (repo / "ok.txt").exists()
    assert "rate-limited" in result.out


def test_a_rate_limited_wait_is_cut_short_by_ctrl_c(repo: Path, codex_binary: str,
                                                    codex_home: Path) -> None:
    """A target waiting for its provider stops at once on SIGINT: interrupted, exit 130."""
    script = [error(429, "usage limit", "usage_limit_reached",
                    fields={"type": "usage_limit_reached", "resets_at": int(time.time()) + 600})]
    with OpenAIStandin(script) as server:
        commit(repo, 'hi:\n    agent = codex\n    isolation = none\n    prompt = "say hi"\n')
        env = {**os.environ, "NO_COLOR": "1", **codex_env(server, codex_binary, codex_home)}
        proc = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "--json"],
                                cwd=repo, env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        seen = threading.Event()
        for line in proc.stdout:
            if '"rate_limited"' in line:
                seen.set()
                break
        assert seen.is_set()
        time.sleep(0.5)  # waiting for the plan to come back, ten minutes on
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert finished(repo)["hi"]["status"] == "interrupted"

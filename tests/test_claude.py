"""The claude provider with the real Claude Code CLI, against a stand-in Anthropic API.

The CLI is installed from npm into a cache outside the checkout (tests/standin/
install_claude.sh; .ci/run does it first). The stand-in on 127.0.0.1 scripts the model: here,
a call of Claude Code's own Write tool, then a final message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Run, git, installed_cli
from standin.anthropic import AnthropicStandin, text, tool_use

Reply = dict[str, Any]


@pytest.fixture(scope="module")
def claude() -> str:
    return installed_cli("install_claude.sh")


@pytest.fixture
def server() -> Iterator[AnthropicStandin]:
    with AnthropicStandin([]) as standin:
        yield standin


def workdir(body: dict[str, Any]) -> str:
    """The directory Claude Code says it works in (it tells the model in its prompt)."""
    found = re.search(r"[Ww]orking directory: ([^\\\"\n]+)", json.dumps(body))
    assert found, "no working directory in the request"
    return found.group(1)


def write(name: str, content: str) -> Callable[[dict[str, Any]], Reply]:
    def reply(body: dict[str, Any]) -> Reply:
        return tool_use("Write", {"file_path": f"{workdir(body)}/{name}", "content": content})

    return reply


def environment(server: AnthropicStandin, claude: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "ANTHROPIC"))}
    env.update(server.claude_env(), HOME=str(home), AGENTFILE_CLAUDE=claude)
    return env


SONNET = 'agent sonnet: claude\n    model = "claude-sonnet-4-5"\n'


def commit(repo: Path, text_: str) -> None:
    (repo / "Agentfile").write_text(SONNET + text_.replace("agent = claude", "agent = sonnet"))
    git(repo, "add", "Agentfile")
    git(repo, "commit", "-qm", "manifest")


def finished(repo: Path) -> dict[str, dict[str, Any]]:
    runs = sorted((repo / ".agentfile" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    events = [json.loads(x) for x in (runs[-1] / "events.jsonl").read_text().splitlines()]
    return {e["target"]: e for e in events if e["event"] == "target_finished"}


def test_real_cli_writes_in_a_worktree_and_it_lands(repo: Path, agentfile_cli: Run,
                                                    server: AnthropicStandin, claude: str,
                                                    tmp_path: Path) -> None:
    server.plan.extend([write("hello.txt", "hello from claude\n"), text("Created hello.txt.")])
    commit(repo, 'hello:\n    agent = claude\n    prompt = "Create hello.txt"\n')
    result = agentfile_cli("build", cwd=repo, env=environment(server, claude, tmp_path))
    assert result.code == 0, result.out + result.err
    assert (repo / "hello.txt").read_text() == "hello from claude\n"  # on the user's branch
    assert git(repo, "status", "--porcelain") == ""
    event = finished(repo)["hello"]
    runs = sorted((repo / ".agentfile" / "runs").iterdir())
    raw = (runs[-1] / "logs" / "hello.jsonl").read_text()  # the stream, whole, for tools
    events = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    reported = next(e for e in events if e.get("type") == "result")
    assert event["cost_usd"] == pytest.approx(reported["total_cost_usd"])  # the CLI's own
    assert reported["total_cost_usd"] == pytest.approx(0.0021)  # 2 turns of 100 in / 50 out
    assert event["tokens"] == 300
    assert (runs[-1] / "results" / "hello.md").read_text() == "Created hello.txt."
    first = server.main_requests[0]
    assert "Create hello.txt" in json.dumps(first["messages"])


def test_target_budget_below_the_cost_is_over_budget(repo: Path, agentfile_cli: Run,
                                                     server: AnthropicStandin, claude: str,
                                                     tmp_path: Path) -> None:
    server.plan.extend([write("a.txt", "a\n"), text("done")])
    commit(repo, 'spend:\n    agent = claude\n    prompt = "write a"\n    budget = $0.001\n')
    result = agentfile_cli("build", cwd=repo, env=environment(server, claude, tmp_path))
    assert result.code == 1
    event = finished(repo)["spend"]
    assert event["status"] == "over-budget", event
    assert float(event["cost_usd"]) > 0.001


def test_build_budget_stops_the_build_with_exit_3(repo: Path, agentfile_cli: Run,
                                                  server: AnthropicStandin, claude: str,
                                                  tmp_path: Path) -> None:
    server.plan.extend([text("one"), text("two"), text("three")])
    commit(repo, 'options:\n    budget = $0.002\n    isolation = none\n'
           'one:\n    agent = claude\n    prompt = "say one"\n'
           'two: one\n    agent = claude\n    prompt = "say two"\n'
           'three: two\n    agent = claude\n    prompt = "say three"\n')
    result = agentfile_cli("build", cwd=repo, env=environment(server, claude, tmp_path))
    assert result.code == 3, result.out + result.err
    got = finished(repo)
    # one spends $0.00105; two may spend only the rest, and Claude Code's own
    # --max-budget-usd stops it there; three never starts.
    assert got["one"]["status"] == "succeeded"
    assert got["two"]["status"] == "over-budget" and got["three"]["status"] == "blocked"
    assert len(server.main_requests) == 2


def test_a_retry_resumes_the_same_session(repo: Path, agentfile_cli: Run,
                                          server: AnthropicStandin, claude: str,
                                          tmp_path: Path) -> None:
    server.plan.extend([write("first.txt", "1\n"), text("wrote first"),
                        write("second.txt", "2\n"), text("wrote second")])
    commit(repo, 'fix:\n    agent = claude\n    isolation = none\n'
           '    prompt = "make both files"\n    verify = "test -f second.txt"\n'
           '    retries = 1\n')
    result = agentfile_cli("build", cwd=repo, env=environment(server, claude, tmp_path))
    assert result.code == 0, result.out + result.err
    assert finished(repo)["fix"]["attempt"] == 2
    third = server.main_requests[2]  # the retry's first request
    history = json.dumps(third["messages"])
    assert "make both files" in history and "wrote first" in history  # the same conversation
    assert "The previous attempt failed" in history and "test -f second.txt" in history


def test_an_api_error_is_a_failure_even_with_exit_codes_aside(repo: Path, agentfile_cli: Run,
                                                              claude: str,
                                                              tmp_path: Path) -> None:
    from standin.anthropic import http_error

    with AnthropicStandin([http_error(500)]) as failing:
        commit(repo, 'x:\n    agent = claude\n    isolation = none\n    prompt = "hi"\n')
        result = agentfile_cli("build", cwd=repo, env=environment(failing, claude, tmp_path))
    assert result.code == 1
    event = finished(repo)["x"]
    assert event["status"] == "failed" and "API Error: 500" in str(event["detail"])


def test_a_prompt_too_long_for_an_argument_goes_to_the_cli_on_stdin(
        repo: Path, agentfile_cli: Run, server: AnthropicStandin, claude: str,
        tmp_path: Path) -> None:
    """Linux takes one argument of at most 128 KiB; a prompt with a 150 kB context file goes
    to the real CLI on its standard input, whole, instead of failing to start."""
    server.plan.extend([write("hello.txt", "hello from claude\n"), text("Created hello.txt.")])
    (repo / "big.txt").write_text("x" * 150_000 + "\nEND-OF-CONTEXT\n")
    git(repo, "add", "big.txt")
    commit(repo, 'hello:\n    agent = claude\n    context = ["big.txt"]\n'
                 '    prompt = "Create hello.txt"\n')
    result = agentfile_cli("build", cwd=repo, env=environment(server, claude, tmp_path))
    assert result.code == 0, result.out + result.err
    assert (repo / "hello.txt").read_text() == "hello from claude\n"
    sent = json.dumps(server.main_requests[0]["messages"])
    assert "END-OF-CONTEXT" in sent and "Create hello.txt" in sent

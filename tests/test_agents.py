"""The codex, gemini and aider providers.

Their parsers read output captured from the real CLIs (tests/data/*/, with how each was made),
and the real Codex CLI is driven end to end against a stand-in Responses API.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA, Result, Run, codex_env, git
from standin.openai import OpenAIStandin, add_file_patch, apply_patch_call, error
from standin.openai import message as reply

from agentfile.agents.aider import AiderProvider, analytics_path
from agentfile.agents.base import AgentRequest, Usage
from agentfile.agents.codex import CodexProvider
from agentfile.agents.gemini import GeminiProvider
from agentfile.manifest.model import Agent


def request(tmp_path: Path, provider: str, session: str | None = None) -> AgentRequest:
    prompt = tmp_path / "prompt.md"
    prompt.write_text("do it\n")
    return AgentRequest("t", "run", Agent.model_validate({"provider": provider}), tmp_path, prompt,
                        tmp_path / "result.md", tmp_path / "usage.json", 1, {}, session)


def feed(provider: CodexProvider | GeminiProvider, req: AgentRequest,
         capture: Path) -> Usage:
    usage = Usage()
    for line in capture.read_text().splitlines():
        provider.parse_line(line, usage, req)
    return usage


# -- codex ------------------------------------------------------------------------------------


def test_codex_success_and_its_usage(tmp_path: Path) -> None:
    codex, req = CodexProvider(), request(tmp_path, "codex")
    usage = feed(codex, req, DATA / "codex" / "success.jsonl")
    verdict = codex.verdict(req, 0, [])
    assert verdict.ok and verdict.message == "Created hello.txt (2 lines)."
    assert verdict.session == "01a20329-75ec-7a22-8788-4f6dc70d4ba2"
    assert (usage.input_tokens, usage.output_tokens) == (3400, 90)
    assert not usage.cost_reported  # Codex reports tokens only: dollars come from `price`
    priced = Agent.model_validate({"provider": "codex", "price": {"input": 1, "output": 10}})
    assert usage.priced(priced) == pytest.approx((3400 * 1 + 90 * 10) / 1e6)


@pytest.mark.parametrize("capture", ["fail-http500", "fail-http401", "fail-response-failed",
                                     "fail-midturn", "fail-missing-key"])
def test_codex_failures(tmp_path: Path, capture: str) -> None:
    codex, req = CodexProvider(), request(tmp_path, "codex")
    feed(codex, req, DATA / "codex" / f"{capture}.jsonl")
    verdict = codex.verdict(req, 1, [])
    assert not verdict.ok and verdict.error and "Codex reported an error" in verdict.error


def test_codex_resume_counts_only_its_own_tokens(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFILE_CODEX", "/bin/true")
    codex = CodexProvider()
    first = request(tmp_path, "codex")
    feed(codex, first, DATA / "codex" / "fail-midturn.jsonl")
    thread = codex.verdict(first, 1, []).session
    assert thread
    codex.thread_tokens[thread] = (2000, 40)  # what the failed run spent (seen elsewhere)
    second = request(tmp_path, "codex", session=thread)
    assert "resume" in codex.command(second).command
    usage = feed(codex, second, DATA / "codex" / "resume.jsonl")
    events = [json.loads(x) for x in (DATA / "codex" / "resume.jsonl").read_text().splitlines()]
    total = next(e for e in events if e["type"] == "turn.completed")["usage"]
    assert usage.input_tokens == total["input_tokens"] - 2000
    assert codex.verdict(second, 0, []).ok


# -- gemini -----------------------------------------------------------------------------------


def test_gemini_success_joins_the_message_and_reads_stats(tmp_path: Path) -> None:
    gemini, req = GeminiProvider(), request(tmp_path, "gemini")
    usage = feed(gemini, req, DATA / "gemini" / "success.jsonl")
    verdict = gemini.verdict(req, 0, [])
    assert verdict.ok and verdict.message == "Created hello.txt (2 lines)."
    assert verdict.session == "4de99ee4-4762-4143-b232-cff89a59787e"
    assert usage.input_tokens > 0 and usage.output_tokens > 0


@pytest.mark.parametrize(("capture", "code"), [("fail-http500", 244), ("fail-http429", 173),
                                               ("fail-http400", 144), ("turn-limit", 53),
                                               ("fail-midturn", 244)])
def test_gemini_failures(tmp_path: Path, capture: str, code: int) -> None:
    gemini, req = GeminiProvider(), request(tmp_path, "gemini")
    feed(gemini, req, DATA / "gemini" / f"{capture}.jsonl")
    verdict = gemini.verdict(req, code, [])
    assert not verdict.ok and verdict.error


def test_gemini_untrusted_workspace_prints_nothing_and_fails(tmp_path: Path) -> None:
    gemini, req = GeminiProvider(), request(tmp_path, "gemini")
    verdict = gemini.verdict(req, 55, [])
    assert not verdict.ok and "untrusted" in str(verdict.error)


# -- aider ------------------------------------------------------------------------------------


def aider_run(tmp_path: Path, capture: str, code: int) -> tuple[bool, Usage, str | None]:
    aider, req = AiderProvider(), request(tmp_path, "aider")
    analytics_path(req).parent.mkdir(parents=True, exist_ok=True)
    analytics_path(req).write_text((DATA / "aider" / f"{capture}.analytics.jsonl").read_text())
    usage = Usage()
    aider.poll(req, usage)
    tail = (DATA / "aider" / f"{capture}.stdout.txt").read_text().splitlines()[-40:]
    verdict = aider.verdict(req, code, tail)
    return verdict.ok, usage, verdict.error


def test_aider_success_reads_cost_from_its_analytics(tmp_path: Path) -> None:
    ok, usage, _ = aider_run(tmp_path, "success", 0)
    assert ok and (usage.input_tokens, usage.output_tokens) == (668, 15)
    assert usage.cost_reported and usage.cost_usd == pytest.approx(0.0001092)


@pytest.mark.parametrize("capture", ["fail-http401", "fail-http500"])
def test_aider_exit_0_after_an_api_error_is_a_failure(tmp_path: Path, capture: str) -> None:
    ok, usage, why = aider_run(tmp_path, capture, 0)  # aider exits 0 here
    assert not ok and why and "aider reported an error" in why
    assert usage.tokens == 0


# -- the real Codex CLI -----------------------------------------------------------------------


def codex_writes_hello(repo: Path, agentfile_cli: Run, binary: str, home: Path,
                       manifest: str) -> tuple[Result, bytes]:
    """`agentfile build` of `manifest` (committed), the real codex against a stand-in that
    has it create hello.txt; the result and every request body the stand-in received."""
    script = [apply_patch_call(add_file_patch("hello.txt", "hello from codex\n")),
              reply("Created hello.txt.")]
    with OpenAIStandin(script) as server:
        (repo / "Agentfile").write_text(manifest)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "manifest")
        result = agentfile_cli("build", cwd=repo, env=codex_env(server, binary, home))
        sent = b"".join(r.body for r in server.requests)
    return result, sent


def test_real_codex_writes_in_a_worktree_and_it_lands(repo: Path, agentfile_cli: Run,
                                                     codex_binary: str,
                                                     codex_home: Path) -> None:
    result, _ = codex_writes_hello(repo, agentfile_cli, codex_binary, codex_home,
                                   "agent gpt: codex\n    price = $1/Mtok in, $10/Mtok out\n"
                                   'hello:\n    agent = gpt\n    prompt = "Create hello.txt"\n')
    assert result.code == 0, result.out + result.err
    assert (repo / "hello.txt").read_text() == "hello from codex\n"
    runs = sorted((repo / ".agentfile" / "runs").iterdir())
    events = [json.loads(x) for x in (runs[-1] / "events.jsonl").read_text().splitlines()]
    done = next(e for e in events if e["event"] == "target_finished")
    assert done["tokens"] > 0 and done["cost_usd"] > 0  # tokens x price
    assert (runs[-1] / "results" / "hello.md").read_text() == "Created hello.txt."


def test_real_codex_reads_a_prompt_too_long_for_an_argument_on_stdin(
        repo: Path, agentfile_cli: Run, codex_binary: str, codex_home: Path) -> None:
    (repo / "big.txt").write_text("x" * 150_000 + "\nEND-OF-CONTEXT\n")
    result, sent = codex_writes_hello(repo, agentfile_cli, codex_binary, codex_home,
                                      "agent gpt: codex\n"
                                      'hello:\n    agent = gpt\n    context = ["big.txt"]\n'
                                      '    prompt = "Create hello.txt"\n')
    assert result.code == 0, result.out + result.err
    assert (repo / "hello.txt").read_text() == "hello from codex\n"
    assert b"END-OF-CONTEXT" in sent and b"Create hello.txt" in sent


def test_real_codex_api_error_fails_the_target(repo: Path, agentfile_cli: Run,
                                               codex_binary: str, codex_home: Path) -> None:
    with OpenAIStandin([error(500, "stand-in internal error")]) as server:
        (repo / "Agentfile").write_text(
            'x:\n    agent = codex\n    isolation = none\n    prompt = "hi"\n')
        result = agentfile_cli("build", cwd=repo,
                               env=codex_env(server, codex_binary, codex_home))
    assert result.code == 1
    assert "Codex reported an error" in result.out


def test_each_cli_takes_a_long_prompt_on_stdin_and_a_short_one_as_an_argument(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentfile.agents import claude, codex, gemini

    for module in (claude, codex, gemini):
        monkeypatch.setattr(module, "binary", lambda: "cli")
    for name, provider in (("claude", claude.ClaudeProvider()), ("codex", CodexProvider()),
                           ("gemini", GeminiProvider())):
        short = request(tmp_path, name)
        planned = provider.command(short)
        assert "do it\n" in planned.command and planned.stdin is None
        short.prompt_file.write_text("y" * 200_000)
        planned = provider.command(short)
        assert not any("yyyy" in word for word in planned.command), name
        assert planned.stdin == short.prompt_file
        if name == "gemini":
            assert "-p" not in planned.command  # its prompt is stdin, then
        if name == "codex":
            assert planned.command[-1] == "-"


def test_a_tmux_pane_reads_the_given_stdin(tmp_path: Path) -> None:
    from agentfile.isolation.tmux import _launcher
    from agentfile.run import process

    prompt = tmp_path / "prompt.md"
    launch = process.Launch(["cli"], tmp_path, {}, stdin=prompt)
    script = _launcher(launch, tmp_path, gate=tmp_path / "gate", out=tmp_path / "out")
    assert f"exec <{prompt}\n" in script
    plain = _launcher(process.Launch(["cli"], tmp_path, {}), tmp_path, gate=tmp_path / "g",
                      out=tmp_path / "o")
    assert "exec </dev/null\n" in plain

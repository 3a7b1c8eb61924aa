"""What a person reads of a build: waiting targets and why, failures' last lines, wording,
and the history commands' --json (real builds in real git repositories)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DATA,
    Result,
    Run,
    events,
    installed_cli,
    interactive_environment,
    on_a_terminal,
    poll_status,
)
from standin.anthropic import AnthropicStandin, text, tool_use
from standin.openai import OpenAIStandin, codex_config, shell_call
from standin.openai import message as codex_reply
from test_claude import commit as claude_commit
from test_claude import environment as claude_environment
from test_claude import write as claude_write

from agentfile.agents.aider import AiderProvider
from agentfile.agents.base import AgentRequest, Provider, Usage
from agentfile.agents.claude import ClaudeProvider
from agentfile.agents.codex import CodexProvider
from agentfile.agents.gemini import GeminiProvider
from agentfile.manifest.model import Agent
from agentfile.run import process


def write(repo: Path, text: str) -> None:
    (repo / "Agentfile").write_text(text)


def plain_lines(out: str) -> list[str]:
    """The build's plain lines without their time stamps."""
    return [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]


# -- waiting targets (the first hour, item 6) ---------------------------------------------


def test_a_target_without_a_job_slot_says_so(repo: Path, agentfile_cli: Run) -> None:
    write(repo, "".join(f'{n}:\n    run = "sleep 0.3"\n    always = true\n' for n in "abcd"))
    result = agentfile_cli("build", "-j2", cwd=repo)
    assert result.code == 0, result.err
    lines = plain_lines(result.out)
    slot = [ln for ln in lines if ln.startswith("waiting")]
    # Said once for the build, not of every target behind it.
    assert slot == ["waiting    c: no free job slot (all 2 in use: -j2)"], lines
    waits = {e["target"]: e["reason"] for e in events(repo) if e["event"] == "waiting"}
    assert set(waits) == {"c", "d"}  # the events keep every one, for reporters and status


def test_locks_max_parallel_exclusive_and_canary_say_why(repo: Path,
                                                        agentfile_cli: Run) -> None:
    for i in range(3):
        (repo / f"f{i}.txt").write_text("")
    write(repo, 'agent busy: command\n    command = "sleep 0.3"\n    max_parallel = 1\n'
          'a:\n    run = "sleep 0.3"\n    locks = ["db"]\n'
          'b:\n    run = "sleep 0.3"\n    locks = ["db"]\n'
          'p:\n    agent = busy\n    prompt = "x"\n    isolation = none\n'
          'q:\n    agent = busy\n    prompt = "x"\n    isolation = none\n'
          'm/{f}:\n    foreach f in glob("f*.txt")\n    canary = 1\n    run = "true"\n')
    result = agentfile_cli("build", "-j8", cwd=repo)
    assert result.code == 0, result.out + result.err
    said = "\n".join(plain_lines(result.out))
    assert "waiting    b: lock db is held by a" in said
    assert "waiting    q: agent busy is at max_parallel = 1" in said
    assert "waiting    m/f1.txt: held for the canary: waits for m/f0.txt" in said
    write(repo, 'x:\n    run = "sleep 0.3"\n    exclusive = true\n    always = true\n'
          'y:\n    run = "sleep 0.3"\n    always = true\n')
    said = "\n".join(plain_lines(agentfile_cli("build", "-j4", cwd=repo).out))
    assert "waiting    y: exclusive target x is running" in said


def test_status_shows_waiting_targets_and_decodes_the_last_run(repo: Path,
                                                                agentfile_cli: Run) -> None:
    write(repo, "".join(f'{n}:\n    run = "sleep 2"\n    always = true\n' for n in "abc"))
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "-j2"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        snapshot = poll_status(agentfile_cli, repo, "waiting")
        assert [w["target"] for w in snapshot["waiting"]] == ["c"], snapshot
        assert snapshot["waiting"][0]["reason"].startswith("no free job slot")
        shown = agentfile_cli("status", "--no-watch", cwd=repo).out
        assert "waiting" in shown and "no free job slot" in shown, shown
    finally:
        build.wait(timeout=30)
    idle = json.loads(agentfile_cli("status", "--json", cwd=repo).out)
    last = idle["last"]
    # Lists and counts as JSON values, not strings holding JSON.
    assert last["counts"] == {"succeeded": 3}
    assert last["requested"] == ["a", "b", "c"]
    assert isinstance(last["argv"], list) and "build" in last["argv"]


# -- wording (item 12) ----------------------------------------------------------------------


def test_one_target_is_not_plural_and_nothing_ran_says_so(repo: Path,
                                                          agentfile_cli: Run) -> None:
    write(repo, 'only:\n    run = "true"\n')
    first = agentfile_cli("build", cwd=repo)
    assert "1 target: 1 succeeded" in first.out and "1 targets" not in first.out
    assert "x)" not in first.out  # one target: no parallel speed-up to speak of
    again = agentfile_cli("build", cwd=repo)
    assert "nothing ran" in again.out and "sequential estimate" not in again.out, again.out
    plan = agentfile_cli("plan", cwd=repo).out
    assert plan.startswith("1 target in 1 wave,"), plan
    assert "1 target (1 after fan-out), 0 agents" in agentfile_cli("check", cwd=repo).out


def test_a_canary_s_failure_holds_the_rest_back(repo: Path, agentfile_cli: Run) -> None:
    for i in range(3):
        (repo / f"f{i}.txt").write_text("")
    write(repo, 'm/{f}:\n    foreach f in glob("f*.txt")\n    canary = 1\n'
          '    run = "test {f} != f0.txt"\n')
    result = agentfile_cli("build", "-k", cwd=repo)
    assert result.code == 1
    assert "blocked    m/f1.txt (held back: canary m/f0.txt failed)" in plain_lines(result.out)


def test_a_build_budget_stop_says_it_was_the_budget(repo: Path, agentfile_cli: Run) -> None:
    write(repo, 'options:\n    budget = 1s\n'
          'slow:\n    run = "echo working; sleep 30"\n'
          'later:\n    run = "true"\n')
    result = agentfile_cli("build", "-j1", cwd=repo)
    assert result.code == 3, result.out + result.err
    lines = plain_lines(result.out)
    slow = next(ln for ln in lines if " slow (" in ln and not ln.startswith("start"))
    assert slow.startswith("over-budget") and "the build's budget was reached" in slow, lines
    assert "interrupted" not in slow
    later = next(ln for ln in lines if " later " in ln)
    assert "not started: the build's budget was reached" in later, lines


# -- agents' streams as a person reads them (item 1) ----------------------------------------


def captured(provider: Provider, name: str, capture: Path, workspace: Path) -> list[str]:
    """What `provider` renders of a captured run, line by line as the CLI printed it."""
    req = AgentRequest("t", "run", Agent.model_validate({"provider": name}), workspace,
                       workspace / "prompt.md", workspace / "result.md",
                       workspace / "usage.json", 1, {})
    usage = Usage()
    shown: list[str] = []
    for line in capture.read_text().splitlines():
        shown += provider.parse_line(line, usage, req)
    return shown


def test_each_provider_s_stream_reads_as_words_and_one_line_per_tool_call() -> None:
    codex_ws = Path("/tmp/agentfile-codex-capture-8cioc0vk/success/ws")
    assert captured(ClaudeProvider(), "claude", DATA / "claude" / "success.jsonl",
                    Path("/WORK/repo")) == [
        "Claude Code session 5e55a0f1-0000-4000-8000-00000000c1a0 (claude-sonnet-4-5)",
        "Write hello.txt", "Created hello.txt."]
    assert captured(CodexProvider(), "codex", DATA / "codex" / "success.jsonl", codex_ws) == [
        "Codex thread 01a20329-75ec-7a22-8788-4f6dc70d4ba2",
        "Write hello.txt", "Bash cat hello.txt", "Created hello.txt (2 lines)."]
    assert captured(GeminiProvider(), "gemini", DATA / "gemini" / "success.jsonl",
                    Path("/x")) == [
        "Gemini CLI session 4de99ee4-4762-4143-b232-cff89a59787e (gemini-2.5-pro)",
        "Write hello.txt", "Bash cat hello.txt", "Created hello.txt (2 lines)."]
    # Errors read as errors, not as JSON events.
    failed = captured(GeminiProvider(), "gemini", DATA / "gemini" / "fail-midturn.jsonl",
                      Path("/x"))
    assert failed[1] == "Write one.txt" and failed[-1].startswith("error: [API Error:")
    budget = captured(ClaudeProvider(), "claude", DATA / "claude" / "budget.jsonl",
                      Path("/WORK/repo"))
    assert budget[-1] == "error: stopped at its --max-budget-usd"
    midturn = captured(CodexProvider(), "codex", DATA / "codex" / "fail-midturn.jsonl",
                       Path("/x"))
    assert midturn[1] == "Bash echo one > one.txt" and midturn[-1].startswith("error: ")
    # aider prints text: its lines are its log, as they are.
    aider = (DATA / "aider" / "success.stdout.txt").read_text().splitlines()
    assert captured(AiderProvider(), "aider", DATA / "aider" / "success.stdout.txt",
                    Path("/x")) == aider
    for shown in (failed, budget, midturn):
        assert not any(line.lstrip().startswith("{") for line in shown)


def test_gemini_s_streamed_words_are_shown_a_whole_line_at_a_time(tmp_path: Path) -> None:
    pieces = ['{"type":"init","session_id":"s","model":"m"}',
              '{"type":"message","role":"assistant","content":"Fixed the ","delta":true}',
              '{"type":"message","role":"assistant","content":"bug.\\nAll ","delta":true}',
              '{"type":"message","role":"assistant","content":"tests pass.","delta":true}',
              '{"type":"result","status":"success","stats":{}}']
    capture = tmp_path / "deltas.jsonl"
    capture.write_text("\n".join(pieces) + "\n")
    assert captured(GeminiProvider(), "gemini", capture, tmp_path) == [
        "Gemini CLI session s (m)", "Fixed the bug.", "All tests pass."]


def test_a_rendered_stream_goes_whole_to_its_raw_file(tmp_path: Path) -> None:
    """The plumbing every agent target uses: the log, the tail and each line's callback get
    what a person reads, the raw file the stream byte for byte, however it is cut."""
    stream = (DATA / "claude" / "success.jsonl").read_bytes()
    log, raw = tmp_path / "t.log", tmp_path / "t.jsonl"
    seen: list[str] = []
    tail: list[str] = []
    provider = ClaudeProvider()
    req = AgentRequest("t", "run", Agent.model_validate({"provider": "claude"}),
                       Path("/WORK/repo"), tmp_path / "p", tmp_path / "r", tmp_path / "u", 1, {})
    usage = Usage()
    sink, raw_sink = process.LogFile(log), process.LogFile(raw)
    lines = process.Lines(sink, tail, seen.append, "=== header",
                          render=lambda line: provider.parse_line(line, usage, req),
                          raw=raw_sink)
    for start in range(0, len(stream), 777):  # pieces that cut lines anywhere
        lines.feed(stream[start:start + 777])
    lines.close()
    sink.close()
    raw_sink.close()
    assert raw.read_bytes() == stream
    assert log.read_text().splitlines() == ["=== header", *seen]
    assert seen[1:] == ["Write hello.txt", "Created hello.txt."] and tail == seen
    assert usage.tokens == 300  # read for usage as it went


@pytest.fixture(scope="module")
def claude() -> str:
    return installed_cli("install_claude.sh")


def claude_build(repo: Path, agentfile_cli: Run, claude: str, home: Path,
                 plan: list[Callable[[dict[str, Any]], dict[str, Any]] | dict[str, Any]],
                 manifest: str, *args: str, delay: float = 0.0) -> Result:
    with AnthropicStandin(list(plan), delay=delay) as server:
        claude_commit(repo, manifest)
        return agentfile_cli("build", *args, cwd=repo,
                             env=claude_environment(server, claude, home))


def test_a_claude_target_s_log_reads_as_text_and_logs_shows_its_result(
        repo: Path, agentfile_cli: Run, claude: str, tmp_path: Path) -> None:
    result = claude_build(
        repo, agentfile_cli, claude, tmp_path,
        [claude_write("hello.txt", "hi\n"), tool_use("Bash", {"command": "echo checked"}),
         text("Created hello.txt.")],
        'hello:\n    agent = claude\n    isolation = none\n    prompt = "Create hello.txt"\n')
    assert result.code == 0, result.out + result.err
    log = agentfile_cli("logs", "hello", cwd=repo)
    shown = log.out.splitlines()
    assert shown[0].startswith("=== agentfile: attempt 1")
    session = next(n for n, line in enumerate(shown) if line.startswith("Claude Code session"))
    # (the header's command line holds the prompt, which ends with a newline)
    assert shown[session + 1:] == ["Write hello.txt", "Bash echo checked",
                                   "Created hello.txt."], shown
    final = agentfile_cli("logs", "hello", "--result", cwd=repo)
    assert final.code == 0 and final.out == "Created hello.txt.\n"
    assert json.loads(agentfile_cli("logs", "hello", "--result", "--json", cwd=repo).out)[
        "result"] == "Created hello.txt."
    raw = [json.loads(x) for x in
           agentfile_cli("logs", "hello", "--raw", cwd=repo).out.splitlines()]
    assert raw[0]["type"] == "system" and raw[-1]["type"] == "result"
    rows = [json.loads(x) for x in
            agentfile_cli("logs", "hello", "--json", cwd=repo).out.splitlines()]
    assert [r["line"] for r in rows] == shown and rows[0]["target"] == "hello"
    write(repo, 'check:\n    run = "echo ok"\n')
    assert agentfile_cli("build", cwd=repo).code == 0
    none = agentfile_cli("logs", "check", "--result", cwd=repo)
    assert none.code == 2 and "no final message" in none.err
    assert agentfile_cli("logs", "check", "--raw", cwd=repo).code == 2


def test_a_claude_target_over_its_budget_is_said_in_words(repo: Path, agentfile_cli: Run,
                                                          claude: str, tmp_path: Path) -> None:
    result = claude_build(
        repo, agentfile_cli, claude, tmp_path, [claude_write("a.txt", "a\n"), text("done")],
        'spend:\n    agent = claude\n    isolation = none\n    prompt = "write a"\n'
        '    budget = $0.001\n')
    assert result.code == 1
    line = next(ln for ln in plain_lines(result.out) if ln.startswith("over-budget"))
    assert "{" not in line, line  # no JSON event quoted


def test_the_board_shows_an_agent_s_last_tool_call_not_its_json(
        repo: Path, claude: str, tmp_path: Path) -> None:
    with AnthropicStandin([claude_write("hello.txt", "hi\n"), text("Created hello.txt.")],
                          delay=2.0) as server:
        claude_commit(repo, 'hello:\n    agent = claude\n    isolation = none\n'
                            '    prompt = "Create hello.txt"\n')
        # claude_environment starts from this process's environment: CI=true must not reach
        # the build, or it prints plain lines instead of the board.
        environment = {**interactive_environment(), **claude_environment(server, claude, tmp_path)}
        environment = {k: v for k, v in environment.items() if k not in ("CI", "NO_COLOR")}
        shown, code = on_a_terminal(repo, environment, "build")
    seen = shown.decode(errors="replace")
    assert code == 0, seen
    board = seen.split("Created hello.txt.")[0]
    assert "Write hello.txt" in board and '{"type"' not in seen, seen


def test_the_board_shows_waiting_targets_and_why(repo: Path) -> None:
    write(repo, 'a:\n    run = "sleep 1.5"\n    always = true\n'
          'b:\n    run = "true"\n    always = true\n')
    shown, code = on_a_terminal(repo, interactive_environment(), "build", "-j1")
    seen = shown.decode(errors="replace")
    assert code == 0, seen
    assert "waiting" in seen and "no free job slot (all 1 in use: -j1)" in seen, seen


# -- run targets' output (item 7), retries and report (item 9) --------------------------------

FAILING = ('lint:\n    run = "echo linting; echo all good"\n'
           'test:\n    run = "for i in 1 2 3 4 5 6 7; do echo test line $i; done; '
           'echo FAILED test_y; exit 1"\n')


def test_a_failed_target_s_last_lines_are_shown_and_verbose_streams_them(
        repo: Path, agentfile_cli: Run) -> None:
    write(repo, FAILING)
    result = agentfile_cli("build", "-k", "-j1", cwd=repo)
    assert result.code == 1
    quoted = ["    | test line 4", "    | test line 5", "    | test line 6",
              "    | test line 7", "    | FAILED test_y"]
    out = result.out.splitlines()
    failure = next(n for n, line in enumerate(out) if "] failed     test" in line)
    assert out[failure + 1:failure + 6] == quoted, out  # under the failure line
    summary = out.index("test: exited with 1:")
    assert out[summary + 1:summary + 6] == quoted, out  # and in the summary
    assert "linting" not in result.out  # without -v a target's output stays in its log
    verbose = agentfile_cli("build", "-k", "-j1", "-v", cwd=repo).out.splitlines()
    assert "test | test line 1" in verbose and "test | FAILED test_y" in verbose
    # A target's lines come before the line that says how it ended.
    assert verbose.index("test | FAILED test_y") < next(
        n for n, line in enumerate(verbose) if "] failed     test" in line)
    streamed = [json.loads(x) for x in
                agentfile_cli("build", "-k", "-v", "--json", "test", cwd=repo).out.splitlines()]
    lines = [e["line"] for e in streamed if e["event"] == "output"]
    assert lines[0] == "test line 1" and lines[-1] == "FAILED test_y"
    finished = next(e for e in streamed if e["event"] == "target_finished")
    assert finished["output"][-1] == "FAILED test_y"


def test_a_retry_is_a_line_with_why(repo: Path, agentfile_cli: Run) -> None:
    write(repo, 'flaky:\n    run = "test -f .ok || { touch .ok; echo broke once; exit 2; }"\n'
          '    retries = 1\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out
    assert "retrying   flaky (attempt 2): failed: exited with 2: broke once" in \
        plain_lines(result.out)
    said = [e for e in events(repo) if e["event"] == "retrying"]
    assert [e["attempt"] for e in said] == [2]


def test_report_shows_the_last_build_that_ran_something(repo: Path, agentfile_cli: Run,
                                                        tmp_path: Path) -> None:
    write(repo, FAILING.replace("exit 1", "exit 0"))
    assert agentfile_cli("build", cwd=repo).code == 0
    ran = json.loads(agentfile_cli("runs", "--json", cwd=repo).out)[0]["id"]
    assert "nothing ran" in agentfile_cli("build", cwd=repo).out  # a no-op build
    report = json.loads(agentfile_cli("report", "--json", cwd=repo).out)
    assert report["run"]["id"] == ran and report["run"]["counts"] == {"succeeded": 2}
    assert [t["target"] for t in report["targets"]] == ["lint", "test"]
    assert report["targets"][0]["attempt_rows"][0]["status"] == "succeeded"
    page = tmp_path / "r.html"
    assert agentfile_cli("report", "--html", str(page), cwd=repo).code == 0
    html = page.read_text()
    assert "$0.0000" not in html and "<td>-</td>" in html  # as the terminal shows it
    labels = re.findall(r'<text x="(\d+)"[^>]*text-anchor="(\w+)"[^>]*>[\d.]+s</text>', html)
    assert labels[-1] == ("880", "end")  # the last axis label ends inside the picture


def test_clean_json_lists_what_it_removes(repo: Path, agentfile_cli: Run) -> None:
    git_commit_manifest(repo, 'w:\n    isolation = worktree\n    run = "echo x > w.txt"\n')
    assert json.loads(agentfile_cli("clean", "--json", cwd=repo).out) == []
    assert agentfile_cli("build", "--keep-worktrees", cwd=repo).code == 0
    planned = json.loads(agentfile_cli("clean", "-n", "--json", cwd=repo).out)
    assert {s["kind"] for s in planned} == {"worktree", "branch"}
    assert all(s["action"] == "would remove" for s in planned)
    done = json.loads(agentfile_cli("clean", "--json", cwd=repo).out)
    assert [s["name"] for s in done] == [s["name"] for s in planned]
    assert all(s["action"] == "removed" for s in done)
    assert not Path(done[0]["name"]).exists()


def git_commit_manifest(repo: Path, text_: str) -> None:
    write(repo, text_)
    subprocess.run(["git", "add", "Agentfile"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "manifest"], cwd=repo, check=True)


def test_a_real_codex_target_s_log_reads_as_text(repo: Path, agentfile_cli: Run,
                                                 tmp_path: Path) -> None:
    binary = installed_cli("install_codex.sh")
    home = tmp_path / "codex-home"
    (home / ".codex").mkdir(parents=True)
    with OpenAIStandin([shell_call("echo checked"), codex_reply("Checked.")]) as server:
        (home / ".codex" / "config.toml").write_text(codex_config(server.base_url))
        git_commit_manifest(repo, 'agent gpt: codex\n'
                                  'look:\n    agent = gpt\n    isolation = none\n'
                                  '    prompt = "Check it"\n')
        result = agentfile_cli("build", cwd=repo, env={
            "HOME": str(home), "CODEX_HOME": str(home / ".codex"),
            "STANDIN_API_KEY": "sk-standin", "AGENTFILE_CODEX": binary})
    assert result.code == 0, result.out + result.err
    shown = agentfile_cli("logs", "look", cwd=repo).out.splitlines()
    assert any(line.startswith("Codex thread ") for line in shown), shown
    # (Its `echo` is refused by Codex's sandbox on this machine, which then reports no
    # command item at all: the tool lines are checked on captured output above.)
    assert shown[-1] == "Checked.", shown
    assert not any(line.startswith("{") for line in shown)
    assert agentfile_cli("logs", "look", "--result", cwd=repo).out == "Checked.\n"
    raw = agentfile_cli("logs", "look", "--raw", cwd=repo).out
    assert '"type":"turn.completed"' in raw

"""Recovery with the real Claude Code CLI against the stand-in Anthropic API: an agent that
finished before its build was SIGKILLed is not called (nor paid) again, and one that was cut
short resumes its session in the next build."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import Run, git, installed_cli
from standin.anthropic import AnthropicStandin, has_tools, text, tool_use
from test_claude import SONNET, environment
from test_recovery import finished_work_of, kill_when, spend, state

Reply = dict[str, Any]


@pytest.fixture(scope="module")
def claude() -> str:
    return installed_cli("install_claude.sh")


class Model:
    """The stand-in's model: each target writes NAME.txt, then says so; `slow` first waits
    to be released (its build is killed meanwhile). Every agent turn is kept, by target."""

    def __init__(self) -> None:
        self.turns: dict[str, list[dict[str, Any]]] = {"fast": [], "slow": []}
        self.release = threading.Event()

    def __call__(self, body: dict[str, Any]) -> Reply | None:
        if not has_tools(body):
            return None
        where = workdir_now(body)
        name = Path(where).name  # each worktree's folder is its target's name
        self.turns[name].append(body)
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
            return text(f"Wrote {name}.txt.")
        if name == "slow" and not self.release.is_set():
            self.release.wait(60)
        return tool_use("Write", {"file_path": f"{where}/{name}.txt",
                                  "content": f"{name} by claude\n"})


def workdir_now(body: dict[str, Any]) -> str:
    """Where Claude Code works now: a resumed session's messages name the directory of its
    first run, then (an "Environment update") the new one."""
    return str(re.findall(r"[Ww]orking directory: ([^\\\"\n ]+)", json.dumps(body))[-1])


def stream(repo: Path, run: str, target: str) -> list[dict[str, Any]]:
    """The CLI's own events, as agentfile kept them."""
    path = repo / ".agentfile" / "runs" / run / "logs" / f"{target}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_claude_that_finished_is_not_paid_twice_and_one_cut_short_resumes(
        repo: Path, agentfile_cli: Run, claude: str, tmp_path: Path,
        agentfile_home: Path) -> None:
    model = Model()
    (repo / "Agentfile").write_text(
        SONNET + 'fast:\n    agent = sonnet\n    prompt = "Write fast.txt"\n'
                 'slow:\n    agent = sonnet\n    prompt = "Write slow.txt"\n')
    git(repo, "add", "Agentfile")
    git(repo, "commit", "-qm", "manifest")
    with AnthropicStandin(handler=model) as server:
        env = {**environment(server, claude, tmp_path), "NO_COLOR": "1"}
        build = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "-j2"],
                                 cwd=repo, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        # Killed once slow's CLI has asked the model and kept its session (to resume).
        slow_asked = iter(lambda: len(model.turns["slow"]) == 1 and any(
            (tmp_path / ".claude" / "projects").glob("*-slow/*.jsonl")), None)
        kill_when(build, (a and b for a, b in zip(finished_work_of(repo, "fast"), slow_asked,
                                                  strict=False)), timeout=90)
        ((dead,),) = state(repo, "SELECT id FROM runs")
        assert len(model.turns["fast"]) == 2 and not (repo / "fast.txt").exists()
        model.release.set()
        again = agentfile_cli("build", "-j2", cwd=repo, env=env, timeout=120)
    assert again.code == 0, again.out + again.err
    assert len(model.turns["fast"]) == 2  # not called again: merged from its branch
    assert (repo / "fast.txt").read_text() == "fast by claude\n"
    assert (repo / "slow.txt").read_text() == "slow by claude\n"
    # Paid once: what the CLI reported in the build that died, in the ledger under it.
    (result,) = [e for e in stream(repo, str(dead), "fast") if e.get("type") == "result"]
    ((run, cost),) = spend(agentfile_home, "fast")
    assert run == dead and cost == pytest.approx(result["total_cost_usd"]) and cost > 0
    # Resumed: the new attempt named the dead one's session; the model saw its conversation.
    (init,) = [e for e in stream(repo, str(dead), "slow") if e.get("subtype") == "init"]
    (now,) = [r for (r,) in state(repo, "SELECT id FROM runs WHERE id != ?", dead)]
    log = (repo / ".agentfile" / "runs" / str(now) / "logs" / "slow.log").read_text()
    assert f"--resume {init['session_id']}" in log
    resumed = json.dumps(model.turns["slow"][1]["messages"])
    assert resumed.count("Write slow.txt") >= 2  # the dead attempt's prompt, and again

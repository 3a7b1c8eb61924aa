"""Money: the per-user ledger, the daily budget, `stats`, and secrets kept out of every file."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Run

SPENDER = '''\
options:
    isolation = none
{daily}
agent spender: command
    command = "./spend.sh"
'''


def setup(repo: Path, daily: str, targets: int) -> None:
    (repo / "spend.sh").write_text(
        '#!/bin/sh\necho \'{"cost_usd": 1.0, "input_tokens": 10, "output_tokens": 5}\' '
        '> "$AGENTFILE_USAGE_FILE"\n')
    (repo / "spend.sh").chmod(0o755)
    text = SPENDER.format(daily=daily)
    text += "".join(f"t{i}:\n    agent = spender\n    prompt = \"spend\"\n"
                    + (f"    priority = {-i}\n") for i in range(targets))
    (repo / "Agentfile").write_text(text)


def test_ledger_and_stats(repo: Path, agentfile_cli: Run, agentfile_home: Path) -> None:
    setup(repo, "", 2)
    assert agentfile_cli("build", cwd=repo).code == 0
    assert (agentfile_home / "ledger.sqlite").is_file()
    by_target = json.loads(agentfile_cli("stats", "--by", "target", "--json", cwd=repo).out)
    assert sorted(r["key"] for r in by_target) == ["t0", "t1"]
    assert sum(r["cost_usd"] for r in by_target) == 2.0
    assert sum(r["tokens"] for r in by_target) == 30
    by_repo = json.loads(agentfile_cli("stats", "--by", "repo", "--json", cwd=repo).out)
    assert by_repo == [{"key": str(repo), "attempts": 2, "cost_usd": 2.0, "tokens": 30,
                        "runs": 1}]
    text = agentfile_cli("stats", cwd=repo).out
    assert "today: $2.00" in text


def test_daily_budget_alerts_then_refuses(repo: Path, agentfile_cli: Run) -> None:
    setup(repo, "    daily_budget = $2.5, alert 50%\n", 4)
    result = agentfile_cli("build", "-j1", cwd=repo)
    assert result.code == 3, result.out
    events = [json.loads(x) for x in next((repo / ".agentfile" / "runs").iterdir())
              .joinpath("events.jsonl").read_text().splitlines()]
    warnings = [e for e in events if e["event"] == "budget_warning"]
    assert warnings and warnings[0]["scope"] == "daily"
    status = {e["target"]: e["status"] for e in events if e["event"] == "target_finished"}
    assert list(status.values()).count("succeeded") == 3  # $3 > $2.5: then no more agents
    assert list(status.values()).count("over-budget") == 1
    refused = next(ln for ln in result.out.splitlines() if "daily budget" in ln)
    assert "log:" not in refused  # it never started: there is no log to point at
    again = agentfile_cli("build", "-B", cwd=repo)  # the same day: nothing starts
    assert again.code == 3


def test_secrets_never_reach_logs_events_prompts_or_results(repo: Path,
                                                             agentfile_cli: Run) -> None:
    secret = "sk-live-0123456789abcdef"
    (repo / "agent.sh").write_text(
        '#!/bin/sh\necho "using $MY_API_KEY"\necho "key $MY_API_KEY" > "$AGENTFILE_RESULT_FILE"\n')
    (repo / "agent.sh").chmod(0o755)
    (repo / "Agentfile").write_text(
        'agent a: command\n    command = "./agent.sh"\n'
        "t:\n    agent = a\n    isolation = none\n"
        '    prompt = "the key is ${MY_API_KEY}"\n'
        'r:\n    run = "echo run sees $MY_API_KEY"\n')
    result = agentfile_cli("build", "--json", cwd=repo, env={"MY_API_KEY": secret})
    assert result.code == 0, result.err
    assert secret not in result.out
    for path in (repo / ".agentfile").rglob("*"):
        if path.is_file() and path.suffix in (".log", ".md", ".jsonl", ".json"):
            assert secret not in path.read_text(), path
    run = next((repo / ".agentfile" / "runs").iterdir())
    assert "***" in (run / "logs" / "t.log").read_text()
    assert "***" in (run / "logs" / "r.log").read_text()


def test_usage_that_is_not_a_total_is_left_out(repo: Path, agentfile_cli: Run) -> None:
    """NaN, a negative cost or a count past what the state holds: the target goes on as if
    the agent had not said it; nothing crashes and no budget is loosened."""
    (repo / "spend.sh").write_text(
        "#!/bin/sh\necho '{\"cost_usd\": NaN, \"input_tokens\": 99999999999999999999999}' "
        "> \"$AGENTFILE_USAGE_FILE\"\nsleep 0.3\n"
        "echo '{\"cost_usd\": -5, \"input_tokens\": 7}' > \"$AGENTFILE_USAGE_FILE\"\n")
    (repo / "spend.sh").chmod(0o755)
    (repo / "Agentfile").write_text(
        'agent spender: command\n    command = "./spend.sh"\n'
        't:\n    agent = spender\n    prompt = "spend"\n    isolation = none\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    events = [json.loads(x) for x in next((repo / ".agentfile" / "runs").iterdir())
              .joinpath("events.jsonl").read_text().splitlines()]
    done = next(e for e in events if e["event"] == "target_finished")
    assert done["cost_usd"] == 0 and done["tokens"] == 7


def test_the_daily_budget_holds_across_builds_running_at_once(
        tmp_path: Path, agentfile_home: Path) -> None:
    """SPEC 8: the daily cap is the user's, across repositories: two builds started together
    spend about the cap between them, not the cap each."""
    import os
    import subprocess
    import sys

    procs = []
    for name in ("one", "two"):
        repo = tmp_path / name
        repo.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        (repo / "spend.sh").write_text(
            "#!/bin/sh\nsleep 0.05\necho '{\"cost_usd\": 0.01}' > \"$AGENTFILE_USAGE_FILE\"\n")
        (repo / "spend.sh").chmod(0o755)
        (repo / "Agentfile").write_text(
            SPENDER.format(daily="    daily_budget = $0.30")
            + "".join(f"t{i}:\n    agent = spender\n    prompt = \"spend\"\n"
                      for i in range(40)))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "agentfile", "build", "-j2", "-k"], cwd=repo,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1"}))
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [3, 3]
    from agentfile.records.ledger import Ledger

    ledger = Ledger(agentfile_home / "ledger.sqlite")
    try:
        spent = ledger.spent_today()
    finally:
        ledger.close()
    # At the cap, plus at most what both builds had running when it was reached.
    assert 0.30 <= spent <= 0.30 + 4 * 0.01 + 1e-9, spent

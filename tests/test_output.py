"""What a person reads of a build: waiting targets and why, failures' last lines, wording,
and the history commands' --json (real builds in real git repositories)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import Run


def write(repo: Path, text: str) -> None:
    (repo / "Agentfile").write_text(text)


def plain_lines(out: str) -> list[str]:
    """The build's plain lines without their time stamps."""
    return [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]


def events(repo: Path) -> list[dict[str, Any]]:
    runs = sorted((repo / ".agentfile" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return [json.loads(x) for x in (runs[-1] / "events.jsonl").read_text().splitlines()]


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
        deadline = time.monotonic() + 15
        snapshot: dict[str, Any] = {}
        while time.monotonic() < deadline:
            snapshot = json.loads(agentfile_cli("status", "--json", cwd=repo).out)
            if snapshot.get("waiting"):
                break
            time.sleep(0.1)
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

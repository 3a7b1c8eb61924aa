"""Admission by measured memory and load, memory budgets, and pressure (SPEC 8, 9).

Real processes allocate real memory (a few hundred MiB at most). Where a test needs the
machine to be in a given state, it writes that state to the file named by
AGENTFILE_PRESSURE_FILE, which the monitor reads instead of the machine's measurements.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import Run, wait_for_descendants

ALLOCATE = (f"{sys.executable} -c \\\"import time; x = b'1' * ({{mib}} * 2**20); "
            "time.sleep({secs})\\\"")


def allocate(mib: int, secs: float) -> str:
    return ALLOCATE.replace("{mib}", str(mib)).replace("{secs}", str(secs))


def finished(repo: Path) -> dict[str, dict[str, object]]:
    runs = sorted((repo / ".agentfile" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    events = [json.loads(x) for x in (runs[-1] / "events.jsonl").read_text().splitlines()]
    return {str(e["target"]): e for e in events if e["event"] == "target_finished"}


def _events_so_far(repo: Path) -> list[dict[str, object]]:
    folder = repo / ".agentfile" / "runs"
    if not folder.is_dir():
        return []
    events = []
    for run in folder.iterdir():
        for line in (run / "events.jsonl").read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def all_events(repo: Path) -> list[dict[str, object]]:
    runs = sorted((repo / ".agentfile" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return [json.loads(x) for x in (runs[-1] / "events.jsonl").read_text().splitlines()]


def test_memory_budget_ends_in_oom(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text(
        f'hog:\n    budget = 64MiB\n    run = "{allocate(200, 20)}"\n'
        f'fine:\n    budget = 256MiB\n    run = "{allocate(16, 0.5)}"\n')
    started = time.monotonic()
    result = agentfile_cli("build", "-k", cwd=repo)
    assert result.code == 1
    assert time.monotonic() - started < 15
    got = finished(repo)
    assert got["hog"]["status"] == "oom" and got["fine"]["status"] == "succeeded"
    assert int(str(got["fine"]["peak_rss_bytes"])) > 16 * 2**20
    assert subprocess.run(["pgrep", "-f", "x = b'1' \\* \\(200"], capture_output=True
                          ).returncode == 1  # no process left


def test_reservations_run_targets_one_at_a_time(repo: Path, agentfile_cli: Run,
                                                tmp_path: Path) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"memory_percent": 40, "available": 2**30, "load": 0.1}))
    text = "options:\n    throttle = free 512MiB\n"
    text += "".join(f"t{i}:\n    budget = 300MiB\n"
                    f'    run = "echo start $(date +%s.%N) >> trace; sleep 0.4; '
                    f'echo end $(date +%s.%N) >> trace"\n' for i in range(3))
    (repo / "Agentfile").write_text(text)
    result = agentfile_cli("build", "-j4", cwd=repo,
                           env={"AGENTFILE_PRESSURE_FILE": str(machine)})
    assert result.code == 0, result.out
    rows = [line.split() for line in (repo / "trace").read_text().splitlines()]
    assert [r[0] for r in rows] == ["start", "end"] * 3  # never two at once
    held = [e for e in all_events(repo) if e["event"] == "throttled"]
    assert held and all(e["action"] == "held" for e in held)
    assert "available" in str(held[0]["reason"])
    assert "throttled" in result.out


def test_a_target_that_can_never_fit_runs_alone(repo: Path, agentfile_cli: Run,
                                                tmp_path: Path) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"memory_percent": 40, "available": 2**30, "load": 0.1}))
    (repo / "Agentfile").write_text('big:\n    budget = 10GiB\n    run = "true"\n')
    result = agentfile_cli("build", cwd=repo, env={"AGENTFILE_PRESSURE_FILE": str(machine)})
    assert result.code == 0
    events = [e for e in all_events(repo) if e["event"] == "throttled"]
    assert events and "started alone" in str(events[0]["action"])


def test_pressure_suspends_the_youngest_and_resumes_it(repo: Path, tmp_path: Path) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"memory_percent": 40, "available": 8 * 2**30, "load": 0.1}))
    (repo / "Agentfile").write_text(
        "options:\n    throttle = memory 90%\n"
        'old:\n    priority = 1\n    run = "sleep 3"\n'
        'young:\n    run = "sleep 0.2; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.1; done"\n')
    env = {"AGENTFILE_PRESSURE_FILE": str(machine), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "-j2"], cwd=repo,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    wait_for_descendants(proc.pid, "sleep", count=2)  # both running
    machine.write_text(json.dumps({"memory_percent": 95, "available": 2**29, "load": 0.1}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            e.get("action") == "suspended" for e in _events_so_far(repo)):
        time.sleep(0.05)
    time.sleep(0.5)  # suspended for a while
    machine.write_text(json.dumps({"memory_percent": 40, "available": 8 * 2**30, "load": 0.1}))
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    actions = [(e["target"], e["action"]) for e in all_events(repo)
               if e["event"] == "throttled"]
    assert ("young", "suspended") in actions and ("young", "resumed") in actions
    assert ("old", "suspended") not in actions  # the youngest goes first; the last never
    got = finished(repo)
    assert float(str(got["young"]["suspended_s"])) > 0.3
    assert got["old"]["status"] == got["young"]["status"] == "succeeded"

"""`runs`, `logs`, `status` and `report` after and during real builds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import Run, git, poll_status, sigkill_build, wait_for_descendants

MANIFEST = '''\
a:
    run = "echo hello from a"
b: a
    run = "echo from b; exit 1"
'''


def test_runs_logs_report(repo: Path, agentfile_cli: Run, tmp_path: Path) -> None:
    (repo / "Agentfile").write_text(MANIFEST)
    assert agentfile_cli("runs", cwd=repo).code == 2  # nothing yet: a clear error
    assert agentfile_cli("build", cwd=repo).code == 1
    rows = json.loads(agentfile_cli("runs", "--json", cwd=repo).out)
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert rows[0]["counts"] == {"succeeded": 1, "failed": 1}
    text = agentfile_cli("runs", cwd=repo).out
    assert rows[0]["id"] in text and "1 succeeded, 1 failed" in text
    log = agentfile_cli("logs", "a", cwd=repo)
    assert log.code == 0 and "hello from a" in log.out
    assert "from b" in agentfile_cli("logs", "b", "--run", rows[0]["id"], cwd=repo).out
    assert agentfile_cli("logs", "nope", cwd=repo).code == 2
    report = agentfile_cli("report", cwd=repo)
    assert report.code == 0 and "timeline" in report.out and "failed" in report.out
    page = tmp_path / "report.html"
    assert agentfile_cli("report", rows[0]["id"], "--html", str(page), cwd=repo).code == 0
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "<rect" in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # offline


def test_status_and_follow_during_a_build(repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text(
        'slow:\n    run = "echo tick [/tmp/cache]; sleep 1.5; echo tock"\n    always = true\n')
    idle = agentfile_cli("status", cwd=repo)
    assert idle.code == 0 and "no build is running" in idle.out
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        snapshot = poll_status(agentfile_cli, repo, "running", timeout=10)
        assert snapshot["pid"] == build.pid
        assert [r["target"] for r in snapshot["running"]] == ["slow"]
        shown = agentfile_cli("status", cwd=repo)  # its last line is not rich's markup
        assert shown.code == 0 and "[/tmp/cache]" in shown.out, shown.err
        follow = agentfile_cli("logs", "-f", "slow", cwd=repo, timeout=20)
        assert "tick" in follow.out and "tock" in follow.out  # followed to the end
    finally:
        build.wait(timeout=20)
    assert "no build is running" in agentfile_cli("status", cwd=repo).out


def test_what_builds_left_stays_readable_with_a_broken_manifest(repo: Path,
                                                               agentfile_cli: Run) -> None:
    """`runs`, `logs`, `status`, `report` and `clean` need only the repository's root: they
    answer while the manifest is mid-edit and would not load."""
    (repo / "Agentfile").write_text(MANIFEST)
    assert agentfile_cli("build", cwd=repo).code == 1
    (repo / "Agentfile").write_text(MANIFEST + "c: nowhere\n    run = \"true\n")
    assert agentfile_cli("check", cwd=repo).code == 2  # broken indeed
    assert "hello from a" in agentfile_cli("logs", "a", cwd=repo).out
    for command in (["runs"], ["status"], ["report"], ["clean", "--dry-run"]):
        result = agentfile_cli(*command, cwd=repo)
        assert result.code == 0, (command, result.out, result.err)
    (repo / "sub").mkdir()  # found from a subdirectory too, up to the git root
    assert "hello from a" in agentfile_cli("logs", "a", cwd=repo / "sub").out


def test_reading_a_log_loads_no_manifest_model(repo: Path, agentfile_cli: Run) -> None:
    """Start-up: `logs` (and the other history commands) never import pydantic."""
    (repo / "Agentfile").write_text(MANIFEST)
    assert agentfile_cli("build", cwd=repo).code == 1
    probe = ("import sys\n"
             "from agentfile.cli import main\n"
             "code = main(['logs', 'a'])\n"
             "print('pydantic' in sys.modules, code, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True,
                          text=True, check=True)
    assert "hello from a" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "False 0", done.stderr


def test_a_very_long_target_name_builds_and_has_its_log(repo: Path,
                                                        agentfile_cli: Run) -> None:
    """A name longer than a file name may be (it passed `check` but could never build):
    its files get a cut name with a hash of the whole."""
    long_a, long_b = "t" * 300, "t" * 299 + "u"
    (repo / "Agentfile").write_text(f'{long_a}:\n    run = "echo from a"\n'
                                    f'{long_b}:\n    run = "echo from b"\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert agentfile_cli("logs", long_a, cwd=repo).out.splitlines()[-1] == "from a"
    assert agentfile_cli("logs", long_b, cwd=repo).out.splitlines()[-1] == "from b"


def test_a_killed_build_is_seen_as_died_and_cleaned(repo: Path, agentfile_cli: Run) -> None:
    """agentfile killed outright (SIGKILL: nothing of it can run): `runs` and `status` say
    the build died instead of `running` for ever, plain `clean` removes what it left, and
    the next build records it as died."""
    (repo / "Agentfile").write_text('agent slow: command\n    command = "sleep 30"\n'
                                    't:\n    agent = slow\n    prompt = "wait"\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "manifest")
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_descendants(build.pid, "sleep")
    sigkill_build(build)
    (run,) = json.loads(agentfile_cli("runs", "--json", cwd=repo).out)
    assert run["status"] == "died"
    assert f"the last was {run['id']} (died)" in agentfile_cli("status", cwd=repo).out
    assert "worktree" in agentfile_cli("clean", "-n", cwd=repo).out
    assert agentfile_cli("clean", cwd=repo).code == 0
    assert not (repo / ".agentfile" / "worktrees" / run["id"]).exists()
    assert "agentfile/" not in git(repo, "branch", "--list")
    (repo / "Agentfile").write_text("a:\n    run = 'true'\n")
    assert agentfile_cli("build", cwd=repo).code == 0
    db = sqlite3.connect(repo / ".agentfile" / "state.sqlite")
    assert db.execute("SELECT status FROM runs WHERE id = ?", (run["id"],)).fetchone() == (
        "died",)


def test_a_target_named_like_another_s_log_folder_has_its_own_log(
        repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text("a:\n    run = 'echo from-a'\n"
                                    "a.log/x:\n    run = 'echo from-x'\n")
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert "from-a" in agentfile_cli("logs", "a", cwd=repo).out
    assert "from-x" in agentfile_cli("logs", "a.log/x", cwd=repo).out


def test_following_a_target_that_has_not_started_waits_for_this_build_s_log(
        repo: Path, agentfile_cli: Run) -> None:
    (repo / "Agentfile").write_text('early:\n    run = "sleep 1.5"\n'
                                    'late: early\n    run = "echo run $AGENTFILE_RUN_ID"\n')
    assert agentfile_cli("build", cwd=repo).code == 0
    first = agentfile_cli("logs", "late", cwd=repo).out
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "-B"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = repo / ".agentfile" / "build.lock"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "run" not in lock.read_text():
            time.sleep(0.05)
        live = json.loads(lock.read_text())["run"]
        follow = agentfile_cli("logs", "-f", "late", cwd=repo, timeout=30)
    finally:
        build.wait(timeout=30)
    assert follow.code == 0 and f"run {live}" in follow.out and follow.out != first
    assert "waiting for 'late'" in follow.err

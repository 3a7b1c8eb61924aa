"""A build that died (SIGKILL: nothing of it runs after) and the next one, which recovers.

Real builds in subprocesses, real git repositories, killed with SIGKILL: work that a dead
build finished and committed is merged, not run again (nor paid again); what it was running
runs again; `--retry-failed`, `runs`, `report` and `clean` read the dead build.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Run, git, patched_agentfile, sigkill_build, wait_for_descendants

# A command agent that counts its calls, says what it spent, and writes a file named after its
# target; `slow` waits for a go-ahead file first, so a test can kill the build meanwhile.
AGENT = """\
echo "$1" >> "{calls}"
printf '{{"cost_usd": 0.25, "input_tokens": 10, "output_tokens": 5}}' > "$AGENTFILE_USAGE_FILE"
if [ "$1" = slow ]; then while [ ! -f "{go}" ]; do sleep 0.05; done; fi
echo "$1 was here" > "$1.txt"
"""


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    script = tmp_path / "agent.sh"
    script.write_text(AGENT.format(calls=tmp_path / "calls", go=tmp_path / "go"))
    yield script
    (tmp_path / "go").touch()  # an agent a failed test left waiting ends


def manifest(repo: Path, agent: Path, body: str) -> None:
    (repo / "Agentfile").write_text(
        f'agent counted: command\n    command = "sh {agent} {{target}}"\n' + body)
    git(repo, "add", "Agentfile")
    git(repo, "commit", "-qm", "manifest")


TWO = ('fast:\n    agent = counted\n    prompt = "be quick"\n'
       'slow:\n    agent = counted\n    prompt = "take your time"\n')


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().split() if path.exists() else []


def state(repo: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    db = sqlite3.connect((repo / ".agentfile" / "state.sqlite").as_uri() + "?mode=ro",
                         uri=True)
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def spend(home: Path, target: str) -> list[tuple[str, float]]:
    db = sqlite3.connect(home / "ledger.sqlite")
    try:
        return db.execute("SELECT run, cost_usd FROM spend WHERE target = ?", (target,)
                          ).fetchall()
    finally:
        db.close()


def kill_when(build: subprocess.Popen[bytes], ready: Iterator[bool],
              timeout: float = 30) -> None:
    """SIGKILL the build once `ready` says so; then what it left running, as nobody else
    can (a killed agentfile stops nothing)."""
    deadline = time.monotonic() + timeout
    while not next(ready):
        if time.monotonic() > deadline or build.poll() is not None:
            build.kill()
            raise AssertionError("the build never got there")
        time.sleep(0.05)
    sigkill_build(build)


def finished_work_of(repo: Path, target: str) -> Iterator[bool]:
    while True:
        try:
            yield bool(state(repo, "SELECT 1 FROM finished_work WHERE target = ?", target))
        except sqlite3.OperationalError:  # no database yet, or not its tables
            yield False


def start_build(repo: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agentfile", "build", *args], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def called(tmp_path: Path, times: int) -> Iterator[bool]:
    while True:
        yield len(calls(tmp_path)) == times


def both(*conditions: Iterator[bool]) -> Iterator[bool]:
    while True:
        yield all([next(c) for c in conditions])


def running(build: subprocess.Popen[bytes], agent: Path, target: str) -> Iterator[bool]:
    """True once `target`'s agent runs under the build and has counted its call (the
    process shows before its first line has run: killed then, the call would not count)."""
    while True:
        try:
            wait_for_descendants(build.pid, f"{agent} {target}", timeout=0.05)
            yield target in calls(agent.parent)
        except AssertionError:
            yield False


def test_finished_agent_is_merged_not_run_again_after_a_sigkill(
        repo: Path, agentfile_cli: Run, agent: Path, tmp_path: Path,
        agentfile_home: Path) -> None:
    manifest(repo, agent, TWO)
    build = start_build(repo, "-j2")
    kill_when(build, both(finished_work_of(repo, "fast"), running(build, agent, "slow")))
    assert calls(tmp_path) == ["fast", "slow"] or calls(tmp_path) == ["slow", "fast"]
    assert not (repo / "fast.txt").exists()  # nothing landed: the build died
    (tmp_path / "go").touch()
    again = agentfile_cli("build", "-j2", cwd=repo)
    assert again.code == 0, again.out + again.err
    assert sorted(calls(tmp_path)) == ["fast", "slow", "slow"]  # fast ran once
    assert "recovered  fast" in again.out
    assert (repo / "fast.txt").read_text() == "fast was here\n"  # everything landed
    assert (repo / "slow.txt").read_text() == "slow was here\n"
    assert git(repo, "status", "--porcelain") == ""
    assert [cost for _, cost in spend(agentfile_home, "fast")] == [0.25]  # paid once
    # The next build finds it all up to date.
    assert agentfile_cli("build", cwd=repo).code == 0
    assert sorted(calls(tmp_path)) == ["fast", "slow", "slow"]


def test_killed_between_the_commit_and_the_merge(repo: Path, agent: Path, tmp_path: Path,
                                                 agentfile_cli: Run,
                                                 agentfile_home: Path) -> None:
    """The narrowest window: the work is committed and recorded, the build dies as it
    would merge it, before it wrote the target's rows or the ledger."""
    manifest(repo, agent, 'fast:\n    agent = counted\n    prompt = "be quick"\n'
                          'after: fast\n    agent = counted\n    prompt = "then this"\n')
    died = patched_agentfile(repo, "import os, signal\nfrom agentfile.run import scheduler\n"
                             "scheduler.Scheduler._merge = lambda *a: os.kill(os.getpid(), "
                             "signal.SIGKILL)\n", "build")
    assert died.returncode == -signal.SIGKILL
    assert calls(tmp_path) == ["fast"]
    (dead_run,) = state(repo, "SELECT run FROM finished_work")
    again = agentfile_cli("build", cwd=repo)
    assert again.code == 0, again.out + again.err
    assert calls(tmp_path) == ["fast", "after"]
    assert (repo / "fast.txt").exists() and (repo / "after.txt").exists()
    # What the dead build's agent spent is in the ledger once, under the build that paid.
    assert spend(agentfile_home, "fast") == [(dead_run[0], 0.25)]
    assert len(spend(agentfile_home, "after")) == 1


def test_changed_target_is_run_again_not_recovered(repo: Path, agent: Path, tmp_path: Path,
                                                   agentfile_cli: Run) -> None:
    manifest(repo, agent, 'fast:\n    agent = counted\n    prompt = "be quick"\n')
    died = patched_agentfile(repo, "import os, signal\nfrom agentfile.run import scheduler\n"
                             "scheduler.Scheduler._merge = lambda *a: os.kill(os.getpid(), "
                             "signal.SIGKILL)\n", "build")
    assert died.returncode == -signal.SIGKILL
    manifest(repo, agent, 'fast:\n    agent = counted\n    prompt = "be quicker"\n')
    again = agentfile_cli("build", cwd=repo)
    assert again.code == 0, again.out + again.err
    assert calls(tmp_path) == ["fast", "fast"]  # its fingerprint changed: the old work is not it
    assert "recovered" not in again.out


def test_retry_failed_runs_what_the_dead_build_did_not_finish(repo: Path, agent: Path,
                                                              tmp_path: Path,
                                                              agentfile_cli: Run) -> None:
    """--retry-failed reads the build that died, not the last that finished: what it
    finished is done, what failed or was running runs again."""
    manifest(repo, agent, 'ok:\n    run = "echo ok >> ../calls"\n    always = true\n'
                          'bad:\n    run = "echo bad >> ../calls; test -f ../go"\n'
                          f'{TWO}')
    assert agentfile_cli("build", "ok", cwd=repo).code == 0  # an earlier, finished build
    build = start_build(repo, "-k", "-j4", "ok", "bad", "fast", "slow")
    dead = iter(lambda: sum(1 for _ in state(
        repo, "SELECT 1 FROM outcomes o JOIN runs r ON o.run = r.id "
              "WHERE r.status = 'running' AND o.target IN ('ok', 'bad')")) == 2, None)
    kill_when(build, both(dead, finished_work_of(repo, "fast"),
                          running(build, agent, "slow")))
    assert sorted(calls(tmp_path)) == ["bad", "fast", "ok", "ok", "slow"]
    (tmp_path / "go").touch()
    again = agentfile_cli("build", "--retry-failed", "-j4", cwd=repo)
    assert again.code == 0, again.out + again.err
    # ok (always) succeeded in the dead build: not run; fast finished there: merged.
    assert sorted(calls(tmp_path)) == ["bad", "bad", "fast", "ok", "ok", "slow", "slow"]
    assert (repo / "fast.txt").exists() and (repo / "slow.txt").exists()


def test_runs_and_report_show_what_a_dead_build_was_running(repo: Path, agent: Path,
                                                            agentfile_cli: Run) -> None:
    manifest(repo, agent, TWO)
    build = start_build(repo, "-j2")
    kill_when(build, both(finished_work_of(repo, "fast"), running(build, agent, "slow")))
    (row,) = json.loads(agentfile_cli("runs", "--json", cwd=repo).out)
    assert row["status"] == "died" and row["running"] == ["slow"]
    assert "died running slow" in agentfile_cli("runs", cwd=repo).out
    report = agentfile_cli("report", cwd=repo)  # the last build: the one that died
    assert report.code == 0, report.err
    table = report.out.split("timeline")[0]
    lines = {line.split()[0]: line for line in table.splitlines() if line.strip()}
    assert "running" in lines["slow"] and "succeeded" in lines["fast"]
    assert "$0.25" in lines["fast"]  # what it spent, though the build died before its rows
    assert "1 running" in report.out


def test_plain_clean_covers_every_dead_build(repo: Path, agent: Path, tmp_path: Path,
                                            agentfile_cli: Run) -> None:
    """Two builds killed one after the other, each leaving a worktree, its branches and a
    tmux session: a plain `clean` removes what both left, not only the newest's."""
    if subprocess.run(["which", "tmux"], capture_output=True).returncode != 0:
        pytest.skip("tmux is not installed")
    manifest(repo, agent, 'slow:\n    agent = counted\n    prompt = "wait"\n'
                          '    terminal = tmux\n')
    for count in (1, 2):
        build = start_build(repo)
        # In tmux, the agent is the tmux server's child, not the build's: its call says it.
        kill_when(build, called(tmp_path, count))
        time.sleep(1.1)  # tmux sessions are named to the second
    runs = [str(r[0]) for r in state(repo, "SELECT id FROM runs")]
    sessions = [str(r[0]) for r in state(repo, "SELECT name FROM resources WHERE kind = 'tmux'")]
    assert len(runs) == 2 and len(sessions) == 2
    for session in sessions:
        assert subprocess.run(["tmux", "has-session", "-t", f"={session}"]).returncode == 0
    cleaned = agentfile_cli("clean", cwd=repo)
    assert cleaned.code == 0, cleaned.out + cleaned.err
    for run in runs:
        assert not (repo / ".agentfile" / "worktrees" / run).exists()
    for session in sessions:
        assert subprocess.run(["tmux", "has-session", "-t", f"={session}"],
                              capture_output=True).returncode != 0
    assert git(repo, "branch", "--list", "agentfile/*") == ""
    assert git(repo, "worktree", "list").count("\n") == 1


def current_branch(repo: Path) -> str:
    return git(repo, "symbolic-ref", "--short", "HEAD").strip()


def test_a_branch_target_that_finished_is_merged_and_the_checkout_given_back(
        repo: Path, agent: Path, tmp_path: Path, agentfile_cli: Run) -> None:
    """The build dies after committing a branch target's work, before it switched the
    checkout back: the next build switches it back (to where the build found it), merges
    the work without running it again, and leaves the user's untracked file alone."""
    manifest(repo, agent, 'fast:\n    agent = counted\n    prompt = "be quick"\n'
                          '    isolation = branch\n')
    mine = current_branch(repo)
    (repo / "notes.txt").write_text("the user's own\n")
    died = patched_agentfile(repo, "import os, signal\nfrom agentfile import git\n"
                             "git.Git.restore_checkout = lambda *a: os.kill(os.getpid(), "
                             "signal.SIGKILL)\n", "build")
    assert died.returncode == -signal.SIGKILL
    assert current_branch(repo).startswith("agentfile/targets/")  # where it died
    again = agentfile_cli("build", cwd=repo)
    assert again.code == 0, again.out + again.err
    assert calls(tmp_path) == ["fast"]  # not run again
    assert "recovered  fast" in again.out
    assert current_branch(repo) == mine
    assert (repo / "fast.txt").read_text() == "fast was here\n"
    assert (repo / "notes.txt").read_text() == "the user's own\n"
    assert git(repo, "status", "--porcelain").strip() == "?? notes.txt"


def test_a_branch_target_cut_short_keeps_its_work_on_its_branch_and_runs_again(
        repo: Path, agent: Path, tmp_path: Path, agentfile_cli: Run) -> None:
    manifest(repo, agent, 'slow:\n    agent = counted\n    prompt = "wait"\n'
                          '    isolation = branch\n')
    mine = current_branch(repo)
    (repo / "notes.txt").write_text("the user's own\n")  # older than the build
    build = start_build(repo)
    kill_when(build, running(build, agent, "slow"))
    (repo / "partial.txt").write_text("half done\n")  # what the agent had written so far
    dead_branch = current_branch(repo)
    (tmp_path / "go").touch()
    again = agentfile_cli("build", cwd=repo)
    assert again.code == 0, again.out + again.err
    assert calls(tmp_path) == ["slow", "slow"]  # it was running: it runs again
    assert current_branch(repo) == mine
    assert (repo / "slow.txt").exists() and not (repo / "partial.txt").exists()
    # What it had left is committed on the dead build's branch, not lost; the user's file
    # is not in it.
    kept = git(repo, "show", "--name-only", "--format=%s", dead_branch)
    assert "work in progress of slow" in kept and "partial.txt" in kept
    assert "notes.txt" not in kept
    assert git(repo, "status", "--porcelain").strip() == "?? notes.txt"

"""Old builds' run folders are pruned: the newest N stay, the running build's always."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import Run, git


def run_folders(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / ".agentfile" / "runs").iterdir())


def commit(repo: Path, manifest: str) -> None:
    (repo / "Agentfile").write_text(manifest)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "manifest")


def test_builds_keep_the_newest_runs(repo: Path, agentfile_cli: Run) -> None:
    commit(repo, 'options:\n    keep_runs = 3\na:\n    run = "true"\n')
    for _ in range(5):  # the first builds a, the others find it up to date
        assert agentfile_cli("build", cwd=repo).code == 0
        time.sleep(1.1)  # run ids are to the second
    folders = run_folders(repo)
    assert len(folders) == 3
    newest = agentfile_cli("runs", "--json", cwd=repo).out
    assert folders[-1] in newest
    assert agentfile_cli("report", cwd=repo).code == 0  # the last is still there to read


def test_clean_runs(repo: Path, agentfile_cli: Run) -> None:
    commit(repo, 'a:\n    run = "true"\n')
    for _ in range(3):
        assert agentfile_cli("build", cwd=repo).code == 0
        time.sleep(1.1)
    dry = agentfile_cli("clean", "--runs", "1", "-n", cwd=repo)
    assert dry.code == 0 and "would remove 2 run folders" in dry.out
    assert len(run_folders(repo)) == 3
    done = agentfile_cli("clean", "--runs", "1", cwd=repo)
    assert done.code == 0 and "removed 2 run folders" in done.out, done.out + done.err
    assert len(run_folders(repo)) == 1
    assert agentfile_cli("clean", "--runs", "0", cwd=repo).code == 2


def test_the_running_build_s_folder_is_never_pruned(repo: Path, agentfile_cli: Run) -> None:
    marker = repo / "go"
    commit(repo, f'slow:\n    run = "while [ ! -e {marker} ]; do sleep 0.1; done"\n')
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        runs = repo / ".agentfile" / "runs"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (runs.is_dir() and any(runs.iterdir())):
            time.sleep(0.05)
        (running,) = run_folders(repo)
        later = repo / ".agentfile" / "runs" / "99991231-235959-ffff"  # newer by its name
        later.mkdir()
        result = agentfile_cli("clean", "--runs", "1", cwd=repo)
        assert result.code == 0, result.err
        assert run_folders(repo) == [running, later.name]
    finally:
        marker.touch()
        out, _ = build.communicate(timeout=60)
    assert build.returncode == 0, out.decode()

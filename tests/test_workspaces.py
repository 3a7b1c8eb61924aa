"""Warm workspaces: `worktrees = reuse` (a pool of worktrees reset per target), `setup` and
`setup_inputs`, and `clean` of the pool. Real builds in subprocesses on real git repositories."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import Run, git, sigkill_build

REUSE = "options:\n    worktrees = reuse\n"


def commit(repo: Path, files: dict[str, str], message: str = "files") -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def pooled(repo: Path) -> dict[str, dict[str, object]]:
    """Each pooled worktree's record, by its path."""
    folder = repo / ".agentfile" / "pool"
    return {str(folder / p.stem): json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def worktrees(repo: Path) -> list[str]:
    return [line.removeprefix("worktree ") for line in
            git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")][1:]


def wait_until(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError("never happened")
        time.sleep(0.05)


def test_each_target_starts_clean_and_ignored_files_stay(repo: Path, agentfile_cli: Run,
                                                         tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    commit(repo, {".gitignore": "cache/\n", "tracked.txt": "base\n", "Agentfile": REUSE + (
        "    jobs = 1\n"
        # First (priority): leaves an untracked file, a tracked edit and an ignored file; it
        # fails, so its work stays on its branch and never reaches the integration branch.
        "dirty:\n    run = \"echo junk > stray.txt; echo edit >> tracked.txt; mkdir -p cache;"
        " echo kept > cache/warm; exit 1\"\n    isolation = worktree\n    priority = 1\n"
        f"look:\n    run = \"pwd > {seen}; ls -a >> {seen};"
        f" cat tracked.txt cache/warm >> {seen}\"\n"
        "    isolation = worktree\n")})
    result = agentfile_cli("build", "-k", cwd=repo)
    assert result.code == 1, result.out + result.err
    lines = seen.read_text().splitlines()
    pool = pooled(repo)
    assert len(pool) == 1 and lines[0] == next(iter(pool))  # the same worktree, reused
    assert "stray.txt" not in lines  # untracked file of the target before: gone
    assert "edit" not in lines and "base" in lines  # its tracked edit: reset
    assert "kept" in lines  # the ignored file stays
    # At rest the pooled worktree is detached (branches free to merge or delete) and clean.
    assert worktrees(repo) == list(pool)
    path = Path(next(iter(pool)))
    assert git(path, "status", "--porcelain") == ""
    assert "HEAD detached" in git(path, "status")
    # The failed target's work is on its branch, as without reuse.
    branch = next(b.strip() for b in git(repo, "branch", "--format=%(refname:short)")
                  .splitlines() if b.endswith("/dirty"))
    assert "stray.txt" in git(repo, "show", "--stat", branch)


def test_setup_runs_once_per_pooled_worktree_and_again_when_its_inputs_change(
        repo: Path, agentfile_cli: Run) -> None:
    commit(repo, {".gitignore": "node_modules/\n", "package-lock.json": "{}\n",
                  "Agentfile": REUSE + (
                      "    setup = \"mkdir -p node_modules; echo ran >> node_modules/setups\"\n"
                      "    setup_inputs = [\"package-lock.json\"]\n    jobs = 1\n"
                      "a:\n    run = \"cat node_modules/setups > a.txt\"\n"
                      "    isolation = worktree\n    always = true\n"
                      "b: a\n    run = \"cat node_modules/setups > b.txt\"\n"
                      "    isolation = worktree\n    always = true\n")})
    for _ in range(2):
        result = agentfile_cli("build", cwd=repo)
        assert result.code == 0, result.out + result.err
    [(path, info)] = pooled(repo).items()
    assert info["setup_runs"] == 1
    assert (Path(path) / "node_modules" / "setups").read_text() == "ran\n"
    assert (repo / "b.txt").read_text() == "ran\n"  # b ran in it after a: no second setup
    log = next((repo / ".agentfile" / "runs").glob("*/setup/a.log"))
    assert "setup" in log.read_text()
    commit(repo, {"package-lock.json": '{"left-pad": "1.3.0"}\n'})
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert next(iter(pooled(repo).values()))["setup_runs"] == 2
    assert (repo / "a.txt").read_text() == "ran\nran\n"


def test_setup_runs_in_every_fresh_worktree_without_reuse(repo: Path, agentfile_cli: Run,
                                                           tmp_path: Path) -> None:
    counter = tmp_path / "setups"
    commit(repo, {"Agentfile": (
        f"options:\n    setup = \"echo ran >> {counter}\"\n"
        "a:\n    run = \"true\"\n    isolation = worktree\n"
        "b:\n    run = \"true\"\n    isolation = worktree\n")})
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert counter.read_text() == "ran\nran\n"
    assert not (repo / ".agentfile" / "pool").exists() and worktrees(repo) == []


def test_a_target_s_setup_overrides_its_agent_s_and_the_options(
        repo: Path, agentfile_cli: Run, tmp_path: Path) -> None:
    said = tmp_path / "said"
    commit(repo, {"Agentfile": (
        f"options:\n    setup = \"echo options >> {said}\"\n"
        f"agent helper: command\n    command = \"true\"\n    setup = \"echo agent >> {said}\"\n"
        "a:\n    agent = helper\n    prompt = \"x\"\n"
        f"b:\n    agent = helper\n    prompt = \"x\"\n    setup = \"echo target >> {said}\"\n"
        "    deps = [\"a\"]\n"
        "c:\n    run = \"true\"\n    isolation = worktree\n    deps = [\"b\"]\n")})
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert said.read_text().split() == ["agent", "target", "options"]


def test_a_failed_setup_fails_its_target_clearly_and_the_pool_stays_sound(
        repo: Path, agentfile_cli: Run) -> None:
    commit(repo, {"Agentfile": REUSE + (
        "    setup = \"echo cannot install; exit 3\"\n"
        "a:\n    run = \"echo ran > a.txt\"\n    isolation = worktree\n")})
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 1
    assert "setup `echo cannot install; exit 3` exited with 3" in result.out
    assert "cannot install" in result.out
    log = next((repo / ".agentfile" / "runs").glob("*/setup/a.log"))
    assert str(log.relative_to(repo)) in result.out and "cannot install" in log.read_text()
    [info] = pooled(repo).values()
    assert info["setup"] is None  # forgotten: the next target runs setup again
    # The target never ran; the worktree went back to the pool, where the next build fixes it.
    commit(repo, {"Agentfile": REUSE + "    setup = \"true\"\n"
                  "a:\n    run = \"echo ran > a.txt\"\n    isolation = worktree\n"})
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert (repo / "a.txt").read_text() == "ran\n" and len(pooled(repo)) == 1


def test_setup_that_leaves_files_git_sees_is_refused(repo: Path, agentfile_cli: Run) -> None:
    commit(repo, {"Agentfile": REUSE + "    setup = \"echo x > generated.txt\"\n"
                  "a:\n    run = \"true\"\n    isolation = worktree\n"})
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 1
    assert "changed files git does not ignore (generated.txt)" in result.out
    assert "generated.txt" not in git(repo, "log", "--all", "--stat")  # never committed


def test_two_targets_at_j2_use_two_worktrees_and_merge_in_dependency_order(
        repo: Path, agentfile_cli: Run, tmp_path: Path) -> None:
    # a and b each wait for the other to start: they run at once, in two worktrees.
    wait = "touch {tmp}/{me}; for i in $(seq 300); do [ -e {tmp}/{other} ] && break; " \
           "sleep 0.05; done; pwd > {tmp}/{me}.where; echo {me} > {me}.txt"
    body = REUSE + "    jobs = 2\n"
    for me, other in (("a", "b"), ("b", "a")):
        body += (f"{me}:\n    run = \"{wait.format(tmp=tmp_path, me=me, other=other)}\"\n"
                 "    isolation = worktree\n")
    body += "c: a b\n    run = \"cat a.txt b.txt > c.txt\"\n    isolation = worktree\n"
    commit(repo, {"Agentfile": body})
    for _ in range(2):  # the second build takes both pooled worktrees again
        result = agentfile_cli("build", "-B", cwd=repo)
        assert result.code == 0, result.out + result.err
        where = {(tmp_path / f"{t}.where").read_text() for t in "ab"}
        assert len(where) == 2 and {Path(w.strip()) for w in where} <= \
            {Path(p) for p in pooled(repo)}
    assert len(pooled(repo)) == 2
    assert (repo / "c.txt").read_text() == "a\nb\n"
    subjects = git(repo, "log", "--format=%s", "-n", "3").split("\n")
    assert subjects[0] == "agentfile: c"
    # A build with one job slot keeps one pooled worktree: the other goes when given back.
    for mark in "ab":  # nobody waits for the other now
        (tmp_path / mark).touch()
    result = agentfile_cli("build", "-B", "-j1", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert len(pooled(repo)) == 1 and len(worktrees(repo)) == 1


def test_a_copied_file_is_fresh_for_each_target_and_never_left_for_the_next(
        repo: Path, agentfile_cli: Run, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    commit(repo, {".gitignore": ".env\n", "Agentfile": REUSE + "    jobs = 1\n" + (
        f"first:\n    run = \"cat .env >> {seen}\"\n    isolation = worktree\n"
        "    copy = [\".env\"]\n    always = true\n"
        f"second: first\n    run = \"test -e .env && echo leaked >> {seen}"
        f" || echo none >> {seen}\"\n"
        "    isolation = worktree\n    always = true\n")})
    (repo / ".env").write_text("KEY=1\n")
    assert agentfile_cli("build", cwd=repo).code == 0
    (repo / ".env").write_text("KEY=2\n")
    assert agentfile_cli("build", cwd=repo).code == 0
    assert seen.read_text().split() == ["KEY=1", "none", "KEY=2", "none"]


def test_an_odd_pool_never_fails_a_target(repo: Path, agentfile_cli: Run) -> None:
    commit(repo, {"Agentfile": REUSE + "    jobs = 2\n"
                  "a:\n    run = \"echo a > a.txt\"\n    isolation = worktree\n"
                  "    always = true\n"
                  "b:\n    run = \"echo b > b.txt\"\n    isolation = worktree\n"
                  "    always = true\n"})
    assert agentfile_cli("build", cwd=repo).code == 0
    first, second = list(pooled(repo))
    subprocess.run(["rm", "-rf", first], check=True)  # its folder deleted behind git's back
    (Path(second) / ".git").write_text("gitdir: /nowhere\n")  # its .git damaged
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert (repo / "a.txt").exists() and (repo / "b.txt").exists()
    for path in pooled(repo):
        assert git(Path(path), "status", "--porcelain") == ""
    assert sorted(worktrees(repo)) == sorted(pooled(repo))
    assert git(repo, "status", "--porcelain") == ""  # the main checkout untouched


def test_clean_removes_the_pool_but_never_a_worktree_in_use(repo: Path, agentfile_cli: Run,
                                                            tmp_path: Path) -> None:
    go = tmp_path / "go"
    commit(repo, {"Agentfile": REUSE + "    jobs = 2\n"
                  "quick:\n    run = \"echo q > q.txt\"\n    isolation = worktree\n"
                  f"held:\n    run = \"while [ ! -e {go} ]; do sleep 0.05; done\"\n"
                  "    isolation = worktree\n"})
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: sorted(bool(i["user"]) for i in pooled(repo).values())
                   == [False, True])
        result = agentfile_cli("clean", "--json", cwd=repo)
        assert result.code == 0, result.err
        steps = {s["name"]: s for s in json.loads(result.out) if s["kind"] == "pooled worktree"}
        in_use = next(p for p, i in pooled(repo).items() if i["user"])
        assert steps[in_use]["action"] == "kept"
        assert steps[in_use]["why"] == "in use by a running build"
        [free] = [p for p in steps if p != in_use]
        assert steps[free]["action"] == "removed" and not Path(free).exists()
        assert Path(in_use).is_dir()
    finally:
        go.touch()
        assert build.wait(timeout=60) == 0
    result = agentfile_cli("clean", cwd=repo)
    assert f"removed pooled worktree {in_use}" in result.out
    assert pooled(repo) == {} and worktrees(repo) == []


def test_a_worktree_a_dead_build_was_using_goes_back_to_the_pool(
        repo: Path, agentfile_cli: Run, tmp_path: Path) -> None:
    go, seen = tmp_path / "go", tmp_path / "seen"
    commit(repo, {".gitignore": ".env\n", "Agentfile": REUSE + "    jobs = 1\n" + (
        f"slow:\n    run = \"echo left > left.txt; while [ ! -e {go} ]; do sleep 0.05; done;"
        " echo done > slow.txt\"\n    isolation = worktree\n"
        "    copy = [\".env\", \"local.cfg\"]\n"
        f"look:\n    run = \"ls -a > {seen}\"\n    isolation = worktree\n    priority = -1\n")})
    # Copied into the worktree, uncommitted here: one that git ignores, one it would see.
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "local.cfg").write_text("token = 2\n")
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "slow"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any((Path(p) / "left.txt").exists() for p in pooled(repo)))
        sigkill_build(build)
    finally:
        go.touch()
    [(path, info)] = pooled(repo).items()
    assert info["user"] and (Path(path) / ".env").exists()  # in use when its build died
    # The next build takes the worktree over: back in the pool, clean, the copy gone.
    result = agentfile_cli("build", "look", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert list(pooled(repo)) == [path]
    assert ".env" not in seen.read_text().split() and "left.txt" not in seen.read_text()
    # What the dead build's target left was committed on its branch, not thrown away.
    assert "work in progress of slow" in git(repo, "log", "--all", "--format=%s")
    assert "local.cfg" not in git(repo, "log", "--all", "--stat")  # a copy: never committed
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert (repo / "slow.txt").exists() and list(pooled(repo)) == [path]


def test_a_target_s_commit_runs_no_git_maintenance(repo: Path, agentfile_cli: Run,
                                                  tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    commit(repo, {"Agentfile": REUSE + "a:\n    run = \"echo a > a.txt\"\n"
                  "    isolation = worktree\n"})
    # The user's own GIT_CONFIG_* entries still count.
    env = {"GIT_TRACE2_PERF": str(trace), "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "Configured Here"}
    result = agentfile_cli("build", cwd=repo, env=env)
    assert result.code == 0, result.out + result.err
    assert "| commit " in trace.read_text() and "commit/maintenance" not in trace.read_text()
    assert git(repo, "log", "-1", "--format=%an", "--", "a.txt").strip() == "Configured Here"

"""Isolation: worktrees, branches, directories and tmux; ordered merges; nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Run, git, wait_for_descendants

SHELL_AGENT = '''\
options:
    isolation = worktree
agent sh: command
    command = "sh -c \\"$(cat {prompt_file})\\""
'''


def agent_target(name: str, script: str, deps: str = "", extra: str = "") -> str:
    return f"{name}: {deps}\n    agent = sh\n    prompt = {json.dumps(script)}\n{extra}"


def commit_manifest(repo: Path, text: str) -> None:
    (repo / "Agentfile").write_text(SHELL_AGENT + text)
    git(repo, "add", "Agentfile")
    git(repo, "commit", "-qm", "manifest")


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--format=%(refname:short)").split()


def test_parallel_worktrees_merge_and_land(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("a", "echo A > a.txt")
                    + agent_target("b", "echo B > b.txt")
                    + agent_target("c", "cat a.txt b.txt > c.txt", "a b",
                                   '    verify = "test -s c.txt"\n'))
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert (repo / "c.txt").read_text() == "A\nB\n"  # c saw both dependencies' work
    assert "landed" in result.out
    assert git(repo, "status", "--porcelain") == ""  # the user's tree: clean, holding it all
    assert branches(repo) == ["main"]  # every agentfile branch merged and deleted
    worktrees = git(repo, "worktree", "list", "--porcelain")
    assert worktrees.count("worktree ") == 1  # only the user's own
    log = git(repo, "log", "--format=%s")
    assert "agentfile: a\n" in log and "agentfile: merge " in log


def test_conflict_keeps_branch_and_leaves_user_untouched(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("one", "echo one > README.md")
                    + agent_target("two", "sleep 0.3; echo two > README.md")
                    + agent_target("after", "echo x > after.txt", "two"))
    head = git(repo, "rev-parse", "HEAD").strip()
    result = agentfile_cli("build", "-k", cwd=repo)
    assert result.code == 1
    lines = [json.loads(x) for x in (_last_run(repo) / "events.jsonl").read_text().splitlines()]
    status = {e["target"]: e["status"] for e in lines if e["event"] == "target_finished"}
    assert status == {"one": "succeeded", "two": "conflict", "after": "blocked"}
    assert git(repo, "rev-parse", "HEAD").strip() == head  # not landed
    assert (repo / "README.md").read_text() == "test repo\n"  # the user's tree untouched
    kept = [b for b in branches(repo) if b.startswith("agentfile/targets/")]
    assert len(kept) == 1 and kept[0].endswith("/two")
    assert "README.md" in result.out and "git merge" in result.out
    integration = [b for b in branches(repo) if b.count("/") == 1 and b != "main"]
    assert integration and git(repo, "show", f"{integration[0]}:README.md").strip() == "one"


def test_failed_and_interrupted_work_is_kept(repo: Path) -> None:
    commit_manifest(repo, agent_target("slow", "echo draft > draft.txt; sleep 30")
                    + agent_target("bad", "echo half > half.txt; exit 1"))
    proc = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "-k"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "NO_COLOR": "1"})
    wait_for_descendants(proc.pid, "sleep")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 130, out
    kept = {b.rsplit("/", 1)[-1]: b for b in branches(repo) if "targets" in b}
    assert set(kept) == {"slow", "bad"}
    assert git(repo, "show", f"{kept['slow']}:draft.txt").strip() == "draft"  # recoverable
    assert git(repo, "show", f"{kept['bad']}:half.txt").strip() == "half"
    assert "work in progress" in git(repo, "log", "-1", "--format=%s", kept["slow"])
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert "kept branch" in out


def test_dirty_tree_is_never_modified(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("a", "echo A > a.txt"))
    (repo / "README.md").write_text("my unsaved edit\n")
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0
    assert "uncommitted change" in result.err
    assert (repo / "README.md").read_text() == "my unsaved edit\n"
    assert not (repo / "a.txt").exists()  # not landed into a dirty tree
    assert "land it with: git merge --ff-only agentfile/" in result.out


@pytest.mark.parametrize("ignored", [False, True])  # a .env is usually in .gitignore
def test_copy_brings_untracked_files_but_never_commits_them(repo: Path, agentfile_cli: Run,
                                                             ignored: bool) -> None:
    (repo / ".env").write_text("TOKEN=abc\n")
    if ignored:
        (repo / ".gitignore").write_text(".env\n")
        git(repo, "add", ".gitignore")
    commit_manifest(repo, agent_target("a", "cp .env seen.txt", extra='    copy = [".env"]\n'))
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert (repo / "seen.txt").read_text() == "TOKEN=abc\n"
    assert ".env" not in git(repo, "ls-files")
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_dependency_diff_reaches_the_reviewer(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("writer", "echo 'new line' >> README.md")
                    + "review: writer\n    agent = sh\n    isolation = none\n"
                    '    prompt = "printf %s {deps.writer.diff} > /dev/null; true"\n')
    assert agentfile_cli("build", cwd=repo).code == 0
    prompt = (_last_run(repo) / "prompts" / "review.md").read_text()
    assert "+new line" in prompt and "README.md" in prompt


def _last_run(repo: Path) -> Path:
    runs = sorted((repo / ".agentfile" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return runs[-1]


def test_dir_isolation_runs_inside_and_flags_violations(repo: Path, agentfile_cli: Run) -> None:
    (repo / "apps" / "users").mkdir(parents=True)
    (repo / "apps" / "web").mkdir(parents=True)
    commit_manifest(repo, '''\
good:
    isolation = dir("apps/users")
    run = "pwd > where.txt"
bad:
    isolation = dir("apps/web")
    run = "echo x > ../../stray.txt; echo y > inside.txt"
''')
    # One at a time: in a shared checkout a change cannot be told apart from a neighbour's.
    result = agentfile_cli("build", "-k", "-j1", cwd=repo)
    assert result.code == 1
    assert (repo / "apps" / "users" / "where.txt").read_text().strip() == str(
        repo / "apps" / "users")
    lines = [json.loads(x) for x in (_last_run(repo) / "events.jsonl").read_text().splitlines()]
    finished = {e["target"]: e for e in lines if e["event"] == "target_finished"}
    assert finished["good"]["status"] == "succeeded"
    assert finished["bad"]["status"] == "violation"
    assert "stray.txt" in str(finished["bad"]["detail"])
    assert "inside.txt" not in str(finished["bad"]["detail"])


def test_overlapping_dirs_never_run_together(repo: Path, agentfile_cli: Run) -> None:
    (repo / "apps" / "a").mkdir(parents=True)
    trace = repo.parent / "trace.txt"  # outside the repository: not a violation
    stamp = f"echo {{target}} $(date +%s.%N) >> {trace}"
    commit_manifest(repo, f'''\
outer:
    isolation = dir("apps")
    run = "{stamp.replace('{target}', 'start')}; sleep 0.3; {stamp.replace('{target}', 'end')}"
inner:
    isolation = dir("apps/a")
    run = "{stamp.replace('{target}', 'start')}; sleep 0.3; {stamp.replace('{target}', 'end')}"
''')
    assert agentfile_cli("build", "-j2", cwd=repo).code == 0
    rows = [line.split() for line in trace.read_text().splitlines()]
    assert [r[0] for r in rows] == ["start", "end", "start", "end"]  # one after the other


def test_branch_isolation_restores_the_checkout(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("on-branch", "echo B > b.txt; git branch --show-current"
                                       " > seen-branch.txt", extra="    isolation = branch\n"))
    (repo / "untracked-note.txt").write_text("mine\n")
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert git(repo, "branch", "--show-current").strip() == "main"
    assert (repo / "b.txt").read_text() == "B\n"  # landed
    seen = (repo / "seen-branch.txt").read_text()
    assert seen.startswith("agentfile/targets/")
    assert (repo / "untracked-note.txt").read_text() == "mine\n"  # never committed or lost
    assert "untracked-note.txt" not in git(repo, "ls-files")


def test_branch_isolation_refuses_a_dirty_tree(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("b", "echo B > b.txt", extra="    isolation = branch\n"))
    (repo / "README.md").write_text("unsaved\n")
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 1 and "clean work tree" in result.out
    assert (repo / "README.md").read_text() == "unsaved\n"
    assert git(repo, "branch", "--show-current").strip() == "main"


def test_clean_removes_only_what_is_safe(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("one", "echo one > README.md")
                    + agent_target("two", "sleep 0.3; echo two > README.md"))
    assert agentfile_cli("build", "-k", "--keep-worktrees", cwd=repo).code == 1
    before = branches(repo)
    assert len([b for b in before if b.startswith("agentfile/")]) >= 2
    dry = agentfile_cli("clean", "-n", cwd=repo)
    assert dry.code == 0 and "would remove worktree" in dry.out
    assert branches(repo) == before  # -n changed nothing
    result = agentfile_cli("clean", cwd=repo)
    assert "kept branch" in result.out and "merged nowhere" not in result.out
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    kept = [b for b in branches(repo) if b.startswith("agentfile/")]
    assert kept  # the conflict's branch and the unlanded integration branch hold work
    again = agentfile_cli("clean", cwd=repo)
    assert "removed" not in again.out  # idempotent
    forced = agentfile_cli("clean", "--force", cwd=repo)
    assert forced.code == 0 and branches(repo) == ["main"]
    (repo / "manual-branch-guard").write_text("")
    git(repo, "branch", "agentfile/not-ours")  # made by hand: never touched
    agentfile_cli("clean", "--all", "--force", cwd=repo)
    assert "agentfile/not-ours" in branches(repo)


def _sessions() -> list[str]:
    found = subprocess.run(["tmux", "list-sessions", "-F", "#{session_name}"],
                           capture_output=True, text=True)
    return found.stdout.split() if found.returncode == 0 else []


def _session_of(repo: Path) -> list[str]:
    """This repository's sessions (every test's repository is named `repo`: the name's hash
    of the whole path tells them apart)."""
    from agentfile.isolation.tmux import session_name

    return [s for s in _sessions() if s.startswith(session_name(repo, ""))]


@pytest.mark.parametrize("ending", ["success", "failure", "timeout", "sigint"])
def test_tmux_session_lives_exactly_as_long_as_the_build(repo: Path, ending: str) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    command = {"success": "echo hi; sleep 1", "failure": "echo hi; sleep 1; exit 3",
               "timeout": "echo hi; sleep 30", "sigint": "echo hi; sleep 30"}[ending]
    budget = "    budget = 2s\n" if ending == "timeout" else ""
    (repo / "Agentfile").write_text(f'watched:\n    terminal = tmux\n{budget}'
                                    f'    run = "{command}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "NO_COLOR": "1"})
    wait_for_descendants_or_session(repo)
    assert len(_session_of(repo)) == 1  # present while it runs
    if ending == "sigint":
        proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=30)[0].decode()
    expected = {"success": 0, "failure": 1, "timeout": 1, "sigint": 130}[ending]
    assert proc.returncode == expected, out
    assert _session_of(repo) == []  # and gone after, however the build ended
    log = (_last_run(repo) / "logs" / "watched.log").read_text()
    assert "hi" in log


def wait_for_descendants_or_session(repo: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _session_of(repo):
        time.sleep(0.05)
    time.sleep(0.3)


def test_clean_keeps_the_branch_of_a_worktree_it_keeps(repo: Path, agentfile_cli: Run) -> None:
    """A kept worktree with uncommitted changes stays, and so does the branch checked out
    in it (git cannot delete that branch): no error, both named."""
    commit_manifest(repo, agent_target("one", "echo one > README.md"))
    assert agentfile_cli("build", "--keep-worktrees", cwd=repo).code == 0
    (worktree,) = [Path(line.removeprefix("worktree ")) for line in
                   git(repo, "worktree", "list", "--porcelain").splitlines()
                   if line.startswith("worktree ") and ".agentfile" in line]
    (worktree / "notes.txt").write_text("mine\n")
    result = agentfile_cli("clean", cwd=repo)
    assert result.code == 0 and "internal error" not in result.err, result.err
    assert f"kept worktree {worktree}" in result.out
    assert f"checked out in {worktree}" in result.out
    assert (worktree / "notes.txt").read_text() == "mine\n"
    forced = agentfile_cli("clean", "--force", cwd=repo)
    assert forced.code == 0 and not worktree.exists()
    assert [b for b in branches(repo) if b.startswith("agentfile/targets/")] == []


@pytest.mark.parametrize("isolation", ["worktree", "branch"])
@pytest.mark.parametrize("move", ["git checkout -q --detach", "git checkout -q -b mine"])
def test_work_committed_off_the_target_s_branch_still_lands(repo: Path, agentfile_cli: Run,
                                                            isolation: str, move: str) -> None:
    """An agent that detaches HEAD or switches to a branch of its own, commits there and
    leaves more uncommitted: all of it lands, as if it had stayed on its branch."""
    commit_manifest(repo, agent_target(
        "a", f"{move} && echo important > f.txt && git add f.txt && git commit -qm mine "
             "&& echo also > g.txt", extra=f"    isolation = {isolation}\n"))
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert git(repo, "show", "main:f.txt") == "important\n"
    assert git(repo, "show", "main:g.txt") == "also\n"


def test_odd_target_names_get_worktrees_and_branches(repo: Path, agentfile_cli: Run) -> None:
    """`~` (not allowed in a branch name), non-ASCII (%XX in the worktree's path, which
    GitPython would take for a %VARIABLE%), and a name longer than a file name may be."""
    commit_manifest(repo, 'm/{x}:\n    foreach x in ["v~1", "ü", "' + "n" * 230 + '"]\n'
                          '    agent = sh\n    prompt = "echo {x} > $(echo {x} | md5sum | '
                          'cut -c1-8).txt"\n')
    result = agentfile_cli("build", "-j3", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert result.err == ""  # no library warning either
    assert len(git(repo, "ls-files", "*.txt").split()) == 3


def test_a_target_named_inside_another_gets_a_worktree_beside_it(
        repo: Path, agentfile_cli: Run) -> None:
    """`rev` and `rev/a` both in worktrees: side by side, not one inside the other (whose
    commit would then take the other in as an embedded repository)."""
    commit_manifest(repo, agent_target("rev", "sleep 0.5; echo R > r.txt")
                    + agent_target("rev/a", "echo A > a.txt"))
    result = agentfile_cli("build", "-j2", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert git(repo, "show", "main:r.txt") == "R\n" and git(repo, "show", "main:a.txt") == "A\n"
    tree = git(repo, "ls-tree", "-r", "main")
    assert " commit " not in tree and "rev" not in tree  # no gitlink, no worktree folder


def test_work_a_build_could_not_land_is_not_up_to_date(repo: Path, agentfile_cli: Run) -> None:
    """a and b succeed, c conflicts with b: nothing lands. c fixed, --retry-failed: a and b
    are not taken as done while the user's branch lacks their work; it all lands."""
    (repo / "f.txt").write_text("one\ntwo\nthree\n")
    git(repo, "add", "f.txt")
    edit = "sleep 0.3; sed -i 2s/.*/$AGENTFILE_TARGET/ f.txt"
    commit_manifest(repo, agent_target("a", "echo from-a > a.txt")
                    + agent_target("b", edit) + agent_target("c", edit))
    assert agentfile_cli("build", "-j3", "-k", cwd=repo).code == 1
    assert not (repo / "a.txt").exists()  # nothing landed
    commit_manifest(repo, agent_target("a", "echo from-a > a.txt") + agent_target("b", edit)
                    + agent_target("c", "echo from-c > c.txt"))
    preview = agentfile_cli("build", "-n", "--retry-failed", cwd=repo).out
    assert "would run: a" in preview and "would run: b" in preview, preview
    result = agentfile_cli("build", "--retry-failed", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert (repo / "a.txt").read_text() == "from-a\n"
    assert (repo / "f.txt").read_text() == "one\nb\nthree\n"
    assert (repo / "c.txt").read_text() == "from-c\n"
    again = agentfile_cli("build", cwd=repo)  # landed: now all of it is up to date
    assert again.code == 0 and "would run:" not in agentfile_cli("build", "-n", cwd=repo).out


def test_an_up_to_date_dependency_s_diff_still_reaches_the_reviewer(
        repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("gen", "echo generated > gen.txt")
                    + "use: gen\n    agent = sh\n    isolation = none\n"
                    '    prompt = "printf %s V1 {deps.gen.diff} > /dev/null; true"\n')
    assert agentfile_cli("build", cwd=repo).code == 0
    commit_manifest(repo, agent_target("gen", "echo generated > gen.txt")
                    + "use: gen\n    agent = sh\n    isolation = none\n"
                    '    prompt = "printf %s V2 {deps.gen.diff} > /dev/null; true"\n')
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0 and "up-to-date gen" in result.out, result.out
    prompt = (_last_run(repo) / "prompts" / "use.md").read_text()
    assert "V2" in prompt and "+generated" in prompt and "gen.txt" in prompt


def test_a_run_target_after_agents_work_sees_it(repo: Path, agentfile_cli: Run) -> None:
    """`final: a b` runs on a and b's merged work in the first build (it used to run in the
    user's checkout, which holds that work only once the build lands), as a check: what it
    leaves there (a report) is not kept. A run target with no such dependency stays in the
    checkout."""
    commit_manifest(repo, agent_target("a", "echo A > a.txt") + agent_target("b", "echo B > b.txt")
                    + "final: a b\n    run = \"cat a.txt b.txt > coverage.txt\"\n"
                    + "alone:\n    run = \"pwd > where.txt\"\n")
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err  # cat found both files
    assert (repo / "a.txt").exists() and not (repo / "coverage.txt").exists()
    assert "coverage.txt" not in git(repo, "log", "--stat", "--format=")
    assert (repo / "where.txt").read_text().strip() == str(repo.resolve())
    events = [json.loads(x) for x in (_last_run(repo) / "events.jsonl").read_text().splitlines()]
    where = {e["target"]: e["isolation"] for e in events if e["event"] == "target_started"}
    assert where["final"].startswith("worktree") and where["alone"] == "none"


def test_options_terminal_tmux_puts_every_target_in_the_session(repo: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    (repo / "Agentfile").write_text("options:\n    terminal = tmux\n    jobs = 3\n"
                                    + "".join(f"w{i}:\n    run = \"echo hi{i}; sleep 1.5\"\n"
                                              for i in range(3)))
    proc = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "NO_COLOR": "1"})
    wait_for_descendants_or_session(repo)
    (session,) = _session_of(repo)
    windows = subprocess.run(["tmux", "list-windows", "-t", session, "-F", "#{window_name}"],
                             capture_output=True, text=True).stdout.split()
    assert proc.wait(timeout=30) == 0
    assert {"w0", "w1", "w2"} <= set(windows), windows
    assert _session_of(repo) == []


def test_work_kept_by_no_merge_lands_with_the_next_build(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, agent_target("x", "echo new > x.txt"))
    assert agentfile_cli("build", "--no-merge", cwd=repo).code == 0
    assert not (repo / "x.txt").exists()
    result = agentfile_cli("build", cwd=repo)  # not "up to date": its work never landed
    assert result.code == 0 and "up-to-date x" not in result.out, result.out
    assert (repo / "x.txt").read_text() == "new\n"


def test_a_dry_run_works_without_the_agents_clis(repo: Path, agentfile_cli: Run) -> None:
    commit_manifest(repo, "a:\n    agent = claude\n    prompt = \"p\"\n")
    env = {"AGENTFILE_CLAUDE": str(repo / "no-such-claude")}
    dry = agentfile_cli("build", "-n", cwd=repo, env=env)
    assert dry.code == 0 and "would run: a" in dry.out, dry.out + dry.err
    assert "a build would stop here" in dry.err
    assert agentfile_cli("build", cwd=repo, env=env).code == 2


def test_merge_manual_work_is_up_to_date_until_its_definition_changes(
        repo: Path, agentfile_cli: Run) -> None:
    """`merge = manual` never lands by itself: the user lands it when they choose, so its
    targets are not run again (and paid for again) in the meantime."""
    commit_manifest(repo, "options:\n    merge = manual\n" + agent_target("g", "echo g > g.txt"))
    assert agentfile_cli("build", cwd=repo).code == 0
    again = agentfile_cli("build", cwd=repo)
    assert again.code == 0 and "up-to-date g" in again.out, again.out

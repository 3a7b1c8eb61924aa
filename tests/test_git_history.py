"""The history a build leaves: whose commits, what they say, and the squashed landing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from conftest import EXAMPLES, Run, git, installed_cli
from standin.anthropic import AnthropicStandin, Reply, has_tools, text, tool_use

MANIFEST = '''\
options:
    isolation = worktree
agent sh: command
    command = "sh -c \\"$(cat {prompt_file})\\""
one:
    description = "Write one"
    agent = sh
    prompt = "echo 1 > one.txt"
two:
    agent = sh
    prompt = "echo 2 > two.txt"
'''


def commit_manifest(repo: Path, text: str = MANIFEST) -> str:
    (repo / "Agentfile").write_text(text)
    git(repo, "add", "Agentfile")
    git(repo, "commit", "-qm", "manifest")
    return git(repo, "rev-parse", "HEAD").strip()


def log(repo: Path, fmt: str, *args: str) -> list[str]:
    return [line for line in git(repo, "log", f"--format={fmt}", *args).splitlines() if line]


def test_commits_are_the_user_s_with_trailers(repo: Path, agentfile_cli: Run) -> None:
    start = commit_manifest(repo)
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    made = f"{start}..HEAD"
    assert set(log(repo, "%an <%ae>|%cn <%ce>", made)) == {
        "test <test@example.com>|test <test@example.com>"}
    targets = log(repo, "%(trailers:key=Agentfile-Target,valueonly)", made, "--no-merges")
    assert sorted(targets) == ["one", "two"]
    assert set(log(repo, "%(trailers:key=Agentfile-Agent,valueonly)", made,
                   "--no-merges")) == {"sh (command)"}
    subjects = log(repo, "%s", made)
    assert "agentfile: one" in subjects and "agentfile: two" in subjects
    assert any(s.startswith("agentfile: merge ") for s in subjects)  # a merge commit too
    body = git(repo, "log", "-1", "--format=%B", "--grep=^agentfile: one$")
    assert "Write one" in body and "Agentfile-Run: " in body


def test_git_s_environment_names_the_author(repo: Path, agentfile_cli: Run) -> None:
    start = commit_manifest(repo)
    env = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    assert agentfile_cli("build", "one", cwd=repo, env=env).code == 0
    assert set(log(repo, "%an <%ae>|%cn", f"{start}..HEAD")) == {
        "Ada <ada@example.com>|test"}


def test_agentfile_commits_only_when_git_knows_no_one(repo: Path, agentfile_cli: Run,
                                                      tmp_path: Path) -> None:
    start = commit_manifest(repo)
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")
    home = tmp_path / "empty-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
            "EMAIL": ""}
    result = subprocess.run(["git", "-c", "user.useConfigOnly=true", "var",
                             "GIT_AUTHOR_IDENT"], cwd=repo, env=env, capture_output=True)
    assert result.returncode != 0  # git itself knows no one here
    built = agentfile_cli("build", "one", cwd=repo, env=env)
    assert built.code == 0, built.out + built.err
    assert set(log(repo, "%an <%ae>", f"{start}..HEAD")) == {"agentfile <agentfile@localhost>"}


def test_squash_lands_one_commit_and_the_next_build_is_up_to_date(
        repo: Path, agentfile_cli: Run) -> None:
    start = commit_manifest(repo)
    result = agentfile_cli("build", "--squash", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert "as one commit" in result.out
    assert log(repo, "%P", f"{start}..HEAD") == [start]  # one commit, on where it began
    message = git(repo, "log", "-1", "--format=%B")
    assert message.startswith("agentfile: build ") and "(2 targets)" in message
    assert "- one\n- two\n" in message and "Agentfile-Run: " in message
    assert (repo / "one.txt").read_text() == "1\n" and (repo / "two.txt").read_text() == "2\n"
    assert not [b for b in git(repo, "branch", "--format=%(refname:short)").split()
                if b.startswith("agentfile/")]
    again = agentfile_cli("build", "--squash", cwd=repo)
    assert again.code == 0 and "start " not in again.out, again.out  # its work is landed
    assert git(repo, "rev-parse", "HEAD").strip() == log(repo, "%H", "-1")[0]


def _migrating(body: dict[str, Any]) -> Reply | None:
    """The model of examples/migration-fanout (which may only read, edit and compile): reads
    the file it is asked to migrate, puts logging in place of legacy_log, then says so."""
    if not has_tools(body):
        return None
    sent = json.dumps(body["messages"])
    found = re.search(r"Migrate (src/[\w/]+\.py) from the legacy", sent)
    workdir = re.search(r"[Ww]orking directory: ([^\\\"\n]+)", json.dumps(body))
    assert found and workdir, sent[:500]
    path = f"{workdir.group(1)}/{found.group(1)}"
    done = sent.count('"tool_result"')
    if done == 0:
        return tool_use("Read", {"file_path": path})
    if done > 1:
        return text("Migrated.")
    source = Path(path).read_text()
    migrated = source.replace("from legacy_log import write_log",
                              "import logging\n\nlog = logging.getLogger(__name__)")
    migrated = re.sub(r'write_log\("(\w+)", ', lambda m: "log." + {
        "WARN": "warning"}.get(m.group(1), m.group(1).lower()) + "(", migrated)
    return tool_use("Edit", {"file_path": path, "old_string": source, "new_string": migrated})


def test_what_verify_leaves_is_not_committed_in_the_shipped_example(
        tmp_path: Path, agentfile_cli: Run) -> None:
    """examples/migration-fanout verifies each file with `python -m py_compile`, which
    writes __pycache__: that is never committed, so the example's own lint passes."""
    claude = installed_cli("install_claude.sh")
    repo = tmp_path / "migration"
    shutil.copytree(EXAMPLES / "migration-fanout", repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-qm", "start")
    with AnthropicStandin(handler=_migrating) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "ANTHROPIC"))}
        env |= server.claude_env() | {"HOME": str(tmp_path), "AGENTFILE_CLAUDE": claude,
                                      "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@example.com",
                                      "GIT_COMMITTER_NAME": "u",
                                      "GIT_COMMITTER_EMAIL": "u@example.com"}
        result = agentfile_cli("build", "migrate", cwd=repo, env=env, timeout=300)
    assert result.code == 0, result.out + result.err
    assert "landed" in result.out
    tracked = git(repo, "ls-files")
    assert "__pycache__" not in tracked and ".pyc" not in tracked, tracked
    everything = git(repo, "log", "--all", "--name-only", "--format=")
    assert "__pycache__" not in everything
    lint = subprocess.run(["sh", "-c", "! grep -rn legacy_log src/"], cwd=repo,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout  # the example's lint, on the landed work


def test_caches_and_what_verify_writes_are_not_the_target_s_work(
        repo: Path, agentfile_cli: Run) -> None:
    start = commit_manifest(repo, MANIFEST.split("one:")[0] + (
        "made:\n    agent = sh\n"
        '    prompt = "mkdir -p pkg/__pycache__ && echo x > pkg/__pycache__/m.pyc && '
        'echo y > pkg/m.py && echo z > top.pyc"\n'
        '    verify = "echo checked > report.txt && mkdir -p out && echo r > out/r.txt"\n'))
    result = agentfile_cli("build", cwd=repo)
    assert result.code == 0, result.out + result.err
    assert git(repo, "diff", "--name-only", start, "HEAD").split() == ["pkg/m.py"]

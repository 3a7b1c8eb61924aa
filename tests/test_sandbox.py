"""`sandbox = true`: targets under the real bubblewrap, the real Claude Code and Codex CLIs
inside it against their stand-ins, and the refusal where bwrap cannot run.

Skipped only where bwrap cannot make a sandbox at all (CI installs it: .ci/run).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import Run, codex_env, git, installed_cli
from standin.anthropic import AnthropicStandin, text, tool_use
from standin.openai import OpenAIStandin, add_file_patch, apply_patch_call
from standin.openai import message as reply

from agentfile.isolation.sandbox import why_not

needs_bwrap = pytest.mark.skipif(why_not() is not None, reason=f"no sandbox here: {why_not()}")


def commit(repo: Path, manifest: str) -> None:
    (repo / "Agentfile").write_text(manifest)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "manifest")


def finished(repo: Path) -> dict[str, dict[str, Any]]:
    runs = sorted((repo / ".agentfile" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    events = [json.loads(x) for x in (runs[-1] / "events.jsonl").read_text().splitlines()]
    return {e["target"]: e for e in events if e["event"] == "target_finished"}


def log_of(repo: Path, target: str) -> str:
    runs = sorted((repo / ".agentfile" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return (runs[-1] / "logs" / f"{target}.log").read_text()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@needs_bwrap
@pytest.mark.parametrize("worktrees", ["fresh", "reuse"])
def test_a_worktree_agent_writes_its_own_work_and_nothing_outside(
        repo: Path, agentfile_cli: Run, home: Path, worktrees: str) -> None:
    commit(repo, f'''options:
    sandbox = true
    worktrees = {worktrees}

agent sh: command
    command = "echo mine > own.txt; echo x > {home}/escaped.txt; echo y > {repo}/README.md; \
echo z > /tmp/scratch.txt && cat /tmp/scratch.txt"

w:
    agent = sh
    prompt = "go"
''')
    result = agentfile_cli("build", cwd=repo, env={"HOME": str(home)})
    assert result.code == 0, result.out + result.err
    assert (repo / "own.txt").read_text() == "mine\n"  # its work landed
    assert list(home.iterdir()) == []  # nothing in the home directory
    assert (repo / "README.md").read_text() == "test repo\n"  # nor in the main checkout
    log = log_of(repo, "w")
    assert f"cannot create {repo}/README.md: Read-only file system" in log
    assert "\nz\n" in log  # a private /tmp it may write
    assert not Path("/tmp/scratch.txt").exists()


@needs_bwrap
def test_a_dir_target_cannot_write_outside_and_is_not_blamed_for_a_neighbour(
        repo: Path, agentfile_cli: Run) -> None:
    for folder in ("a", "b", "c", "d"):
        (repo / folder).mkdir()
        (repo / folder / ".keep").write_text("")
    # a (sandboxed, well-behaved) ends only once b, beside it and not sandboxed, has written
    # outside its own directory: before the sandbox, a was blamed for b's write.
    commit(repo, '''agent sh: command
    command = "sh ../job.sh"

a:
    agent = sh
    prompt = "a"
    isolation = dir("a")
    sandbox = true

b:
    agent = sh
    prompt = "b"
    isolation = dir("b")

escape:
    agent = sh
    prompt = "escape"
    isolation = dir("c")
    sandbox = true
''')
    script = ('case "$AGENTFILE_TARGET" in\n'
              'a) echo ours > ours.txt; while [ ! -f ../d/stray.txt ]; do sleep 0.05; done;;\n'
              'b) echo ours > ours.txt; echo stray > ../d/stray.txt;;\n'
              'escape) echo x > ../a/theirs.txt; echo rc=$?;;\n'
              'esac\n')
    (repo / "job.sh").write_text(script)
    git(repo, "add", "job.sh")
    git(repo, "commit", "-qm", "job")
    result = agentfile_cli("build", "-j3", "--keep-going", cwd=repo)
    got = finished(repo)
    assert got["a"]["status"] == "succeeded", result.out + result.err
    assert got["b"]["status"] == "violation"  # b's own write outside b
    assert (repo / "a" / "ours.txt").read_text() == "ours\n"
    assert not (repo / "a" / "theirs.txt").exists()  # refused inside `escape`
    assert "Read-only file system" in log_of(repo, "escape")


@needs_bwrap
def test_a_run_target_and_verify_opt_in(repo: Path, agentfile_cli: Run, home: Path) -> None:
    commit(repo, f'''options:
    isolation = none

fenced:
    run = "echo x > {home}/run.txt; test ! -f {home}/run.txt"
    sandbox = true

open:
    run = "echo x > {home}/open.txt"

checked:
    agent = command
    prompt = "p"
    sandbox = true
    verify = "echo x > {home}/verify.txt"

agent command: command
    command = "true"
''')
    result = agentfile_cli("build", "--keep-going", cwd=repo, env={"HOME": str(home)})
    got = finished(repo)
    assert got["fenced"]["status"] == "succeeded", result.out + result.err
    assert got["open"]["status"] == "succeeded"  # not sandboxed: as before
    assert got["checked"]["status"] == "failed"  # its verify could not write there
    assert sorted(p.name for p in home.iterdir()) == ["open.txt"]


@needs_bwrap
def test_programs_installed_under_tmp_stay_usable_inside(repo: Path, agentfile_cli: Run,
                                                        tmp_path: Path) -> None:
    """A venv or tool that lives under /tmp (CI's venv does) is on the PATH: inside, its
    `bin` and the libraries beside it are seen (read-only) through the private /tmp."""
    tool = tmp_path / "tool"
    (tool / "bin").mkdir(parents=True)
    (tool / "share").mkdir()
    (tool / "share" / "greeting").write_text("hello from the tool\n")
    hello = tool / "bin" / "hello-tool"
    hello.write_text(f"#!/bin/sh\ncat {tool}/share/greeting\n")
    hello.chmod(0o755)
    commit(repo, """options:
    isolation = none

greet:
    run = "hello-tool > greeting.txt"
    sandbox = true
""")
    path = f"{tool / 'bin'}{os.pathsep}{os.environ['PATH']}"
    result = agentfile_cli("build", cwd=repo, env={"PATH": path})
    assert result.code == 0, result.out + result.err
    assert (repo / "greeting.txt").read_text() == "hello from the tool\n"


@needs_bwrap
def test_stops_end_everything_inside_and_memory_is_measured(repo: Path,
                                                          agentfile_cli: Run) -> None:
    marker = f"sleep 120.{os.getpid() % 1000}{time.monotonic_ns() % 10**6:06d}"
    (repo / "job.sh").write_text(
        'case "$AGENTFILE_TARGET" in\n'
        f"slow) setsid {marker} & sleep 120;;\n"
        f"hog) exec {sys.executable} -c 'import time; x = bytearray(300 << 20); "
        "x[::4096] = bytes(len(x[::4096])); time.sleep(60)';;\n"
        "esac\n")
    commit(repo, """options:
    isolation = none
    sandbox = true

agent sh: command
    command = "sh job.sh"

slow:
    agent = sh
    prompt = "p"
    budget = 2s

hog:
    agent = sh
    prompt = "p"
    budget = 100MiB, 60s
""")
    result = agentfile_cli("build", "--keep-going", "-j2", cwd=repo)
    got = finished(repo)
    assert got["slow"]["status"] == "timeout", result.out + result.err
    assert got["hog"]["status"] == "oom", result.out + result.err
    assert _marked(marker) == []  # the daemon that left the agent's group ended with it


@needs_bwrap
@pytest.mark.parametrize("terminal", ["headless", "tmux"])
def test_ctrl_c_ends_everything_inside(repo: Path, terminal: str) -> None:
    # Sleeps of a length no other process on the machine uses: looked for afterwards.
    marker = f"sleep 120.{os.getpid() % 1000}{time.monotonic_ns() % 10**6:06d}"
    commit(repo, f"""options:
    sandbox = true
    isolation = none
    terminal = {terminal}

agent sh: command
    command = "setsid {marker} & {marker}"

wait:
    agent = sh
    prompt = "p"
""")
    proc = subprocess.Popen([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "NO_COLOR": "1"})
    deadline = time.monotonic() + 30
    while len(_marked(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_marked(marker)) == 2, "the agent's two sleeps did not start"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out.decode()
    assert _marked(marker) == []


def _marked(marker: str) -> list[psutil.Process]:
    """The sleeps of this marker (not the shells or bwraps whose command lines name it)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "sleep" and marker in " ".join(proc.info["cmdline"] or []) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


@needs_bwrap
def test_a_tmux_pane_runs_the_sandbox_too(repo: Path, agentfile_cli: Run, home: Path) -> None:
    commit(repo, f"""options:
    sandbox = true
    terminal = tmux

agent sh: command
    command = "echo mine > own.txt; echo x > {home}/escaped.txt; true"

w:
    agent = sh
    prompt = "go"
""")
    result = agentfile_cli("build", cwd=repo, env={"HOME": str(home)})
    assert result.code == 0, result.out + result.err
    assert (repo / "own.txt").read_text() == "mine\n"
    assert list(home.iterdir()) == []
    assert f"cannot create {home}/escaped.txt: Read-only file system" in log_of(repo, "w")


def test_the_build_refuses_without_bwrap(repo: Path, agentfile_cli: Run,
                                         tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("git", "sh"):
        found = shutil.which(name)
        assert found is not None
        (tools / name).symlink_to(found)
    commit(repo, 'x:\n    run = "touch made"\n    sandbox = true\n    isolation = none\n')
    result = agentfile_cli("build", cwd=repo, env={"PATH": str(tools)})
    assert result.code == 2, result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "apt-get install bubblewrap" in lines[0], result.err
    assert "for target x" in lines[0]
    assert not (repo / "made").exists() and not (repo / ".agentfile" / "runs").exists()
    checked = agentfile_cli("check", cwd=repo, env={"PATH": str(tools)})
    assert checked.code == 0 and "apt-get install bubblewrap" in checked.err


# -- the real agent CLIs inside the sandbox -------------------------------------------------


@needs_bwrap
def test_real_claude_code_works_inside_and_cannot_write_outside(
        repo: Path, agentfile_cli: Run, home: Path) -> None:
    claude = installed_cli("install_claude.sh")
    outside = home / "outside.txt"

    def write_in_workspace(body: dict[str, Any]) -> dict[str, Any]:
        found = json.dumps(body).split("orking directory: ", 1)[1].split("\\n", 1)[0]
        return tool_use("Write", {"file_path": f"{found}/hello.txt",
                                  "content": "hello from claude\n"})

    plan: list[Any] = [tool_use("Write", {"file_path": str(outside), "content": "escaped\n"}),
                       write_in_workspace, text("Created hello.txt.")]
    with AnthropicStandin(plan) as server:
        commit(repo, 'agent claude: claude\n    sandbox = true\n'
                     'hello:\n    agent = claude\n    prompt = "Create hello.txt"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "ANTHROPIC"))}
        env.update(server.claude_env(), HOME=str(home), AGENTFILE_CLAUDE=claude)
        env.pop("CI", None)
        result = agentfile_cli("build", cwd=repo, env=env)
        sent = json.dumps(server.main_requests)
    assert result.code == 0, result.out + result.err + log_of(repo, "hello")
    assert (repo / "hello.txt").read_text() == "hello from claude\n"
    assert not outside.exists()
    assert "read-only file system" in sent.lower()  # what the Write tool told the model
    assert list((home / ".claude" / "projects").glob("*/*.jsonl"))  # its session, kept
    assert "(sandboxed)" in log_of(repo, "hello")


@needs_bwrap
def test_real_codex_works_inside_and_a_refused_change_fails_the_attempt(
        repo: Path, agentfile_cli: Run, codex_binary: str, codex_home: Path) -> None:
    outside = codex_home / "outside.txt"
    script = [apply_patch_call(add_file_patch("hello.txt", "hello from codex\n")),
              apply_patch_call(add_file_patch(str(outside), "escaped\n")),
              reply("Created both.")]
    with OpenAIStandin(script) as server:
        commit(repo, 'agent gpt: codex\n    sandbox = true\n'
                     'hello:\n    agent = gpt\n    prompt = "Create hello.txt"\n'
                     '    isolation = none\n')
        result = agentfile_cli("build", cwd=repo,
                               env=codex_env(server, codex_binary, codex_home))
    assert result.code == 1, result.out + result.err
    assert not outside.exists()
    assert finished(repo)["hello"]["status"] == "failed"
    assert "Codex could not apply its change to " + str(outside) in result.out
    assert (codex_home / ".codex" / "sessions").is_dir()  # its own state, written inside
    assert (repo / "hello.txt").read_text() == "hello from codex\n"  # the change it could


@needs_bwrap
def test_real_codex_inside_the_sandbox_lands_its_work(repo: Path, agentfile_cli: Run,
                                                     codex_binary: str,
                                                     codex_home: Path) -> None:
    script = [apply_patch_call(add_file_patch("hello.txt", "hello from codex\n")),
              reply("Created hello.txt.")]
    with OpenAIStandin(script) as server:
        commit(repo, 'agent gpt: codex\n    sandbox = true\n'
                     'hello:\n    agent = gpt\n    prompt = "Create hello.txt"\n')
        result = agentfile_cli("build", cwd=repo,
                               env=codex_env(server, codex_binary, codex_home))
    assert result.code == 0, result.out + result.err
    assert (repo / "hello.txt").read_text() == "hello from codex\n"


def test_real_codex_with_its_own_sandbox_never_succeeds_without_its_work(
        repo: Path, agentfile_cli: Run, codex_binary: str, codex_home: Path) -> None:
    """`--sandbox workspace-write` in the agent's args: where the machine can host Codex's
    own sandbox, the file lands; where it cannot (gVisor, or a container with bwrap), the
    change fails and the target with it, saying which change: never `succeeded` without it."""
    script = [apply_patch_call(add_file_patch("hello.txt", "hello from codex\n")),
              reply("Created hello.txt.")]
    with OpenAIStandin(script) as server:
        commit(repo, 'agent gpt: codex\n    args = ["--sandbox", "workspace-write"]\n'
                     'hello:\n    agent = gpt\n    prompt = "Create hello.txt"\n'
                     '    isolation = none\n')
        result = agentfile_cli("build", cwd=repo,
                               env=codex_env(server, codex_binary, codex_home))
    status = finished(repo)["hello"]["status"]
    if (repo / "hello.txt").exists():
        assert status == "succeeded" and result.code == 0, result.out + result.err
    else:
        assert status == "failed" and result.code == 1, result.out + result.err
        assert "Codex could not apply its change to hello.txt" in result.out
        assert "Codex's own sandbox" in result.out

"""The command line as typed by a person: typos, -j alone, colour, attach inside tmux."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import Run, git, on_a_terminal

from agentfile.commands.history import tmux_argv

COLOUR = re.compile(rb"\x1b\[[0-9;]*(?:3[0-7]|38;[0-9;]+|9[0-7])m")


def commit(repo: Path, manifest: str) -> None:
    (repo / "Agentfile").write_text(manifest)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "manifest")


def test_a_mistyped_command_gets_did_you_mean(repo: Path, agentfile_cli: Run) -> None:
    result = agentfile_cli("biuld", cwd=repo)
    assert result.code == 2
    assert "agentfile: error: unknown command 'biuld'; did you mean 'build'?" in result.err
    assert "did you mean" not in agentfile_cli("frobnicate", cwd=repo).err
    dot = agentfile_cli("graph", "--format", "dto", cwd=repo)
    assert "did you mean 'dot'?" in dot.err


def test_a_mistyped_option_gets_its_command_s_usage(repo: Path, agentfile_cli: Run) -> None:
    commit(repo, 'a:\n    run = "true"\n')
    result = agentfile_cli("build", "--jbos", "2", cwd=repo)
    assert result.code == 2
    assert result.err.startswith("usage: agentfile build ")
    assert "unrecognized arguments: --jbos; did you mean '--jobs'" in result.err
    assert not (repo / ".agentfile").exists()  # nothing ran


def test_j_alone_means_no_limit_as_in_make(repo: Path, agentfile_cli: Run) -> None:
    commit(repo, "".join(f'{n}:\n    run = "true"\n' for n in "abcdefghi"))
    plan = agentfile_cli("plan", "-j", cwd=repo)
    assert plan.code == 0, plan.err
    assert "9 targets in 1 wave, -j9" in plan.out or "-j9" in plan.out.splitlines()[0]
    # A word after -j that is not a number is a target, as make reads it.
    built = agentfile_cli("build", "-j", "c", cwd=repo)
    assert built.code == 0, built.err
    assert "start      c" in built.out and "start      a" not in built.out
    assert "-j1" in built.out  # one target: one slot is all "no limit" needs
    assert agentfile_cli("build", "-j", "0", cwd=repo).code == 2  # an explicit 0 is not a limit


def _on_a_terminal(repo: Path, env: dict[str, str], *args: str) -> bytes:
    """`agentfile ARGS` with a terminal as its output; everything it wrote."""
    seen, code = on_a_terminal(repo, env, *args)
    assert code == 0, seen.decode(errors="replace")
    return seen


def test_no_color_drops_colour_but_keeps_the_live_board(repo: Path) -> None:
    commit(repo, 'slow:\n    run = "echo halfway; sleep 1.5"\n')
    plain = {k: v for k, v in os.environ.items()
             if k not in ("NO_COLOR", "CI", "FORCE_COLOR")}
    coloured = _on_a_terminal(repo, plain, "build", "-B")
    assert b"0/1 done" in coloured and COLOUR.search(coloured)
    uncoloured = _on_a_terminal(repo, {**plain, "NO_COLOR": "1"}, "build", "-B")
    assert b"0/1 done" in uncoloured  # the board, live
    assert not COLOUR.search(uncoloured)


def test_force_color_colours_a_pipe(repo: Path, agentfile_cli: Run) -> None:
    commit(repo, 'a:\n    run = "true"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CI")}
    piped = subprocess.run([sys.executable, "-m", "agentfile", "build"], cwd=repo,
                           capture_output=True, env={**env, "FORCE_COLOR": "1"})
    assert piped.returncode == 0 and COLOUR.search(piped.stdout), piped.stdout
    plain = subprocess.run([sys.executable, "-m", "agentfile", "build", "-B"], cwd=repo,
                           capture_output=True, env=env)
    assert plain.returncode == 0 and not COLOUR.search(plain.stdout)
    assert b"succeeded" in plain.stdout


def test_attach_goes_inside_tmux_by_switching() -> None:
    assert tmux_argv("=s:@2", inside_tmux=True) == ["tmux", "switch-client", "-t", "=s:@2"]
    assert tmux_argv("=s", inside_tmux=False) == ["tmux", "attach-session", "-t", "=s"]


@pytest.mark.skipif(not shutil.which("tmux") or not shutil.which("script"),
                    reason="needs tmux and script(1)")
def test_attach_target_switches_a_tmux_client_to_its_window(repo: Path,
                                                           agentfile_cli: Run) -> None:
    """Run inside a tmux pane that a real client (script's terminal) shows, `attach TARGET`
    moves that client to the build's session, at the target's window."""
    marker = repo / "go"
    commit(repo, f'first:\n    run = "while [ ! -e {marker} ]; do sleep 0.1; done"\n'
                 '    terminal = tmux\n'
                 f'sec.ond:\n    run = "while [ ! -e {marker} ]; do sleep 0.1; done"\n'
                 '    terminal = tmux\n')
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "-j2"], cwd=repo,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "NO_COLOR": "1"})
    mine = f"afclient-{uuid.uuid4().hex[:8]}"
    client: subprocess.Popen[bytes] | None = None
    try:
        where = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = agentfile_cli("attach", "sec.ond", cwd=repo)
            if result.code == 0:
                where = result.out.strip()
                break
            time.sleep(0.2)
        assert re.fullmatch(r"=agentfile-repo-[0-9a-f-]+:@\d+", where), where
        missing = agentfile_cli("attach", "nope", cwd=repo)
        assert missing.code == 2 and "first, sec.ond" in missing.err
        subprocess.run(["tmux", "new-session", "-d", "-s", mine, "-c", str(repo), "sh"],
                       check=True)
        client = subprocess.Popen(["script", "-qc", f"tmux attach-session -t ={mine}",
                                   "/dev/null"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={k: v for k, v in os.environ.items() if k != "TMUX"})
        clients = ""
        deadline = time.monotonic() + 10
        while mine not in clients and time.monotonic() < deadline:
            clients = subprocess.run(["tmux", "list-clients", "-F", "#{client_session}"],
                                     capture_output=True, text=True).stdout
            time.sleep(0.1)
        assert mine in clients
        subprocess.run(["tmux", "send-keys", "-t", f"={mine}:",
                        f"{sys.executable} -m agentfile attach sec.ond", "Enter"], check=True)
        session = where.split(":")[0].lstrip("=")
        shown = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            shown = subprocess.run(
                ["tmux", "list-clients", "-F", "#{client_session} #{window_name}"],
                capture_output=True, text=True).stdout
            if f"{session} sec.ond" in shown:
                break
            time.sleep(0.1)
        assert f"{session} sec.ond" in shown
    finally:
        marker.touch()
        if client is not None:
            client.kill()
            client.wait()
        subprocess.run(["tmux", "kill-session", "-t", f"={mine}"], capture_output=True)
        out, _ = build.communicate(timeout=60)
    assert build.returncode == 0, out.decode()


def test_every_missing_agent_cli_is_named_at_once(repo: Path, agentfile_cli: Run) -> None:
    commit(repo, "".join(f'{name}:\n    agent = {provider}\n    prompt = "p"\n'
                         for name, provider in (("g1", "gemini"), ("g2", "gemini"),
                                                ("ai", "aider"))))
    env = {"AGENTFILE_GEMINI": str(repo / "no-gemini"), "AGENTFILE_AIDER": str(repo / "no-aider")}
    built = agentfile_cli("build", cwd=repo, env=env)
    assert built.code == 2
    assert "AGENTFILE_GEMINI=" in built.err and "(for targets g1, g2)" in built.err
    assert "AGENTFILE_AIDER=" in built.err and "(for target ai)" in built.err
    checked = agentfile_cli("check", cwd=repo, env=env)
    assert checked.code == 0 and "ok: 3 targets" in checked.out
    warnings = [line for line in checked.err.splitlines() if line.startswith("agentfile: warning")]
    assert len(warnings) == 2 and "g1, g2" in warnings[0] and "ai" in warnings[1]
    as_json = agentfile_cli("check", "--json", cwd=repo, env=env)
    assert as_json.code == 0 and len(json.loads(as_json.out)["warnings"]) == 2

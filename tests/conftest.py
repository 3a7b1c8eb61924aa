"""Shared fixtures: temporary git repositories and a runner for the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from standin.openai import OpenAIStandin, codex_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session", autouse=True)
def private_tmux_server() -> Iterator[Path]:
    """The whole test session's tmux sessions on a tmux server of its own (TMUX_TMPDIR), so
    that counting sessions never sees another run's, and ending them never touches a
    person's. Only that server is killed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="agentfile-tests-tmux-"))
    saved = {key: os.environ.get(key) for key in ("TMUX_TMPDIR", "TMUX", "TMUX_PANE")}
    os.environ["TMUX_TMPDIR"] = str(folder)
    os.environ.pop("TMUX", None)  # inside tmux, $TMUX would name the person's server
    os.environ.pop("TMUX_PANE", None)
    try:
        yield folder
    finally:
        if shutil.which("tmux") is not None:
            socket = folder / f"tmux-{os.getuid()}" / "default"
            subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True,
                           check=False)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Result:
    code: int
    out: str
    err: str


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty git repository with one commit."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "test")
    (path / "README.md").write_text("test repo\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


Run = Callable[..., Result]


@pytest.fixture(autouse=True)
def agentfile_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own per-user ledger: tests never write to the real one."""
    home = tmp_path / "agentfile-home"
    monkeypatch.setenv("AGENTFILE_HOME", str(home))
    return home


@pytest.fixture
def agentfile_cli() -> Run:
    """Runs the installed `agentfile` command as a user would, in a subprocess."""

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 60) -> Result:
        full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "agentfile", *args], cwd=cwd,
                              capture_output=True, text=True, env=full_env, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def last_run(repo: Path) -> Path:
    """The newest run's directory, by the state's start times (run ids of one second do not
    sort by time, nor do folders' modification times)."""
    db = sqlite3.connect(repo / ".agentfile" / "state.sqlite")
    try:
        (run_id,) = db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()
    finally:
        db.close()
    return repo / ".agentfile" / "runs" / str(run_id)


def events(repo: Path) -> list[dict[str, Any]]:
    """The newest run's events."""
    lines = (last_run(repo) / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def poll_status(run: Run, repo: Path, key: str, timeout: float = 15) -> dict[str, Any]:
    """`agentfile status --json` until its `key` is not empty (a build's targets running, or
    waiting), or `timeout` passes: the last snapshot."""
    deadline = time.monotonic() + timeout
    snapshot: dict[str, Any] = {}
    while time.monotonic() < deadline:
        snapshot = json.loads(run("status", "--json", cwd=repo).out)
        if snapshot.get(key):
            break
        time.sleep(0.1)
    return snapshot


def installed_cli(script: str) -> str:
    """Install a real agent CLI with tests/standin/SCRIPT (idempotent, cached outside the
    checkout; .ci/run runs them first) and return its path; skip if npm cannot."""
    found = subprocess.run(["bash", str(ROOT / "tests" / "standin" / script)],
                           capture_output=True, text=True)
    path = found.stdout.strip().splitlines()[-1] if found.stdout.strip() else ""
    if found.returncode != 0 or not Path(path).is_file():
        pytest.skip(f"{script} could not install the CLI: {found.stderr[-300:]}")
    return path


def wait_for_descendants(pid: int, word: str, count: int = 1, timeout: float = 20) -> None:
    """Wait until `count` descendants of `pid` have `word` in their command line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = 0
        for child in psutil.Process(pid).children(recursive=True):
            try:
                found += word in " ".join(child.cmdline())
            except psutil.Error:
                continue
        if found >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {count} '{word}' processes under {pid} within {timeout}s")


def sigkill_build(build: subprocess.Popen[bytes]) -> None:
    """SIGKILL a build, then what it left running: a killed agentfile stops nothing, and no
    one else will."""
    left = psutil.Process(build.pid).children(recursive=True)
    build.send_signal(signal.SIGKILL)
    build.wait()
    for child in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def patched_agentfile(cwd: Path, patch: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`agentfile ARGS` in a child process once `patch` (Python source) has run there: a
    fault put exactly where a test needs it, in a real process."""
    code = f"{patch}\nfrom agentfile.cli import main\nraise SystemExit(main({list(args)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})


def on_a_terminal(cwd: Path, env: dict[str, str], *args: str,
                  timeout: float = 60) -> tuple[bytes, int]:
    """`agentfile ARGS` with a pseudo-terminal as its output (the live board) and `env` as
    its whole environment (TERM and COLUMNS added): everything it wrote, and its exit code."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agentfile", *args], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary,
                            env={**env, "TERM": "xterm", "COLUMNS": "120"})
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([main], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):  # EIO once the build has closed it
                    seen += os.read(main, 65536)
    finally:
        proc.kill()
        proc.wait()
        os.close(main)
    return seen, proc.returncode


def interactive_environment() -> dict[str, str]:
    """This environment as a person's terminal has it: no NO_COLOR, CI or FORCE_COLOR."""
    return {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CI", "FORCE_COLOR")}


# -- the real Codex CLI against the stand-in Responses API (tests/standin/openai.py) ----------


@pytest.fixture(scope="module")
def codex_binary() -> str:
    return installed_cli("install_codex.sh")


@pytest.fixture
def codex_home(tmp_path: Path) -> Path:
    home = tmp_path / "codex-home"
    (home / ".codex").mkdir(parents=True)
    return home


def codex_env(server: OpenAIStandin, binary: str, home: Path) -> dict[str, str]:
    """What `agentfile build` needs to run the real Codex against `server`, in `home`."""
    (home / ".codex" / "config.toml").write_text(codex_config(server.base_url))
    return {"HOME": str(home), "CODEX_HOME": str(home / ".codex"),
            "STANDIN_API_KEY": "sk-standin", "AGENTFILE_CODEX": binary}

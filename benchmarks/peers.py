"""What the benchmarks that race agentfile against other tools share: how to start agentfile,
and how one timed run of a command is taken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def agentfile_command() -> list[str]:
    """The agentfile of this interpreter's environment, else the one on PATH."""
    script = Path(sys.executable).parent / "agentfile"
    if script.exists():
        return [str(script)]
    found = shutil.which("agentfile")
    return [found] if found else [sys.executable, "-m", "agentfile"]


def timed(command: list[str], cwd: Path, log: Path) -> tuple[float, int]:
    """Wall seconds and exit code of one run, its output kept in `log` (no live board)."""
    env = dict(os.environ, NO_COLOR="1")
    with log.open("wb") as out:
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    return seconds, done.returncode

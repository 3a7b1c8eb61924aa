"""What the benchmarks that race agentfile against other tools share: how to start agentfile,
how one timed run of a command is taken, and what is kept of it."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

# Compiled bytecode for the Python tools' modules (agentfile, doit), kept between runs.
PYCACHE = Path(tempfile.gettempdir()) / "agentfile-bench-pycache"


def agentfile_command() -> list[str]:
    """The agentfile of this interpreter's environment, else the one on PATH."""
    script = Path(sys.executable).parent / "agentfile"
    if script.exists():
        return [str(script)]
    found = shutil.which("agentfile")
    return [found] if found else [sys.executable, "-m", "agentfile"]


def tool_env() -> dict[str, str]:
    """The environment every tool runs in: no live board, and Python's bytecode cache on, as
    after a normal install (pip compiles a wheel's modules when it installs them). A
    development machine may set PYTHONDONTWRITEBYTECODE, which makes a Python tool compile
    its sources at every start (about 0.08 s of agentfile's start-up here): the cache goes to
    PYCACHE instead of the source tree."""
    env = dict(os.environ, NO_COLOR="1", PYTHONPYCACHEPREFIX=str(PYCACHE))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class Timed(NamedTuple):
    seconds: float  # wall
    code: int  # exit code
    cpu_s: float  # CPU time (user + system) of the tool and of every process it ran


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(command: list[str], cwd: Path, log: Path) -> Timed:
    """One run, its output kept in `log` (no live board). Its CPU time counts the tool and
    every descendant reaped by it or by us (what the kernel adds to RUSAGE_CHILDREN)."""
    env = tool_env()
    with log.open("wb") as out:
        cpu_before = _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    return Timed(seconds, done.returncode, _children_cpu() - cpu_before)


@dataclass
class Run:
    """One measured run of one tool."""

    tool: str
    round: int
    seconds: float
    ok: bool
    note: str = ""
    internal: float | None = None  # agentfile: the build's own duration_s (summary.json)
    order: str = ""  # agentfile: its targets by start time, where a benchmark shows it
    cpu_s: float | None = None  # CPU time of the tool and everything it ran

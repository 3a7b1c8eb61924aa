"""The floor under dispatch.py: how fast can any Python process start 2,000 short commands?

    python benchmarks/spawnfloor.py [--count 2000] [--jobs 2] [--rounds 3]

Alternately, ROUNDS times, each in a fresh process:

    python loop     a bare Python loop that does nothing but start `true` with os.posix_spawn
                    (in its own session, output into a pipe, as agentfile starts a target) and
                    reap it, JOBS at a time;
    + imports       the same loop in a process that first imported what `agentfile build`
                    imports (pydantic models, sqlite3, psutil, ...) and nothing else;
    make            GNU make running COUNT independent phony targets whose recipe is `@true`,
                    with -jJOBS.

No logs, events, state or fingerprints on the Python side: whatever an executor written in
Python adds comes on top of these loops' time (and of its start-up). The second loop shows
what the process itself costs each spawn: on the machine of the README, a process holding
agentfile's imports waits longer for each posix_spawn than a bare interpreter does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENTFILE_IMPORTS = "import agentfile.commands.build, agentfile.scheduler"


def bare_loop(count: int, jobs: int) -> float:
    """Seconds to posix_spawn and reap `count` `true`s, `jobs` running at a time."""
    program = shutil.which("true")
    assert program is not None
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    started = time.perf_counter()
    running, done, launched = 0, 0, 0
    while done < count:
        while launched < count and running < jobs:
            read, write = os.pipe()
            os.posix_spawn(program, [program], os.environ, setsid=True,
                           file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                         (os.POSIX_SPAWN_DUP2, write, 1),
                                         (os.POSIX_SPAWN_DUP2, write, 2)])
            os.close(write)
            os.close(read)
            running, launched = running + 1, launched + 1
        os.wait()
        running, done = running - 1, done + 1
    seconds = time.perf_counter() - started
    os.close(devnull)
    return seconds


def loop_in_fresh_process(count: int, jobs: int, *, imports: bool) -> float:
    """`bare_loop` in a new interpreter (optionally after agentfile's imports): its seconds."""
    code = (f"{AGENTFILE_IMPORTS if imports else 'pass'}\n"
            "from benchmarks.spawnfloor import bare_loop\n"
            f"print(bare_loop({count}, {jobs}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env=env)
    return float(done.stdout.strip().splitlines()[-1])


def make_run(makefile: Path, jobs: int) -> float:
    started = time.perf_counter()
    subprocess.run(["make", "-s", f"-j{jobs}", "-f", str(makefile)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a bare Python spawn loop against make")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("make") is None:
        print("GNU make not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="agentfile-spawnfloor-") as folder:
        makefile = Path(folder) / "Makefile"
        names = [f"t{i}" for i in range(args.count)]
        makefile.write_text("all: " + " ".join(names) + "\n" + "".join(
            f"{name}:\n\t@true\n.PHONY: {name}\n" for name in names))
        loops, heavy, makes = [], [], []
        for round_ in range(1, args.rounds + 1):
            loops.append(loop_in_fresh_process(args.count, args.jobs, imports=False))
            heavy.append(loop_in_fresh_process(args.count, args.jobs, imports=True))
            makes.append(make_run(makefile, args.jobs))
            print(f"  round {round_}  python loop {loops[-1]:.3f} s   + imports "
                  f"{heavy[-1]:.3f} s   make {makes[-1]:.3f} s", flush=True)
    loop, loaded, make = (statistics.median(x) for x in (loops, heavy, makes))
    print(f"{args.count} x `true`, -j{args.jobs}, median of {args.rounds}: "
          f"python loop {loop:.3f} s ({loop / make:.2f}x make), with agentfile's imports "
          f"{loaded:.3f} s ({loaded / make:.2f}x), make {make:.3f} s")
    print(f"1.5x make leaves {1.5 * make - loaded:.3f} s for an executor's start-up and its "
          "bookkeeping on top of the loop with agentfile's imports")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The floor under dispatch.py: how fast can any Python process start 2,000 short commands?

    python benchmarks/spawnfloor.py [--count 2000] [--jobs 2] [--rounds 3]

Alternately, ROUNDS times, each in a fresh process:

    python loop     a bare Python loop that does nothing but start `true` with os.posix_spawn
                    (in its own session, output into a pipe, as agentfile starts a target) and
                    reap it, JOBS at a time;
    + imports       the same loop in a process that first imported what `agentfile build`
                    imports (pydantic models, sqlite3, psutil, ...) and nothing else;
    least executor  the least an executor that keeps the issue's promises about processes
                    can do, timed as a whole process like `agentfile build` (interpreter
                    start-up and agentfile's imports included): per target a log file with a
                    header line, a pipe for the output copied into it as it comes, the child
                    in its own session, its exit seen through a pidfd, one poll(2) for all;
                    once in a bare interpreter, once after agentfile's imports;
    make            GNU make running COUNT independent phony targets whose recipe is `@true`,
                    with -jJOBS.

No events, state, fingerprints, budgets or dependencies on the Python side: whatever agentfile
adds comes on top of these loops' time. The first two loops are timed inside their process
(no start-up); the second shows what the process itself costs each spawn: on the machine of
the README, a process holding agentfile's imports waits longer for each posix_spawn than a
bare interpreter does. The third is the floor under `dispatch.py`'s agentfile figure: if it
is above 1.5x make, no executor written in Python with agentfile's dependencies can meet the
dispatch goal on this machine.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENTFILE_IMPORTS = "import agentfile.commands.build, agentfile.run.scheduler"


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


def least_executor(count: int, jobs: int, folder: str) -> None:
    """Run `count` `true`s, `jobs` at a time, as the least executor does (see the module's
    docstring): each with its own log in `folder`, its output copied there as it comes."""
    program = shutil.which("true")
    assert program is not None
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    env = dict(os.environ)
    poller = select.poll()
    open_fds: dict[int, list[int]] = {}  # pipe or pidfd -> [pid, pipe, pidfd, log, left]
    launched = done = 0
    while done < count:
        while launched < count and launched - done < jobs:
            name = f"t{launched}"
            log = os.open(os.path.join(folder, f"{name}.log"),
                          os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_CLOEXEC, 0o644)
            os.write(log, f"# {name}: {program}\n".encode())
            read, write = os.pipe()
            pid = os.posix_spawn(program, [program], env, setsid=True,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                               (os.POSIX_SPAWN_DUP2, write, 1),
                                               (os.POSIX_SPAWN_DUP2, write, 2)])
            os.close(write)
            os.set_blocking(read, False)
            pidfd = os.pidfd_open(pid)
            child = [pid, read, pidfd, log, 2]
            for fd in (read, pidfd):
                open_fds[fd] = child
                poller.register(fd, select.POLLIN)
            launched += 1
        for fd, _ in poller.poll():
            child = open_fds[fd]
            if fd == child[1]:
                data = os.read(fd, 65536)
                if data:
                    os.write(child[3], data)
                    continue
            else:
                os.waitpid(child[0], 0)
            poller.unregister(fd)
            del open_fds[fd]
            os.close(fd)
            child[4] -= 1
            if not child[4]:
                os.close(child[3])
                done += 1
    os.close(devnull)


def least_executor_process(count: int, jobs: int, folder: Path, *, imports: bool) -> float:
    """Wall seconds of a whole new interpreter that (optionally) imports what `agentfile
    build` imports and runs `least_executor`, timed from outside as dispatch.py times
    `agentfile build`."""
    folder.mkdir()
    code = (f"{AGENTFILE_IMPORTS if imports else 'pass'}\n"
            "from benchmarks.spawnfloor import least_executor\n"
            f"least_executor({count}, {jobs}, {str(folder)!r})")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())
    seconds = time.perf_counter() - started
    logs = len(os.listdir(folder))
    assert logs == count, f"{logs} logs for {count} targets"
    return seconds


def _env() -> dict[str, str]:
    """This process's environment, with the repository importable and bytecode cached (as
    after a normal install)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def loop_in_fresh_process(count: int, jobs: int, *, imports: bool) -> float:
    """`bare_loop` in a new interpreter (optionally after agentfile's imports): its seconds."""
    code = (f"{AGENTFILE_IMPORTS if imports else 'pass'}\n"
            "from benchmarks.spawnfloor import bare_loop\n"
            f"print(bare_loop({count}, {jobs}))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env=_env())
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
        loops: list[float] = []
        heavy: list[float] = []
        lean: list[float] = []
        least: list[float] = []
        makes: list[float] = []
        # Bytecode cached first, as after a normal install.
        least_executor_process(10, args.jobs, Path(folder) / "warm", imports=True)
        for round_ in range(1, args.rounds + 1):
            loops.append(loop_in_fresh_process(args.count, args.jobs, imports=False))
            heavy.append(loop_in_fresh_process(args.count, args.jobs, imports=True))
            lean.append(least_executor_process(args.count, args.jobs,
                                               Path(folder) / f"lean{round_}", imports=False))
            least.append(least_executor_process(args.count, args.jobs,
                                                Path(folder) / f"logs{round_}", imports=True))
            makes.append(make_run(makefile, args.jobs))
            print(f"  round {round_}  python loop {loops[-1]:.3f} s   + imports "
                  f"{heavy[-1]:.3f} s   least executor {lean[-1]:.3f} s   + imports "
                  f"{least[-1]:.3f} s   make {makes[-1]:.3f} s", flush=True)
    loop, loaded, bare, floor, make = (statistics.median(x)
                                       for x in (loops, heavy, lean, least, makes))
    print(f"{args.count} x `true`, -j{args.jobs}, median of {args.rounds}: "
          f"python loop {loop:.3f} s ({loop / make:.2f}x make), with agentfile's imports "
          f"{loaded:.3f} s ({loaded / make:.2f}x), make {make:.3f} s")
    print(f"the least executor as a whole process: {bare:.3f} s ({bare / make:.2f}x make) "
          "in a bare interpreter")
    print(f"the least executor as a whole process with agentfile's imports: {floor:.3f} s "
          f"({floor / make:.2f}x make): "
          + ("above 1.5x make, so no executor written in Python with agentfile's "
             "dependencies can meet the dispatch goal here" if floor > 1.5 * make else
             f"1.5x make leaves {1.5 * make - floor:.3f} s for events, state, "
             "fingerprints and everything else agentfile does per target"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What `sandbox = true` costs a target: the same build with and without the sandbox.

    python benchmarks/sandbox.py [--count 40] [--jobs 2] [--rounds 3]

Alternately, ROUNDS times: `agentfile build -jJOBS` of COUNT command-agent targets whose
command is `true`, in a worktree each (the default of agent targets) and in the checkout
(`isolation = none`), with `options.sandbox` true and false; and, as the floor, COUNT runs of
`true` under the very bwrap command line a target gets against COUNT plain `true`s, one at a
time. Prints the median wall of each and the sandbox's cost per target, against the goal that
it stays small beside what an agent costs (seconds per turn).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentfile.isolation.sandbox import Sandbox, why_not


def repository(folder: Path, count: int, isolation: str, sandbox: bool) -> Path:
    repo = folder / f"{isolation}-{'sandbox' if sandbox else 'open'}"
    repo.mkdir()
    targets = "".join(f't{i}:\n    agent = sh\n    prompt = "p"\n' for i in range(count))
    (repo / "Agentfile").write_text(
        f"options:\n    isolation = {isolation}\n    sandbox = {str(sandbox).lower()}\n"
        f'agent sh: command\n    command = "true"\n{targets}')
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def build(repo: Path, jobs: int) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "agentfile", "build", "-B", f"-j{jobs}"],
                          cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1"})
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"build failed in {repo}:\n{done.stdout}{done.stderr}")
    return took


def floor(count: int, folder: Path, sandboxed: bool) -> float:
    argv = ["true"]
    if sandboxed:
        argv = Sandbox(folder).wrap(argv, cwd=folder, writable=[folder])
    began = time.perf_counter()
    for _ in range(count):
        subprocess.run(argv, check=True, cwd=folder)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if why_not() is not None:
        raise SystemExit(f"no sandbox here: {why_not()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        repos = {(iso, box): repository(folder, args.count, iso, box)
                 for iso in ("worktree", "none") for box in (False, True)}
        walls: dict[object, list[float]] = {key: [] for key in [*repos, "bare", "bwrap"]}
        for _ in range(args.rounds):
            for key, repo in repos.items():
                walls[key].append(build(repo, args.jobs))
            walls["bare"].append(floor(args.count, folder, False))
            walls["bwrap"].append(floor(args.count, folder, True))
    median = {key: statistics.median(values) for key, values in walls.items()}
    n = args.count
    for iso in ("worktree", "none"):
        open_, boxed = median[(iso, False)], median[(iso, True)]
        print(f"{iso:>8}: {n} targets -j{args.jobs}: open {open_:.2f}s, sandboxed "
              f"{boxed:.2f}s ({boxed / open_:.2f}x), {(boxed - open_) / n * 1000:+.1f} ms "
              "per target")
    bare, boxed = median["bare"], median["bwrap"]
    print(f"   floor: {n} x true one at a time: plain {bare / n * 1000:.1f} ms, under bwrap "
          f"{boxed / n * 1000:.1f} ms each ({boxed / bare:.1f}x)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

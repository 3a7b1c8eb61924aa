"""What running a worktree target on a Ray cluster costs, against running it here.

    python benchmarks/ray.py [--targets 20] [--jobs 4] [--rounds 2]

It starts a real local Ray cluster (a head and two worker nodes of 2 CPUs each, as
tests/raycluster.py does for the tests; stopped at the end), makes a repository with
`--targets` independent agent targets in worktrees (a command agent that writes one file and
its usage: the agent costs nothing, so what is measured is agentfile's own work per target),
and builds them `-B` with `--executor local` and with `--executor ray`, alternating for
`--rounds` rounds after one warm-up build of each. Both run `--jobs` targets at once (the
cluster has as many CPUs). It prints each build's wall time, the medians, the time per target
(wall x jobs / targets: a slot's time per target) and the ratio ray / local.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from raycluster import LocalCluster

AGENT = """\
#!/bin/sh
echo "$AGENTFILE_TARGET" > "out-$AGENTFILE_TARGET.txt"
echo '{"cost_usd": 0.0, "input_tokens": 1, "output_tokens": 1}' > "$AGENTFILE_USAGE_FILE"
"""


def make_repository(root: Path, targets: int) -> None:
    root.mkdir(parents=True)
    (root / "agent.sh").write_text(AGENT)
    (root / "agent.sh").chmod(0o755)
    (root / "Agentfile").write_text(
        'agent a: command\n    command = "./agent.sh"\n' + "".join(
            f't{i:02d}:\n    agent = a\n    prompt = "work {i}"\n' for i in range(targets)))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=bench", "-c", "user.email=bench@localhost",
                  "commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=root, check=True)


def build(root: Path, executor: str, jobs: int, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "agentfile", "build", "-B", f"-j{jobs}",
                           "--executor", executor], cwd=root, env=env,
                          capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the {executor} build failed:\n{done.stdout}\n{done.stderr}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentfile-ray-bench-") as scratch:
        root = Path(scratch) / "repo"
        make_repository(root, args.targets)
        started = time.perf_counter()
        cluster = LocalCluster(Path(scratch) / "cluster", workers=2, cpus=args.jobs // 2)
        try:
            cluster.start()
            print(f"cluster: a head and 2 worker nodes, started in "
                  f"{time.perf_counter() - started:.1f}s")
            env = {**os.environ, **cluster.environment, "NO_COLOR": "1"}
            times: dict[str, list[float]] = {"local": [], "ray": []}
            for executor in times:  # warm-up: caches, the nodes' workers and clones
                build(root, executor, args.jobs, env)
            for number in range(args.rounds):
                order = ("local", "ray") if number % 2 == 0 else ("ray", "local")
                for executor in order:
                    times[executor].append(build(root, executor, args.jobs, env))
                    print(f"round {number + 1}: {executor:5} {times[executor][-1]:.2f}s")
        finally:
            cluster.stop()
    median = {name: statistics.median(values) for name, values in times.items()}
    per_target = {name: value * args.jobs / args.targets for name, value in median.items()}
    for name in ("local", "ray"):
        print(f"{name:5}: {args.targets} worktree agents -j{args.jobs} in {median[name]:.2f}s "
              f"(median), {per_target[name]:.2f}s per target")
    print(f"ray / local per target: {per_target['ray'] / per_target['local']:.1f}x "
          f"(+{per_target['ray'] - per_target['local']:.2f}s per target on the cluster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

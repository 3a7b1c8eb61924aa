"""`worktrees = reuse` against fresh worktrees, in whole builds (`worktree.py --reuse`).

One generated repository of `files` files (worktree.py's `generate`, packed), `.gitignore`
naming `node_modules/`. Each build has `targets` worktree targets at `-j jobs`, each writing
one file of its own after `setup = "mkdir -p node_modules && echo x >> node_modules/.setups"`
(`setup_inputs` the `.gitignore`: unchanged, so a pooled worktree's setup never has to run
again). Four sides, alternating in each round (the order turns each round):

- agentfile, `worktrees = reuse`: the pool is made by an untimed warm-up build first, so every
  timed build finds it warm, as every build after the first does;
- agentfile, `worktrees = fresh` (the default): a new worktree per target, setup in each;
- plain git, fresh: a bash script with `jobs` loops, each per target `git worktree add -b`,
  the setup, the file, `git add -A` + `git commit`, `git worktree remove --force`;
- plain git, reused: the same with one worktree per loop, made once before the timing, reset
  per target with `git checkout -f -B` + `git clean -ffdq` and detached after.

The plain scripts merge nothing; agentfile merges each target's branch into the build's
integration branch and lands it. Between builds the repository goes back to its first
commit and every branch a build left goes, so each build does the same work.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.peers import agentfile_command, timed
from benchmarks.worktree import generate, run_git

GOAL = 0.3
SETUP = "mkdir -p node_modules && echo x >> node_modules/.setups"

PLAIN = r"""#!/bin/bash
# {title}: {targets} targets in {jobs} loops, each one's worktree {how}.
set -eu
cd "$1"
base=$(git rev-parse HEAD)
slot() {{
    k=$1
    wt="$2/slot$k"
    for ((i = k; i < {targets}; i += {jobs})); do
        {per_target}
        (cd "$wt" && {setup} && echo "$i" > "out/t$i.txt" && git add -A \
            && git -c user.name=bench -c user.email=bench@localhost commit -q --no-verify -m "t$i")
        {after}
    done
}}
for ((k = 0; k < {jobs}; k++)); do slot $k "$2" & done
wait
"""
FRESH_STEP = 'wt="$2/t$i"; git worktree add -q -b "plain/t$i" "$wt" "$base"'
FRESH_AFTER = 'git worktree remove --force "$wt"'
REUSED_STEP = ('git -C "$wt" checkout -q -f -B "plain/t$i" "$base" && '
               'git -C "$wt" clean -q -ffd')
REUSED_AFTER = 'git -C "$wt" checkout -q --detach'


def manifest(targets: int, jobs: int, mode: str) -> str:
    lines = [f"options:\n    worktrees = {mode}\n    jobs = {jobs}\n"
             f"    setup = \"{SETUP}\"\n    setup_inputs = [\".gitignore\"]\n"]
    for i in range(targets):
        lines.append(f"t{i}:\n    run = \"echo {i} > out/t{i}.txt\"\n"
                     "    isolation = worktree\n    always = true\n")
    return "".join(lines)


def plain_script(targets: int, jobs: int, reused: bool) -> str:
    return PLAIN.format(
        title="plain git, reused worktrees" if reused else "plain git, fresh worktrees",
        targets=targets, jobs=jobs, setup=SETUP,
        how="made once and reset per target" if reused else "made and removed per target",
        per_target=REUSED_STEP if reused else FRESH_STEP,
        after=REUSED_AFTER if reused else FRESH_AFTER)


def restore(root: Path, base: str) -> None:
    """The repository as generated: its first commit, no branch a build or script left."""
    run_git(root, "checkout", "-q", "-f", "main")
    run_git(root, "reset", "-q", "--hard", base)
    branches = run_git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads/")
    gone = [b for b in branches.split() if b != "main"]
    if gone:
        run_git(root, "branch", "-q", "-D", *gone)


def build(root: Path, file: str, log: Path) -> float:
    done = timed([*agentfile_command(), "build", "-f", file], root, log)
    if done.code != 0:
        raise SystemExit(f"the build failed: see {log}")
    return done.seconds


def plain(root: Path, script: Path, worktrees: Path, log: Path) -> float:
    done = timed(["bash", str(script), str(root), str(worktrees)], root, log)
    if done.code != 0:
        raise SystemExit(f"the plain-git script failed: see {log}")
    return done.seconds


def compare(*, files: int, dirs: int, targets: int, jobs: int, rounds: int,
            where: Path | None) -> int:
    temporary = None if where else tempfile.TemporaryDirectory(prefix="agentfile-reuse-")
    top = (where or Path(temporary.name if temporary else ".")).resolve()
    root, logs, plain_trees = top / "repo", top / "logs", top / "plain"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        generate(root, files, dirs)
        (root / ".gitignore").write_text("node_modules/\n")
        (root / "out").mkdir()
        (root / "out" / ".keep").write_text("")
        for mode in ("reuse", "fresh"):
            (root / f"Agentfile.{mode}").write_text(manifest(targets, jobs, mode))
        run_git(root, "add", "-A")
        run_git(root, "commit", "-q", "--no-verify", "-m", "benchmark manifests")
        base = run_git(root, "rev-parse", "HEAD").strip()
        scripts = {}
        for reused in (False, True):
            scripts[reused] = top / f"plain-{'reused' if reused else 'fresh'}.sh"
            scripts[reused].write_text(plain_script(targets, jobs, reused))
        for k in range(jobs):  # the plain reused side's worktrees, made once
            run_git(root, "worktree", "add", "-q", "--detach", str(plain_trees / f"slot{k}"),
                    base)
        print(f"{files} files in {dirs} directories at {root}; {targets} worktree targets per"
              f" build at -j{jobs}; {rounds} rounds; git {run_git(root, 'version').split()[-1]};"
              f" load {os.getloadavg()[0]:.2f}")
        warm = build(root, "Agentfile.reuse", logs / "warm-up.log")  # makes the pool
        restore(root, base)
        print(f"warm-up build (makes the pool): {warm:.2f} s")
        sides = {
            "agentfile reuse": lambda n: build(root, "Agentfile.reuse", logs / f"reuse-{n}.log"),
            "agentfile fresh": lambda n: build(root, "Agentfile.fresh", logs / f"fresh-{n}.log"),
            "plain git fresh": lambda n: plain(root, scripts[False], plain_trees,
                                               logs / f"plain-fresh-{n}.log"),
            "plain git reused": lambda n: plain(root, scripts[True], plain_trees,
                                                logs / f"plain-reused-{n}.log"),
        }
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        names = list(sides)
        for number in range(rounds):
            order = names[number % len(names):] + names[:number % len(names)]
            line = []
            for name in order:
                os.sync()
                took = sides[name](number)
                restore(root, base)
                seconds[name].append(took)
                line.append(f"{name} {took:.2f} s")
            print(f"round {number + 1}: " + ", ".join(line))
        report(seconds, targets, root, rounds)
    finally:
        if temporary:
            shutil.rmtree(top, ignore_errors=True)
    return 0


def report(seconds: dict[str, list[float]], targets: int, root: Path, rounds: int) -> None:
    per = {name: statistics.median(values) / targets for name, values in seconds.items()}
    print(f"\nper target (median build / {targets}):")
    for name, value in per.items():
        print(f"  {name:<18} {value * 1000:8.1f} ms")
    ratio = per["agentfile reuse"] / per["agentfile fresh"]
    print(f"\nagentfile reuse / agentfile fresh: {ratio:.2f}x; goal <= {GOAL}x: "
          + ("met" if ratio <= GOAL else "NOT met"))
    print(f"agentfile fresh / plain git fresh: "
          f"{per['agentfile fresh'] / per['plain git fresh']:.2f}x")
    print(f"agentfile reuse / plain git reused: "
          f"{per['agentfile reuse'] / per['plain git reused']:.2f}x")
    print(f"agentfile reuse / plain git fresh: "
          f"{per['agentfile reuse'] / per['plain git fresh']:.2f}x")
    pool = [json.loads(p.read_text()) for p in sorted((root / ".agentfile" / "pool")
                                                      .glob("*.json"))]
    runs = [int(info.get("setup_runs", 0)) for info in pool]
    builds = rounds + 1
    print(f"setup ran {runs} times in the {len(pool)} pooled worktrees over {builds} builds"
          f" of {targets} targets (fresh worktrees: {targets} times per build); goal at most"
          " once per pooled worktree: " + ("met" if runs and max(runs) <= 1 else "NOT met"))
    print(f"measured at {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}")


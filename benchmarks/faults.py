"""A fault campaign: SIGINT, SIGTERM and SIGHUP at random moments of real builds.

    python benchmarks/faults.py [--runs 300] [--seed 13] [--keep DIR]

Each run builds, in one git repository reset between runs, an Agentfile of worktree targets,
a branch target and a worktree target in a tmux window, all writing their output then working
a while (their durations drawn at random). At a random moment, from before the build has
created anything to after it has landed, the build gets one signal: SIGINT or SIGHUP to its
process group (as a terminal sends them), or SIGTERM to its process. Then every run checks:

- no process of the build is alive (none has the repository as its workspace);
- no tmux session of the build, no worktree;
- every target that wrote its output has it on a branch, or landed on the user's branch;
- the state says what happened: the run is closed (not `running`), with the status its exit
  code means (or the build was over when the signal came, which then ended agentfile as it
  ends any program), and every target has an outcome.

It prints one line per failed run and, at the end, runs and failures. tests/test_faults.py runs
a few seeded runs of the same campaign in CI; this script runs as many as asked.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

TARGETS = ("w1", "w2", "b", "t")  # worktree, worktree, branch, worktree in tmux
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_FOR = {"succeeded": 0, "failed": 1, "interrupted": 130}


@dataclass
class Run:
    number: int
    sig: int
    delay: float
    code: int | None = None
    problems: tuple[str, ...] = ()


def _git(repo: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=check)
    return done.stdout


def make_repo(where: Path) -> Path:
    repo = where / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "faults@example.com")
    _git(repo, "config", "user.name", "faults")
    (repo / "README.md").write_text("fault campaign\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "initial")
    return repo


def manifest(marks: Path, durations: dict[str, float]) -> str:
    """Each target writes its output, notes (outside the repository) that it did, then works
    a while: a signal may come before, between or after."""

    def command(name: str) -> str:
        return (f"echo {name} > out-{name}.txt; touch {marks}/{name}; "
                f"sleep {durations[name]:.2f}")

    return ("options:\n    isolation = worktree\n"
            f"w1:\n    isolation = worktree\n    run = \"{command('w1')}\"\n"
            f"w2:\n    isolation = worktree\n    run = \"{command('w2')}\"\n"
            f"b: w1\n    isolation = branch\n    run = \"{command('b')}\"\n"
            f"t:\n    isolation = worktree\n    terminal = tmux\n    run = \"{command('t')}\"\n")


def reset(repo: Path, initial: str) -> None:
    """The repository as the campaign made it: main at its first commit, no other branch,
    no state (what a run left is checked before this, and then forgotten)."""
    _git(repo, "checkout", "-q", "-f", "main")
    _git(repo, "reset", "-q", "--hard", initial)
    for branch in _git(repo, "branch", "--format=%(refname:short)").split():
        if branch != "main":
            _git(repo, "branch", "-q", "-D", branch)
    shutil.rmtree(repo / ".agentfile", ignore_errors=True)
    _git(repo, "worktree", "prune")
    _git(repo, "clean", "-q", "-fdx")


def one_run(repo: Path, marks: Path, rng: random.Random, number: int) -> Run:
    shutil.rmtree(marks, ignore_errors=True)
    marks.mkdir()
    durations = {name: rng.uniform(0.2, 1.5) for name in TARGETS}
    (repo / "Agentfile").write_text(manifest(marks, durations))
    _git(repo, "add", "Agentfile")
    _git(repo, "commit", "-q", "-m", f"run {number}")
    run = Run(number, rng.choice(SIGNALS), rng.uniform(0.0, 5.0))
    build = subprocess.Popen([sys.executable, "-m", "agentfile", "build", "-j4"], cwd=repo,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "NO_COLOR": "1"}, start_new_session=True)
    try:
        out, _ = build.communicate(timeout=run.delay)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # ended already
            if run.sig == signal.SIGTERM:
                build.send_signal(run.sig)
            else:
                os.killpg(build.pid, run.sig)  # the terminal's way: the whole group
        try:
            out, _ = build.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, signal.SIGKILL)
            out, _ = build.communicate()
            run.code = None
            run.problems = ("the build did not end within 90 s of the signal",)
            return run
    run.code = build.returncode
    run.problems = tuple(check(repo, marks, run.code, out))
    return run


def check(repo: Path, marks: Path, code: int | None, out: str) -> list[str]:
    """What the run broke of the promises (empty: none)."""
    problems: list[str] = []
    if "internal error" in out or ("Traceback" in out and not _in_start_up(out)):
        problems.append(f"an internal error: {out[-400:]}")
    alive = _alive(repo)
    if alive:
        problems.append(f"processes left: {alive}")
    sessions = _sessions(repo)
    if sessions:
        problems.append(f"tmux sessions left: {sessions}")
    trees = [ln for ln in _git(repo, "worktree", "list", "--porcelain").splitlines()
             if ln.startswith("worktree ")][1:]
    if trees:
        problems.append(f"worktrees left: {trees}")
    branches = _git(repo, "branch", "--format=%(refname:short)").split()
    for name in sorted(p.name for p in marks.iterdir()):
        if not any(_holds(repo, b, f"out-{name}.txt") for b in branches):
            problems.append(f"{name} wrote its output, which is on no branch")
    problems += _state(repo, code, _in_start_up(out))
    return problems


def _in_start_up(out: str) -> bool:
    """A Ctrl-C in the first moments, while the Python interpreter itself starts (before any
    code of agentfile's runs): Python's own traceback, which no program can prevent, and
    exit 1; nothing was made yet (the other checks see to it)."""
    return out.rstrip().endswith("KeyboardInterrupt") and "/agentfile/" not in out


def _holds(repo: Path, branch: str, path: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{branch}:{path}"], cwd=repo,
                          capture_output=True).returncode == 0


def _state(repo: Path, code: int | None, start_up: bool) -> list[str]:
    database = repo / ".agentfile" / "state.sqlite"
    stopped = code == 130 or (code is not None and code < 0) or start_up
    if not database.exists():
        # Stopped before it recorded anything (before Python had even started agentfile,
        # the signal ends it as any program): it must have made nothing either (the checks
        # above).
        return [] if stopped else [f"no state, and exit {code}"]
    db = sqlite3.connect(database)
    try:
        row = db.execute("SELECT id, status, exit_code FROM runs ORDER BY started DESC "
                         "LIMIT 1").fetchone()
        if row is None:
            return [] if stopped else [f"no run recorded, and exit {code}"]
        run_id, status, exit_code = row
        targets = {t for (t,) in db.execute("SELECT target FROM outcomes WHERE run = ?",
                                            (run_id,))}
    finally:
        db.close()
    problems = []
    if code is not None and code < 0 and status in EXIT_FOR and exit_code == EXIT_FOR[status]:
        # The signal came once the build was over, its records written: agentfile's own
        # handlers were gone, and it died of the signal, as any program then does.
        code = exit_code
    if status not in EXIT_FOR or EXIT_FOR[status] != code or exit_code != code:
        problems.append(f"run {run_id} recorded as {status} (exit {exit_code}), "
                        f"agentfile exited {code}")
    if status in EXIT_FOR and targets != set(TARGETS):
        problems.append(f"outcomes for {sorted(targets)} only")
    return problems


def _alive(repo: Path) -> list[str]:
    """Processes working in the repository (its worktrees included), after a grace for those
    already dying; zombies are not alive."""
    deadline = time.monotonic() + 3.0
    while True:
        found = []
        for proc in psutil.process_iter(["pid", "environ", "status", "cmdline"]):
            try:
                env = proc.info["environ"] or {}
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            if env.get("AGENTFILE_WORKSPACE", "").startswith(str(repo)):
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def _sessions(repo: Path) -> list[str]:
    from agentfile.isolation.tmux import session_name

    listed = subprocess.run(["tmux", "list-sessions", "-F", "#{session_name}"],
                            capture_output=True, text=True)
    prefix = session_name(repo, "")
    return [s for s in listed.stdout.split() if s.startswith(prefix)]


def campaign(runs: int, seed: int, where: Path, *, verbose: bool = False) -> list[Run]:
    """`runs` seeded runs in a repository under `where`; every run, its problems included."""
    rng = random.Random(seed)
    repo = make_repo(where)
    marks = where / "marks"
    initial = _git(repo, "rev-parse", "HEAD").strip()
    done = []
    for number in range(runs):
        run = one_run(repo, marks, rng, number)
        done.append(run)
        if verbose and run.problems:
            print(f"run {number}: {signal.Signals(run.sig).name} after {run.delay:.2f}s, "
                  f"exit {run.code}: {'; '.join(run.problems)}", flush=True)
        reset(repo, initial)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", type=Path, help="work here, and keep it (default: a "
                        "temporary folder, removed)")
    args = parser.parse_args(argv)
    where = args.keep or Path(tempfile.mkdtemp(prefix="agentfile-faults-"))
    started = time.monotonic()
    try:
        runs = campaign(args.runs, args.seed, where, verbose=True)
    finally:
        if args.keep is None:
            shutil.rmtree(where, ignore_errors=True)
    failed = [r for r in runs if r.problems]
    codes = {code: sum(r.code == code for r in runs) for code in sorted(
        {r.code for r in runs}, key=lambda c: -1 if c is None else c)}
    print(f"{len(runs)} runs (seed {args.seed}), {len(failed)} failed, "
          f"{time.monotonic() - started:.0f} s; exits: "
          + ", ".join(f"{code}: {count}" for code, count in codes.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

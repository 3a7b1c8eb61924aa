"""What one worktree-isolated target costs agentfile, against the same git commands by hand;
with `--reuse`, what `worktrees = reuse` saves per target.

    python benchmarks/worktree.py [--files 20000] [--dirs 200] [--rounds 5] [--edit 0]
    python benchmarks/worktree.py --reuse [--files 5000] [--targets 100] [--jobs 2] [--rounds 3]

It generates a git repository of `--files` small files (a few hundred bytes each, spread over
`--dirs` directories, committed once and packed), then alternates, for `--rounds` rounds (plus
`--warmup` rounds that are not counted; the side that goes first alternates too, and an
untimed `sync` runs before each side):

- agentfile: `Worktrees.begin()` (not in the comparison), then, timed, `prepare(target)`,
  `finish(workspace, target, "succeeded")` and `drop_branch(work.branch)` for one target;
- plain git: `git worktree add -b BRANCH PATH HEAD`, `git worktree remove --force PATH` and
  `git branch -D BRANCH`, each one subprocess.

It prints each round's times, the medians with agentfile's time broken down by step (and
inside each step by git subprocess, as GitPython ran it), and the ratio agentfile / plain git.
The project's goal is a ratio of at most 1.2. With `--edit K` the target changes K files
between `prepare` and `finish` (not timed), so `finish` has something to commit and diff.

`--reuse` (reuse.py) runs whole builds instead: `--targets` worktree targets (each writes one
file, after a `setup` that marks node_modules) on a `--files` repository at `-j --jobs`, with
`worktrees = reuse` against fresh worktrees and against plain-git scripts doing the same by
hand, and prints the time per target of each, the ratios and how often setup ran per pooled
worktree. The goal: reuse at most 0.3x the fresh time per target, setup at most once per
pooled worktree.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git as gitpython

if __package__ in (None, ""):  # started as `python benchmarks/worktree.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agentfile.git import Git
from agentfile.isolation.worktree import Worktrees
from agentfile.manifest.expand import ConcreteTarget
from agentfile.manifest.load import load
from agentfile.records.layout import Layout
from agentfile.records.state import Store

GOAL = 1.2
AGENTFILE = 'a:\n    run = "true"\n    isolation = worktree\n'
GIT_ENV = ("-c", "user.name=bench", "-c", "user.email=bench@localhost",
           "-c", "commit.gpgsign=false")


# -- the repository ---------------------------------------------------------------------


def run_git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *GIT_ENV, *args], cwd=root, check=True,
                          capture_output=True, text=True)
    return done.stdout


def generate(root: Path, files: int, dirs: int) -> None:
    """`files` files of a few hundred bytes in `dirs` directories, and an Agentfile: one commit."""
    root.mkdir(parents=True, exist_ok=True)
    dirs = max(1, min(dirs, files))
    paths = [root / f"pkg{d:03d}" / f"sub{d % 7}" for d in range(dirs)]
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        body = f"# file {i}\n" + f"value_{i} = {i * 7919 % 100003}  # padding padding\n" * 6
        (paths[i % dirs] / f"module_{i:05d}.py").write_text(body)
    (root / "Agentfile").write_text(AGENTFILE)
    run_git(root, "init", "-q", "-b", "main")
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "--no-verify", "-m", "generated")
    # Packed, as a cloned or garbage-collected repository is: checking out 20,000 loose
    # objects (one file, mmap and inflate each) would swamp what is measured here.
    run_git(root, "repack", "-adq")


# -- stopwatches ------------------------------------------------------------------------


@dataclass
class Recorder:
    """Seconds by (phase, label): agentfile's steps, and every git subprocess GitPython runs."""

    phase: str = "-"
    steps: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    commands: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.steps[self.phase, label] += time.perf_counter() - start
        return timed

    @contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        self.phase = phase
        start = time.perf_counter()
        try:
            yield
        finally:
            self.steps[phase, "total"] += time.perf_counter() - start
            self.phase = "-"


def command_label(command: Sequence[Any]) -> str:
    """`git worktree add ...` -> "worktree add"; `git diff --cached ...` -> "diff --cached"."""
    words = [str(w) for w in command[1:]]
    while len(words) >= 2 and words[0] == "-c":
        words = words[2:]
    if not words:
        return "?"
    sub = words[0]
    if sub in ("worktree", "branch") and len(words) > 1:
        return f"{sub} {words[1]}"
    if sub == "diff" and "--cached" in words:
        return "diff --cached"
    if sub == "add" and "-A" in words:
        return "add -A"
    return sub


@contextmanager
def traced_git(recorder: Recorder) -> Iterator[None]:
    """Time every command GitPython runs (all its `Git` objects, so also `git.Repo(path)`'s)."""
    original = gitpython.cmd.Git.execute

    def execute(self: gitpython.cmd.Git, command: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, command, *args, **kwargs)
        finally:
            label = command_label(command) if not isinstance(command, str) else command
            recorder.commands[recorder.phase, label] += time.perf_counter() - start

    setattr(gitpython.cmd.Git, "execute", execute)  # noqa: B010 (mypy: no method assignment)
    try:
        yield
    finally:
        setattr(gitpython.cmd.Git, "execute", original)  # noqa: B010


def instrument(worktrees: Worktrees, recorder: Recorder) -> None:
    """Stopwatches on the Git and Store methods the Worktrees calls (on these instances)."""
    for name in ("rev", "add_worktree", "commit_all", "diff", "remove_worktree",
                 "delete_branch", "create_branch", "head_commit", "current_branch"):
        setattr(worktrees.git, name, recorder.wrap(f"Git.{name}", getattr(worktrees.git, name)))
    for name in ("record_resource", "resource_removed"):
        setattr(worktrees.store, name,
                recorder.wrap(f"Store.{name}", getattr(worktrees.store, name)))


# -- one round of each side -------------------------------------------------------------


@dataclass
class Round:
    agentfile: float
    plain: float
    begin: float
    steps: dict[tuple[str, str], float]
    commands: dict[tuple[str, str], float]
    plain_steps: dict[str, float]
    racy: int


def edit_files(path: Path, count: int) -> None:
    for changed, file in enumerate(sorted(path.glob("pkg*/sub*/module_*.py"))):
        if changed >= count:
            return
        with file.open("a") as out:
            out.write("edited = True\n")


def racy_files(worktree: Path) -> int:
    """Files of a fresh worktree written in the same second as its index (or later).

    Git (built without USE_NSEC, as most are) compares whole seconds: such entries are
    "racily clean", and the next index refresh (`git add -A`, `git status`) must read and hash
    each of them, once, to know they did not change.
    """
    gitdir = Path((worktree / ".git").read_text().split(":", 1)[1].strip())
    index_second = int((gitdir / "index").stat().st_mtime)
    count, stack = 0, [worktree]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name == ".git":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif int(entry.stat(follow_symlinks=False).st_mtime) >= index_second:
                    count += 1
    return count


def agentfile_round(root: Path, layout: Layout, store: Store, target: ConcreteTarget,
                    edit: int) -> tuple[float, float, Recorder, int]:
    """(prepare+finish+drop seconds, begin seconds, the recorder, racily clean files) for one
    fresh run id."""
    recorder = Recorder()
    run_id = f"bench-{secrets.token_hex(3)}"
    worktrees = Worktrees(Git(root), layout, store, run_id, keep=False)
    instrument(worktrees, recorder)
    with traced_git(recorder):
        with recorder.timing("begin"):
            worktrees.begin()
        start = time.perf_counter()
        with recorder.timing("prepare"):
            workspace = worktrees.prepare(target)
        paused = time.perf_counter()
        racy = racy_files(workspace.path)  # a diagnostic: not agentfile's time
        if edit:
            edit_files(workspace.path, edit)  # the target's own work: not agentfile's time
        resumed = time.perf_counter()
        with recorder.timing("finish"):
            work = worktrees.finish(workspace, target, "succeeded")
        with recorder.timing("drop"):
            worktrees.drop_branch(work.branch)
        total = time.perf_counter() - start - (resumed - paused)
    run_git(root, "branch", "-D", worktrees.integration)  # the round's integration branch
    return total, recorder.steps["begin", "total"], recorder, racy


def plain_round(root: Path, layout: Layout) -> tuple[float, dict[str, float]]:
    """The same worktree and branch by hand: three git subprocesses."""
    name = secrets.token_hex(3)
    branch, path = f"plain/{name}", layout.state_dir / "plain-worktrees" / name / "a"
    path.parent.mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}
    start = time.perf_counter()
    for label, args in (("worktree add", ("worktree", "add", "-b", branch, str(path), "HEAD")),
                        ("worktree remove", ("worktree", "remove", "--force", str(path))),
                        ("branch -D", ("branch", "-D", branch))):
        began = time.perf_counter()
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
        steps[label] = time.perf_counter() - began
    total = time.perf_counter() - start
    shutil.rmtree(path.parent, ignore_errors=True)
    return total, steps


def one_round(root: Path, layout: Layout, store: Store, target: ConcreteTarget, *,
              plain_first: bool, edit: int) -> Round:
    plain: tuple[float, dict[str, float]] | None = None
    if plain_first:
        os.sync()  # neither side pays for the other's pending writeback
        plain = plain_round(root, layout)
    os.sync()
    total, begin, recorder, racy = agentfile_round(root, layout, store, target, edit)
    if not plain_first:
        os.sync()
        plain = plain_round(root, layout)
    assert plain is not None
    return Round(total, plain[0], begin, dict(recorder.steps), dict(recorder.commands),
                 plain[1], racy)


# -- the report -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def breakdown(rounds: Sequence[Round]) -> list[tuple[str, float]]:
    """(indented label, median seconds) rows of agentfile's time, then plain git's."""
    def step(phase: str, label: str) -> float:
        return median([r.steps.get((phase, label), 0.0) for r in rounds])

    def command(phase: str, label: str) -> float:
        return median([r.commands.get((phase, label), 0.0) for r in rounds])

    def commands_of(phase: str) -> list[str]:
        labels = {label for r in rounds for (p, label) in r.commands if p == phase}
        return sorted(labels, key=lambda label: -command(phase, label))

    def other(phase: str, parts: Sequence[str]) -> float:
        return median([max(r.steps.get((phase, "total"), 0.0)
                           - sum(r.steps.get((phase, p), 0.0) for p in parts), 0.0)
                       for r in rounds])

    rows: list[tuple[str, float]] = [("agentfile: prepare + finish + drop",
                                      median([r.agentfile for r in rounds]))]
    layout = {
        "prepare": ["Git.rev", "Store.record_resource", "Git.add_worktree"],
        "finish": ["Git.commit_all", "Git.rev", "Git.diff", "Git.remove_worktree",
                   "Store.resource_removed"],
        "drop": ["Git.delete_branch", "Store.resource_removed"],
    }
    for phase, parts in layout.items():
        rows.append((f"  {phase}()", step(phase, "total")))
        for part in parts:
            rows.append((f"    {part}", step(phase, part)))
        rows.append(("    other (Python inside the step)", other(phase, parts)))
        for label in commands_of(phase):
            rows.append((f"      git {label} (subprocess)", command(phase, label)))
    rows.append(("  git subprocesses, all phases",
                 median([sum(v for (p, _), v in r.commands.items() if p != "begin")
                         for r in rounds])))
    shared = (("prepare", "worktree add"), ("finish", "worktree remove"), ("drop", "branch -D"))
    rows.append(("  beyond the 3 commands plain git runs too",
                 median([r.agentfile - sum(r.commands.get(k, 0.0) for k in shared)
                         for r in rounds])))
    rows.append(("agentfile: begin() (not compared)", median([r.begin for r in rounds])))
    rows.append(("plain git: add + remove + branch -D", median([r.plain for r in rounds])))
    for label in ("worktree add", "worktree remove", "branch -D"):
        rows.append((f"  git {label}", median([r.plain_steps[label] for r in rounds])))
    return rows


def report(rounds: Sequence[Round]) -> str:
    lines = ["", "medians over the rounds (each row its own median: rows need not add up;"
             " subprocess rows are indented under the step whose phase ran them)",
             f"{'':<52} {'seconds':>8} {'share':>6}"]
    whole = median([r.agentfile for r in rounds])
    for label, seconds in breakdown(rounds):
        share = f"{seconds / whole:>6.0%}" if whole and not label.startswith(("plain", "  git "))\
            else ""
        lines.append(f"{label:<52} {seconds:>8.3f} {share:>6}")
    agentfile, plain = whole, median([r.plain for r in rounds])
    ratio = agentfile / plain if plain else float("inf")
    per_round = median([r.agentfile / r.plain for r in rounds if r.plain])
    lines += ["", f"ratio agentfile / plain git: {ratio:.2f}x (medians; median of the rounds'"
              f" ratios {per_round:.2f}x); goal <= {GOAL}x: "
              + ("met" if ratio <= GOAL else "NOT met")]
    return "\n".join(lines)


def round_line(index: int, r: Round, plain_first: bool) -> str:
    s = r.steps
    return (f"round {index}{' (plain first)' if plain_first else ' (agentfile first)'}: "
            f"agentfile {r.agentfile:.3f} s (prepare {s.get(('prepare', 'total'), 0):.3f},"
            f" finish {s.get(('finish', 'total'), 0):.3f}, drop {s.get(('drop', 'total'), 0):.3f})"
            f"  plain git {r.plain:.3f} s (add {r.plain_steps['worktree add']:.3f}, remove"
            f" {r.plain_steps['worktree remove']:.3f}, branch -D {r.plain_steps['branch -D']:.3f})"
            f"  ratio {r.agentfile / r.plain:.2f}x; racily clean files {r.racy}")


# -- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int)
    parser.add_argument("--dirs", type=int, default=200)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first, not counted")
    parser.add_argument("--edit", type=int, default=0,
                        help="files the target changes between prepare and finish")
    parser.add_argument("--reuse", action="store_true",
                        help="whole builds: worktrees = reuse against fresh worktrees and "
                             "plain git (defaults then: --files 5000 --rounds 3)")
    parser.add_argument("--targets", type=int, default=100, help="--reuse: targets per build")
    parser.add_argument("--jobs", type=int, default=2, help="--reuse: -j of every build")
    parser.add_argument("--dir", type=Path,
                        help="generate the repository in DIR/repo and keep it (e.g. on a"
                             " tmpfs, to take the disk out of the measurement)")
    args = parser.parse_args(argv)
    if args.dir and (args.dir / "repo").exists():
        parser.error(f"{args.dir / 'repo'} exists: give --dir a new or empty directory")
    if args.reuse:
        from benchmarks.reuse import compare

        return compare(files=args.files or 5000, dirs=args.dirs, targets=args.targets,
                       jobs=args.jobs, rounds=args.rounds or 3, where=args.dir)
    args.files = args.files or 20000
    args.rounds = args.rounds or 5

    temporary = None if args.dir else tempfile.TemporaryDirectory(prefix="agentfile-bench-")
    root = (args.dir or Path(temporary.name if temporary else ".")).resolve() / "repo"
    try:
        start = time.perf_counter()
        generate(root, args.files, args.dirs)
        print(f"generated {args.files} files in {args.dirs} directories at {root}"
              f" in {time.perf_counter() - start:.1f} s; git {run_git(root, 'version').split()[-1]}"
              f", {args.rounds} rounds (+{args.warmup} warm-up), --edit {args.edit}")
        target = load(root / "Agentfile").targets[0]
        layout = Layout(root)
        layout.ensure()
        store = Store(layout.database)
        rounds: list[Round] = []
        try:
            for index in range(args.warmup + args.rounds):
                plain_first = index % 2 == 1
                result = one_round(root, layout, store, target, plain_first=plain_first,
                                   edit=args.edit)
                if index < args.warmup:
                    print(f"warm-up: agentfile {result.agentfile:.3f} s,"
                          f" plain git {result.plain:.3f} s")
                    continue
                rounds.append(result)
                print(round_line(len(rounds), result, plain_first))
        finally:
            store.close()
        print(report(rounds))
    finally:
        if temporary:
            temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

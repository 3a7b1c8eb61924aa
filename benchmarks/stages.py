"""Where the time of loading one manifest goes, stage by stage, without a profiler's overhead.

    python benchmarks/stages.py [PATH] [--size 10000] [--form agentfile|yaml] [--repeat 3]

It runs the real `agentfile.manifest.load.load()` with a stopwatch around each of the
functions it calls (parse, lowering, variables, jsonschema, pydantic, semantic checks, graph),
and the time spent in Python's cyclic garbage collector, then times the planning functions.
The stopwatches replace module attributes by name; a stage whose function is no longer there
is shown as "-", and what the stages do not cover shows as "other". Each stage reports the
least over `--repeat` loads. Without PATH it generates a manifest like benchmarks/load.py does.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import agentfile.manifest.fastparse as fastparse_module
import agentfile.manifest.load as load_module
import agentfile.manifest.parse as parse_module
import agentfile.manifest.validate as validate_module
from agentfile.graph import critical_path, estimate, waves
from agentfile.manifest.load import LoadedManifest, load

if __package__ in (None, ""):  # started as `python benchmarks/stages.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchmarks.load as bench
from benchmarks.load import write_manifests


def clock() -> float:
    """The clock `--clock` chose (benchmarks.load keeps it)."""
    return bench.clock()

# (row label, module, attribute): functions whose time is a stage. Indented labels are part
# of the row above them.
STAGES: tuple[tuple[str, Any, str], ...] = (
    ("read + parse (language) or YAML/JSON", load_module, "read_document"),
    ("  fast path: syntax nodes", fastparse_module, "parse"),
    ("  lark (what the fast path leaves): prescan", parse_module, "_prescan"),
    ("  lark: lex + LALR + syntax nodes", parse_module, "_run"),
    ("  lowering to the data form", load_module, "lower"),
    ("  YAML: compose + spans + construct", load_module, "load_yaml"),
    ("variables ${VAR}", load_module, "expand_variables"),
    ("validate: jsonschema + pydantic", load_module, "validate"),
    ("  jsonschema", validate_module, "_validator"),
    ("semantic checks + fan-out", load_module, "Checker"),
    ("graph: topological order", load_module, "build_graph"),
)


class Stopwatch:
    """Sums the time spent in named calls, and in the garbage collector."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._gc_started = 0.0

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += clock() - start
        return timed

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = clock()
        else:
            self.seconds["gc"] += clock() - self._gc_started


class _TimedValidator:
    """A jsonschema validator whose `iter_errors` is timed to the last error."""

    def __init__(self, real: Any, watch: Stopwatch, label: str) -> None:
        self.real, self.watch, self.label = real, watch, label

    def iter_errors(self, instance: Any) -> Iterator[Any]:
        start = clock()
        errors = list(self.real.iter_errors(instance))
        self.watch.seconds[self.label] += clock() - start
        return iter(errors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _timed_checker(checker: Any, watch: Stopwatch, label: str) -> Any:
    """A subclass of the semantic checker whose `run` is timed."""

    class TimedChecker(checker):  # type: ignore[misc]
        def run(self) -> Any:
            return watch.wrap(label, super().run)()

    return TimedChecker


@contextmanager
def instrumented(watch: Stopwatch) -> Iterator[list[str]]:
    """Stopwatches on every stage that exists; yields the labels of those that do not."""
    saved: list[tuple[Any, str, Any]] = []
    missing: list[str] = []
    for label, module, name in STAGES:
        original = getattr(module, name, None)
        if original is None:
            missing.append(label)
            continue
        saved.append((module, name, original))
        if name == "_validator":
            real = original()
            setattr(module, name, lambda real=real, label=label: _TimedValidator(real, watch,
                                                                                 label))
        elif name == "Checker":
            setattr(module, name, _timed_checker(original, watch, label))
        else:
            setattr(module, name, watch.wrap(label, original))
    gc.callbacks.append(watch.on_gc)
    try:
        yield missing
    finally:
        gc.callbacks.remove(watch.on_gc)
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def plan_stages(loaded: LoadedManifest) -> dict[str, float]:
    names = list(loaded.graph.order)
    out = {}
    for label, run in (("plan: waves", lambda: waves(loaded.graph, names)),
                       ("plan: critical_path", lambda: critical_path(loaded.graph, names)),
                       ("plan: estimate -j4", lambda: estimate(loaded.graph, names, jobs=4))):
        start = clock()
        run()
        out[label] = clock() - start
    return out


def measure(path: Path, repeat: int, *, collect: bool = True) -> tuple[dict[str, float], int,
                                                                         list[str]]:
    """The least time of each stage over `repeat` loads and plans; target count; missing."""
    load(path, environ={})  # the one-time setup (parser, schema validator) is not measured
    best: dict[str, float] = {}
    count = 0
    missing: list[str] = []
    for _ in range(max(repeat, 1)):
        watch = Stopwatch()
        gc.collect()
        if not collect:
            gc.disable()
        try:
            with instrumented(watch) as missing:
                start = clock()
                loaded = load(path, environ={})
                watch.seconds["load()"] = clock() - start
        finally:
            gc.enable()
        watch.seconds.update(plan_stages(loaded))
        count = len(loaded.targets)
        for label, seconds in watch.seconds.items():
            best[label] = min(best.get(label, seconds), seconds)
    return best, count, missing


def report(best: dict[str, float], count: int, missing: Sequence[str]) -> str:
    total = best["load()"]
    lines = [f"{'stage':<42} {'seconds':>8} {'of load':>7} {'us/target':>9}"]

    def row(label: str, seconds: float | None, share: bool = True) -> None:
        if seconds is None:
            lines.append(f"{label:<42} {'-':>8}")
            return
        part = f"{seconds / total:>7.0%}" if share else ""
        lines.append(f"{label:<42} {seconds:>8.3f} {part:>7} {seconds / count * 1e6:>9.1f}")

    top = 0.0
    for label, _, _ in STAGES:
        seconds = best.get(label)
        if label in missing:
            row(label, None)
            continue
        if seconds is None:
            continue  # not called for this form (YAML rows for the language and back)
        row(label, seconds)
        if not label.startswith(" "):
            top += seconds
    row("other (inside load(), outside the stages)", max(total - top, 0.0))
    row("load() as one call", total)
    row("  of which cyclic garbage collection", best.get("gc", 0.0))
    plan = sum(best[k] for k in best if k.startswith("plan:"))
    for label in ("plan: waves", "plan: critical_path", "plan: estimate -j4"):
        row(label, best[label], share=False)
    row("load + plan", total + plan, share=False)
    lines.append("(each row is the least over the repeats, so rows need not add up exactly;"
                 " gc time falls inside whichever stages triggered it)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time each stage of loading a manifest.")
    parser.add_argument("path", nargs="?", type=Path, help="a manifest (else --size)")
    parser.add_argument("--size", type=int, default=10_000,
                        help="targets of a generated manifest (default 10000)")
    parser.add_argument("--form", choices=("agentfile", "yaml"), default="agentfile")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clock", choices=tuple(bench.CLOCKS), default="wall",
                        help="wall-clock time (default) or this process's CPU time")
    parser.add_argument("--no-gc", action="store_true",
                        help="disable the cyclic garbage collector during each load")
    args = parser.parse_args(argv)
    bench.clock = bench.CLOCKS[args.clock]
    with tempfile.TemporaryDirectory(prefix="agentfile-stages-") as scratch:
        path: Path = args.path or write_manifests(args.size, Path(scratch))[args.form]
        best, count, missing = measure(path, args.repeat, collect=not args.no_gc)
    print(f"{path.name}: {count} targets, best of {args.repeat}, {args.clock} clock"
          + (", gc disabled during load" if args.no_gc else ""))
    print(report(best, count, missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long loading and planning a large manifest takes, in both manifest forms.

    python benchmarks/load.py [--sizes 1000,10000,50000] [--repeat 3]

For each size it generates one manifest as a data-form document, writes it as an Agentfile
(`render.to_agentfile`) and as YAML (`render.to_yaml`) in a temporary directory, and measures,
best of `--repeat` runs, separately:

* cold load: `agentfile.manifest.load.load(path)` (parse or YAML, lowering, variables, JSON
  Schema, pydantic, semantic checks, fan-out, topological order) with nothing cached;
* load: the same once the parse cache holds this content (any later load of an unchanged file);
* plan: `graph.waves`, `graph.critical_path` and `graph.estimate(..., jobs=4)` over every target.

The manifest is shaped like a real one, only longer: a layered DAG (layers of 100 targets, each
depending on two targets of the layer before), half run targets and half agent targets with a
prompt and `budget = $1, 10m, 1GiB`, a fan-out (`foreach x in [...]`) every few layers with a
target that joins it, descriptions, variables and a named agent. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agentfile.graph import critical_path, estimate, waves
from agentfile.manifest.load import LoadedManifest, load
from agentfile.manifest.render import to_agentfile, to_yaml
from agentfile.manifest.validate import SCHEMA_ID

LAYER = 100  # targets per layer
FANOUT_VALUES = tuple("abcdefghij")  # the values of each fan-out: 10 instances
FANOUT_EVERY = 4  # layers 1, 5, 9, ... start with a fan-out
GOAL_SIZE = 10_000
GOAL_SECONDS = 1.0
FLAT_RATIO = 1.3  # per-target cost at the largest size / at the smallest: at most this is flat
FORMS = ("agentfile", "yaml")
FILE_NAMES = {"agentfile": "Agentfile", "yaml": "Agentfile.yaml"}

T = TypeVar("T")
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]  # --clock cpu: this process's CPU time, steadier on a shared machine


# -- the manifest -------------------------------------------------------------------------


def _layer_slots(layer: int, count: int) -> tuple[list[str], str | None]:
    """The concrete target names of one layer, and its fan-out template if it has one."""
    prefix = f"l{layer:04d}"
    template = None
    slots: list[str] = []
    if layer % FANOUT_EVERY == 1 and count > len(FANOUT_VALUES):
        template = f"{prefix}/each/{{x}}"
        slots = [f"{prefix}/each/{value}" for value in FANOUT_VALUES]
    slots += [f"{prefix}/t{index:03d}" for index in range(len(slots), count)]
    return slots, template


def _pick_deps(slot: int, previous: Sequence[str]) -> list[str]:
    """Two targets of the layer before, spread over it."""
    if not previous:
        return []
    first = slot % len(previous)
    second = (slot * 37 + 11) % len(previous)
    if second == first:
        second = (first + 1) % len(previous)
    return list(dict.fromkeys((previous[first], previous[second])))


def _run_target(layer: int, slot: int, deps: list[str]) -> dict[str, Any]:
    target: dict[str, Any] = {
        "deps": deps,
        "description": f"Build package {slot} of stage {layer} for ${{PROJECT}}",
        "run": f"make -C packages/p{slot:03d} STAGE={layer} build",
    }
    if slot % 4 == 0:
        target["inputs"] = [f"packages/p{slot:03d}/**/*.c"]
        target["outputs"] = [f"build/l{layer:04d}/p{slot:03d}.o"]
    if slot % 10 == 0:
        target["env"] = {"CFLAGS": "-O2", "STAGE": str(layer)}
    return target


def _agent_target(layer: int, slot: int, deps: list[str]) -> dict[str, Any]:
    prompt = (f"Implement step {slot} of stage {layer} of ${{PROJECT}}: read the design notes, "
              "change only the files the step names and keep the tests passing.")
    if deps and slot % 10 == 1:
        prompt += f"\nThe previous step reported:\n{{deps.{deps[0]}.result}}"
    target: dict[str, Any] = {
        "deps": deps,
        "description": f"Step {slot} of stage {layer}",
        "prompt": prompt,
        "budget": {"usd": 1, "time": "10m", "memory": "1GiB"},
    }
    if slot % 3 == 0:
        target["agent"] = "worker"
    if slot % 5 == 0:
        target["verify"] = f"pytest -q tests/stage{layer}"
        target["retries"] = 1
    return target


def _fanout_target(layer: int, deps: list[str]) -> dict[str, Any]:
    return {
        "deps": deps,
        "description": f"Port module {{x}} in stage {layer}",
        "foreach": {"var": "x", "list": list(FANOUT_VALUES)},
        "agent": "worker",
        "prompt": "Port module {x} to the new API, following docs/porting.md.\n"
                  "Edit only src/{x}/ and reply \"no change\" if nothing uses the old API.\n",
        "verify": "python -m py_compile src/{x}/__init__.py",
        "canary": 2,
        "budget": {"usd": 1, "time": "10m", "memory": "1GiB"},
    }


def _without_empty(target: dict[str, Any]) -> dict[str, Any]:
    """No `deps: []` for the first layer: a writer would leave it out."""
    return {key: value for key, value in target.items() if value != []}


def generate(size: int) -> dict[str, Any]:
    """A data-form document with `size` concrete targets (after fan-out)."""
    targets: dict[str, dict[str, Any]] = {}
    previous: list[str] = []
    previous_fanout: str | None = None
    layer = 0
    while layer * LAYER < size:
        count = min(LAYER, size - layer * LAYER)
        slots, template = _layer_slots(layer, count)
        if template is not None:
            targets[template] = _without_empty(_fanout_target(layer, _pick_deps(0, previous)))
        for slot in range(len(FANOUT_VALUES) if template else 0, count):
            deps = _pick_deps(slot, previous)
            if previous_fanout is not None and slot == count - 1:
                deps.append(previous_fanout.rsplit("/", 1)[0])  # joins the whole fan-out
            maker = _run_target if slot % 2 == 0 else _agent_target
            targets[slots[slot]] = _without_empty(maker(layer, slot, deps))
        previous, previous_fanout = slots, template
        layer += 1
    return {
        "vars": {"PROJECT": "acme", "MODEL": "claude-sonnet-4-5"},
        "options": {"jobs": 4, "agent": "claude", "isolation": "worktree",
                    "budget": {"usd": 500, "time": "8h"}},
        "agents": {"worker": {"provider": "claude", "model": "${MODEL}", "max_parallel": 4,
                              "description": "The default worker"}},
        "targets": targets,
    }


def write_manifests(size: int, folder: Path) -> dict[str, Path]:
    """The generated manifest of `size` targets, in each form, in its own folder."""
    doc = generate(size)
    texts = {"agentfile": to_agentfile(doc), "yaml": to_yaml(doc, SCHEMA_ID)}
    paths: dict[str, Path] = {}
    for form, text in texts.items():
        where = folder / f"{size}-{form}"
        where.mkdir(parents=True, exist_ok=True)
        paths[form] = where / FILE_NAMES[form]
        paths[form].write_text(text, encoding="utf-8")
    return paths


# -- measuring ----------------------------------------------------------------------------


def best_of(repeat: int, run: Callable[[], T]) -> tuple[float, T]:
    """The shortest of `repeat` times of `run()` on `clock`, and its last result."""
    best = float("inf")
    result: T | None = None
    for _ in range(max(repeat, 1)):
        gc.collect()
        start = clock()
        result = run()
        best = min(best, clock() - start)
    assert result is not None
    return best, result


def plan(loaded: LoadedManifest) -> int:
    """What `agentfile plan` computes for every target; returns the number of waves."""
    names = list(loaded.graph.order)
    found = waves(loaded.graph, names)
    critical_path(loaded.graph, names)
    estimate(loaded.graph, names, jobs=4)
    return len(found)


@dataclass(frozen=True, slots=True)
class Row:
    size: int
    form: str
    load: float  # with the parse cache warm (agentfile/manifest/cache.py)
    plan: float
    file_bytes: int
    cold: float  # the first load of this content: nothing cached

    @property
    def total(self) -> float:
        return self.load + self.plan

    @property
    def per_target_us(self) -> float:
        return self.total / self.size * 1e6


def measure(size: int, form: str, path: Path, repeat: int) -> tuple[Row, LoadedManifest]:
    os.environ["AGENTFILE_NO_CACHE"] = "1"
    cold_s, loaded = best_of(repeat, lambda: load(path, environ={}))
    del os.environ["AGENTFILE_NO_CACHE"]
    load(path, environ={})  # fills the cache
    load_s, loaded = best_of(repeat, lambda: load(path, environ={}))
    if len(loaded.targets) != size:
        raise SystemExit(f"{path}: {len(loaded.targets)} targets, expected {size}")
    plan_s, _ = best_of(repeat, lambda: plan(loaded))
    return Row(size, form, load_s, plan_s, path.stat().st_size, cold_s), loaded


def setup_cost(folder: Path) -> float:
    """The first load in a process: the schema validator (and lark, if it is needed)."""
    path = write_manifests(1, folder / "setup")["agentfile"]
    start = clock()
    load(path, environ={})
    return clock() - start


# -- reporting ----------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    head = (f"{'targets':>8}  {'form':<9}  {'file MiB':>8}  {'cold load':>9}  "
            f"{'load s':>8}  {'plan s':>8}  {'total s':>8}  {'us/target':>9}")
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row.size:>8}  {row.form:<9}  {row.file_bytes / 2**20:>8.2f}  "
                     f"{row.cold:>9.3f}  {row.load:>8.3f}  {row.plan:>8.3f}  "
                     f"{row.total:>8.3f}  "
                     f"{row.per_target_us:>9.1f}")
    return "\n".join(lines)


def verdicts(rows: Sequence[Row], forms: Sequence[str]) -> list[str]:
    """The goal's two questions, asked of a load from the parse cache and of a cold one."""
    sizes = sorted({row.size for row in rows})
    by_key = {(row.size, row.form): row for row in rows}

    def cold_total(row: Row) -> float:
        return row.cold + row.plan

    def cached_total(row: Row) -> float:
        return row.total

    out: list[str] = []
    if len(sizes) > 1:
        parts = []
        for form in forms:
            small, large = by_key[(sizes[0], form)], by_key[(sizes[-1], form)]
            for label, measure in (("cached", cached_total), ("cold", cold_total)):
                ratio = (measure(large) / large.size) / (measure(small) / small.size)
                shape = "flat" if ratio <= FLAT_RATIO else "NOT flat"
                parts.append(f"{form} {label} x{ratio:.2f} ({shape})")
        out.append(f"per-target cost, {sizes[-1]} vs {sizes[0]} targets: " + ", ".join(parts)
                   + f"  [flat = ratio <= {FLAT_RATIO}]")
    else:
        out.append("per-target cost: one size only, no ratio (give --sizes two or more)")
    if GOAL_SIZE in sizes:
        parts = []
        for form in forms:
            row = by_key[(GOAL_SIZE, form)]
            for label, seconds in (("cached", cached_total(row)), ("cold", cold_total(row))):
                parts.append(f"{form} {label} {seconds:.3f} s "
                             + ("yes" if seconds < GOAL_SECONDS else "NO"))
        out.append(f"{GOAL_SIZE} targets load+plan under {GOAL_SECONDS:g} s (the goal): "
                   + ", ".join(parts))
    else:
        out.append(f"{GOAL_SIZE} targets load+plan under {GOAL_SECONDS:g} s (the goal): "
                   f"not measured (add {GOAL_SIZE} to --sizes)")
    return out


# -- command line -------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma list of numbers") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are positive numbers of targets")
    return sorted(set(sizes))


def _forms(text: str) -> list[str]:
    forms = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise argparse.ArgumentTypeError(f"forms are {', '.join(FORMS)}")
    return forms


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=_sizes, default=[1000, 10_000, 50_000],
                        help="numbers of targets, comma separated (default 1000,10000,50000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each measurement; the best counts (default 3)")
    parser.add_argument("--forms", type=_forms, default=list(FORMS),
                        help="manifest forms, comma separated (default agentfile,yaml)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall-clock time (default) or this process's CPU time")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="write the manifests to DIR and keep them (e.g. to profile)")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    sizes: list[int] = args.sizes
    forms: list[str] = args.forms

    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"best of {args.repeat}, {args.clock} clock, gc on", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="agentfile-bench-") as scratch:
        os.environ["XDG_CACHE_HOME"] = str(Path(scratch) / "cache")  # not the user's cache
        folder = args.keep or Path(scratch)
        print(f"one-time setup (first load in a process: schema validator): "
              f"{setup_cost(folder):.3f} s", flush=True)
        for size in sizes:
            paths = write_manifests(size, folder)
            models = []
            for form in forms:
                row, loaded = measure(size, form, paths[form], args.repeat)
                rows.append(row)
                models.append(loaded.manifest)
                print(f"  measured {size} {form}: {row.total:.3f} s", file=sys.stderr,
                      flush=True)
            if any(model != models[0] for model in models[1:]):
                raise SystemExit(f"the {size}-target manifest loads differently per form")
        if args.keep:
            print(f"manifests kept in {args.keep}")
    print()
    print(table(rows))
    print()
    for line in verdicts(rows, forms):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`agentfile plan`: the waves of the schedule, the critical path, and how long it may take."""

from __future__ import annotations

import os

from agentfile import graph as g
from agentfile.commands.common import load_manifest, print_json
from agentfile.errors import EXIT_OK
from agentfile.manifest.load import LoadedManifest


def selected(loaded: LoadedManifest, targets: list[str]) -> list[str]:
    """The requested targets (else `options.default`, else all) and what they need."""
    wanted = targets or loaded.manifest.options.default or [t.name for t in loaded.targets]
    return g.select(loaded.graph, loaded.resolve(wanted))


def plan(*, file: str | None, targets: list[str], jobs: int | None, as_json: bool) -> int:
    loaded = load_manifest(file)
    names = selected(loaded, targets)
    slots = jobs or loaded.manifest.options.jobs or os.cpu_count() or 1
    waves = g.waves(loaded.graph, names)
    critical = g.critical_path(loaded.graph, names)
    estimate = g.estimate(loaded.graph, names, slots)
    if as_json:
        print_json({
            "targets": len(names),
            "jobs": slots,
            "waves": waves,
            "critical_path": critical,
            "estimate": {"unit": "seconds" if estimate.known else "targets",
                         "sequential": estimate.sequential, "parallel": estimate.parallel},
        })
        return EXIT_OK
    print(f"{len(names)} targets in {len(waves)} waves, -j{slots}")
    for number, wave in enumerate(waves, start=1):
        print(f"  wave {number}: {', '.join(wave)}")
    print(f"critical path ({len(critical)} targets): {' -> '.join(critical)}")
    unit = "s" if estimate.known else " target-steps"
    speedup = estimate.sequential / estimate.parallel if estimate.parallel else 1.0
    print(f"estimate: sequential {estimate.sequential:g}{unit}, parallel "
          f"{estimate.parallel:g}{unit} with -j{slots} ({speedup:.1f}x)")
    if not estimate.known:
        print("  (no earlier runs yet: every target counts as one step)")
    return EXIT_OK

"""`agentfile plan`: the waves of the schedule, the critical path, and how long it may take."""

from __future__ import annotations

import os

from agentfile import graph as g
from agentfile.commands.common import load_manifest, print_json
from agentfile.errors import EXIT_OK
from agentfile.isolation.directory import relative_dir
from agentfile.manifest.load import LoadedManifest
from agentfile.manifest.model import DirRef
from agentfile.records.layout import Layout
from agentfile.records.state import open_store
from agentfile.run.executors import goes_to_cluster
from agentfile.ui import plural


def selected(loaded: LoadedManifest, targets: list[str]) -> list[str]:
    """The requested targets (else `options.default`, else all) and what they need."""
    wanted = targets or loaded.manifest.options.default or [t.name for t in loaded.targets]
    return g.select(loaded.graph, loaded.resolve(wanted))


def job_slots(loaded: LoadedManifest, jobs: int | None, targets: int) -> int:
    """-j N, else `options.jobs`, else the CPUs; -j alone (0) is no limit: one per target."""
    if jobs == 0:
        return max(targets, 1)
    return jobs or loaded.manifest.options.jobs or os.cpu_count() or 1


def earlier_durations(loaded: LoadedManifest, names: list[str]) -> tuple[dict[str, float], int]:
    """Each target's duration in its last successful run; targets never run count at the
    median of the known ones. Also how many were guessed that way."""
    store = open_store(Layout(loaded.root).database, readonly=True)
    if store is None:
        return {}, 0
    try:
        known = store.durations()
    finally:
        store.close()
    return g.with_guesses(known, names)


def admission_rules(loaded: LoadedManifest, names: list[str]) -> dict[str, g.Admission]:
    """What keeps each target from starting beside others, as the scheduler admits them."""
    rules: dict[str, g.Admission] = {}
    for name in names:
        target = loaded.graph.targets[name]
        if target.kind == "group":
            continue
        definition = target.definition
        isolation = loaded.isolation_of(target)
        checkout = None if isolation == "worktree" else (
            relative_dir(loaded.root, loaded.path.parent, isolation.dir)
            if isinstance(isolation, DirRef) else isolation)
        agent_name, agent = loaded.agent_definition(target)
        rule = g.Admission(frozenset(definition.locks), definition.exclusive, checkout,
                           agent_name, agent.max_parallel if agent else None)
        if rule != g.FREE:
            rules[name] = rule
    return rules


def serialised_by(rules: dict[str, g.Admission]) -> list[str]:
    """What, among the rules, makes targets wait for each other: for the plan's reader."""
    reasons: dict[str, int] = {}
    limits: dict[str, int] = {}
    for rule in rules.values():
        found = [f"lock {lock}" for lock in sorted(rule.locks)]
        found += ["exclusive"] if rule.exclusive else []
        found += ["branch isolation, one at a time in the checkout"] \
            if rule.checkout == "branch" else []
        if rule.max_parallel is not None:
            found.append(reason := f"agent {rule.agent} at most {rule.max_parallel} at once")
            limits[reason] = rule.max_parallel
        for reason in found:
            reasons[reason] = reasons.get(reason, 0) + 1
    return [f"{reason} ({count} targets)" for reason, count in reasons.items()
            if count > limits.get(reason, 1)]


def plan(*, file: str | None, targets: list[str], jobs: int | None, as_json: bool,
         executor: str | None = None) -> int:
    loaded = load_manifest(file)
    names = selected(loaded, targets)
    executor = executor or loaded.manifest.options.executor or "local"
    placement = _placement(loaded, names) if executor == "ray" else None
    slots = job_slots(loaded, jobs, len(names))
    durations, guessed = earlier_durations(loaded, names)
    graph = g.with_canaries(loaded.graph, names)
    rules = admission_rules(loaded, names)
    waves = g.waves(graph, names, rules)
    critical = g.critical_path(graph, names, durations or None)
    estimate = g.estimate(graph, names, slots, durations or None, rules)
    if as_json:
        print_json({
            "targets": len(names),
            "jobs": slots,
            "waves": waves,
            "critical_path": critical,
            "serialised_by": serialised_by(rules),
            "estimate": {"unit": "seconds" if estimate.known else "targets",
                         "sequential": estimate.sequential, "parallel": estimate.parallel,
                         "guessed": guessed},
            **({"placement": placement} if placement is not None else {}),
        })
        return EXIT_OK
    print(f"{plural(len(names), 'target')} in {plural(len(waves), 'wave')}, -j{slots}")
    for number, wave in enumerate(waves, start=1):
        print(f"  wave {number}: {', '.join(wave)}")
    length = f"{sum(durations[n] for n in critical):.3g}s" if durations else \
        plural(len(critical), "target")
    print(f"critical path ({length}): {' -> '.join(critical)}")
    if serial := serialised_by(rules):
        print(f"serialised by: {'; '.join(serial)}")
    unit = "s" if estimate.known else " target-steps"
    speedup = estimate.sequential / estimate.parallel if estimate.parallel else 1.0
    print(f"estimate: sequential {estimate.sequential:.3g}{unit}, parallel "
          f"{estimate.parallel:.3g}{unit} with -j{slots} ({speedup:.1f}x)")
    if not estimate.known:
        print("  (no earlier runs yet: every target counts as one step)")
    elif guessed:
        print(f"  ({guessed} target(s) never ran: counted at the median of the others)")
    if placement is not None:
        for where, label in (("ray", "on the Ray cluster"), ("here", "here")):
            chosen = [n for n in names if placement.get(n) == where]
            if chosen:
                print(f"{label}: {', '.join(chosen)}")
    return EXIT_OK


def _placement(loaded: LoadedManifest, names: list[str]) -> dict[str, str]:
    """Where a build with the Ray executor runs each target: `ray` (some node of the
    cluster; `report` says which) or `here`."""
    targets = loaded.graph.targets
    return {n: "ray" if goes_to_cluster(loaded, targets[n]) else "here"
            for n in names if targets[n].kind != "group"}

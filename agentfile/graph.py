"""The plan: selection, topological order, waves, critical path and a schedule estimate.

Pure functions over concrete targets; no I/O. The scheduler orders ready targets by the same
key `plan` uses for its estimate: higher priority, then longer remaining path, then file order.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agentfile.manifest.expand import ConcreteTarget


class CycleError(Exception):
    """The dependency graph has a cycle; `cycle` lists it with its first name repeated."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("cycle: " + " -> ".join(cycle))
        self.cycle = cycle


@dataclass(frozen=True, slots=True)
class Graph:
    """Targets by name, their dependencies, and a topological order (file order kept)."""

    targets: Mapping[str, ConcreteTarget]
    order: tuple[str, ...]
    dependents: Mapping[str, tuple[str, ...]]

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(dep, t) for t in self.order for dep in self.targets[t].deps]


def build_graph(targets: Sequence[ConcreteTarget]) -> Graph:
    """Topologically order targets (Kahn's algorithm, ties by file order); raise CycleError."""
    by_name = {t.name: t for t in targets}
    dependents: dict[str, list[str]] = {t.name: [] for t in targets}
    missing = {t.name: len(t.deps) for t in targets}
    for target in targets:
        for dep in target.deps:
            dependents[dep].append(target.name)
    ready = [(t.index, t.name) for t in targets if not t.deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for child in dependents[name]:
            missing[child] -= 1
            if missing[child] == 0:
                heapq.heappush(ready, (by_name[child].index, child))
    if len(order) != len(targets):
        raise CycleError(_find_cycle(by_name, {n for n, left in missing.items() if left}))
    return Graph(by_name, tuple(order), {k: tuple(v) for k, v in dependents.items()})


def _find_cycle(targets: Mapping[str, ConcreteTarget], stuck: set[str]) -> list[str]:
    """A cycle among the targets Kahn's algorithm could not order (iterative DFS)."""
    start = min(stuck, key=lambda n: targets[n].index)
    path = [start]
    seen = {start: 0}
    while True:
        nxt = next(d for d in targets[path[-1]].deps if d in stuck)
        if nxt in seen:
            return [*path[seen[nxt]:], nxt]
        seen[nxt] = len(path)
        path.append(nxt)


def select(graph: Graph, wanted: Iterable[str]) -> list[str]:
    """The wanted targets and everything they need, in topological order."""
    keep: set[str] = set()
    stack = list(wanted)
    while stack:
        name = stack.pop()
        if name not in keep:
            keep.add(name)
            stack.extend(graph.targets[name].deps)
    return [n for n in graph.order if n in keep]


def with_guesses(known: Mapping[str, float],
                 names: Sequence[str]) -> tuple[dict[str, float], int]:
    """Each of `names`' duration: the known one (from earlier runs), else the median of the
    known ones; also how many were guessed. Empty when nothing is known: every target then
    weighs the same."""
    chosen = set(names)
    durations = {n: d for n, d in known.items() if n in chosen}
    if not durations:
        return {}, 0
    median = statistics.median(durations.values())
    guessed = [n for n in names if n not in durations]
    return {**{n: median for n in guessed}, **durations}, len(guessed)


def remaining_path(graph: Graph, names: Sequence[str],
                   durations: Mapping[str, float] | None = None) -> dict[str, float]:
    """For each target, the longest duration from its start to the end of the graph."""
    length: dict[str, float] = {}
    chosen = set(names)
    for name in reversed(names):
        own = (durations or {}).get(name, 1.0)
        after = [length[c] for c in graph.dependents[name] if c in chosen]
        length[name] = own + max(after, default=0.0)
    return length


def waves(graph: Graph, names: Sequence[str]) -> list[list[str]]:
    """Targets grouped by depth: a wave can start once every earlier wave is done."""
    depth: dict[str, int] = {}
    chosen = set(names)
    for name in names:
        deps = [depth[d] for d in graph.targets[name].deps if d in chosen]
        depth[name] = 1 + max(deps, default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in names:
        out[depth[name]].append(name)
    return out


def critical_path(graph: Graph, names: Sequence[str],
                  durations: Mapping[str, float] | None = None) -> list[str]:
    """The chain of dependencies with the longest total duration."""
    if not names:
        return []
    length = remaining_path(graph, names, durations)
    chosen = set(names)
    heads = [n for n in names if not any(d in chosen for d in graph.targets[n].deps)]
    current = max(heads, key=lambda n: (length[n], -graph.targets[n].index))
    path = [current]
    while True:
        children = [c for c in graph.dependents[current] if c in chosen]
        if not children:
            return path
        current = max(children, key=lambda n: (length[n], -graph.targets[n].index))
        path.append(current)


def start_key(target: ConcreteTarget, remaining: float) -> tuple[float, float, int]:
    """Among ready targets, the smallest key starts first (SPEC 5.3)."""
    return (-target.definition.priority, -remaining, target.index)


@dataclass(frozen=True, slots=True)
class Estimate:
    sequential: float
    parallel: float
    known: bool


def estimate(graph: Graph, names: Sequence[str], jobs: int,
             durations: Mapping[str, float] | None = None) -> Estimate:
    """Sequential time against a list-scheduling simulation with `jobs` slots.

    Unknown durations count as one unit each, so the result is then in target-steps.
    """
    known = bool(durations) and all(n in (durations or {}) for n in names)
    cost = {n: (durations or {}).get(n, 1.0) for n in names}
    remaining = remaining_path(graph, names, cost)
    chosen = set(names)
    waiting = {n: sum(1 for d in graph.targets[n].deps if d in chosen) for n in names}
    ready = [(start_key(graph.targets[n], remaining[n]), n) for n in names if not waiting[n]]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < max(jobs, 1):
            _, name = heapq.heappop(ready)
            heapq.heappush(running, (now + cost[name], name))
        now, done = heapq.heappop(running)
        for child in graph.dependents[done]:
            if child in chosen:
                waiting[child] -= 1
                if not waiting[child]:
                    heapq.heappush(ready, (start_key(graph.targets[child], remaining[child]),
                                           child))
    return Estimate(sum(cost.values()), now, known)

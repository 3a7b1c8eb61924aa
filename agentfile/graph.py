"""The plan: selection, topological order, waves, critical path and a schedule estimate.

Pure functions over concrete targets; no I/O. The scheduler orders ready targets by the same
key `plan` uses for its estimate: higher priority, then longer remaining path, then file order;
and `plan` admits them by the scheduler's rules (locks, `exclusive`, the main checkout,
`max_parallel`, canaries), so that its waves and estimate show what a build will do.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

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


def with_canaries(graph: Graph, names: Sequence[str]) -> Graph:
    """The graph as a build runs it: within a fan-out with `canary = N`, every instance
    past the first N also waits for those N."""
    first: dict[str, list[str]] = {}
    for name in names:
        target = graph.targets[name]
        limit = target.definition.canary
        if limit is not None and target.instance is not None and target.instance < limit:
            first.setdefault(target.template, []).append(name)
    if not first:
        return graph
    targets = dict(graph.targets)
    dependents = {k: list(v) for k, v in graph.dependents.items()}
    for name in names:
        target = targets[name]
        limit = target.definition.canary
        if limit is not None and target.instance is not None and target.instance >= limit:
            canaries = first.get(target.template, [])
            targets[name] = replace(target, deps=(*target.deps, *canaries))
            for canary in canaries:
                dependents[canary].append(name)
    return Graph(targets, graph.order, {k: tuple(v) for k, v in dependents.items()})


@dataclass(frozen=True, slots=True)
class Admission:
    """What can keep a target from starting beside others, as the scheduler admits them
    (`Scheduler._admit`): its locks, `exclusive`, its place in the main checkout (`branch`
    has it alone; `dir()` folders that overlap do not run together) and its agent's
    `max_parallel`."""

    locks: frozenset[str] = field(default_factory=frozenset)
    exclusive: bool = False
    checkout: str | None = None  # "branch", "none" or a dir() folder; None: a worktree
    agent: str | None = None
    max_parallel: int | None = None


FREE = Admission()


def held_back(candidate: Admission, running: Sequence[Admission]) -> str | None:
    """Why `candidate` cannot start beside `running` (None: it can). "wait-all": an
    exclusive target that waits for every other, and that nothing else overtakes."""
    if any(r.exclusive for r in running):
        return "exclusive"
    if candidate.exclusive and running:
        return "wait-all"
    if any(candidate.locks & r.locks for r in running):
        return "lock"
    if candidate.max_parallel is not None and sum(
            r.agent == candidate.agent for r in running) >= candidate.max_parallel:
        return "max_parallel"
    if candidate.checkout is not None:
        shared = [r.checkout for r in running if r.checkout is not None]
        if shared and (candidate.checkout == "branch" or "branch" in shared):
            return "checkout"
        if candidate.checkout not in ("branch", "none") and any(
                _overlap(candidate.checkout, other) for other in shared
                if other not in ("branch", "none")):
            return "checkout"
    return None


def _overlap(a: str, b: str) -> bool:
    """Folders (relative, `/`-separated, "." the root) of which one holds the other."""
    if a == "." or b == ".":
        return True
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _admit_round(ready: list[tuple[tuple[float, float, int], str]],
                 running: list[Admission], slots: int,
                 rules: Mapping[str, Admission]) -> list[str]:
    """Start what may start from the `ready` heap, in key order, beside `running` (both
    updated): the scheduler's loop. Those held back stay in `ready`."""
    started: list[str] = []
    skipped = []
    while ready and len(running) < slots:
        key, name = heapq.heappop(ready)
        rule = rules.get(name, FREE)
        reason = held_back(rule, running)
        if reason is not None:
            skipped.append((key, name))
            if reason == "wait-all":
                break
            continue
        running.append(rule)
        started.append(name)
    for item in skipped:
        heapq.heappush(ready, item)
    return started


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


def waves(graph: Graph, names: Sequence[str],
          rules: Mapping[str, Admission] | None = None) -> list[list[str]]:
    """Targets grouped in rounds: a wave starts once every earlier wave is done. Without
    rules, by dependency depth; with them, a target held back (a lock, `exclusive`, the
    checkout, `max_parallel`) moves to a later wave."""
    chosen = set(names)
    if not rules:  # nothing holds a target back: its depth is its wave (one pass)
        depth: dict[str, int] = {}
        for name in names:
            depth[name] = 1 + max((depth[d] for d in graph.targets[name].deps if d in chosen),
                                  default=-1)
        by_depth: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name in names:
            by_depth[depth[name]].append(name)
        return by_depth
    waiting = {n: sum(1 for d in graph.targets[n].deps if d in chosen) for n in names}
    remaining = remaining_path(graph, names)
    ready = [(start_key(graph.targets[n], remaining[n]), n) for n in names if not waiting[n]]
    heapq.heapify(ready)
    out: list[list[str]] = []
    while ready:
        wave = _admit_round(ready, [], len(names), rules or {})
        out.append(sorted(wave, key=lambda n: graph.targets[n].index))
        for done in wave:
            for child in graph.dependents[done]:
                if child in chosen:
                    waiting[child] -= 1
                    if not waiting[child]:
                        heapq.heappush(ready, (start_key(graph.targets[child],
                                                         remaining[child]), child))
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
             durations: Mapping[str, float] | None = None,
             rules: Mapping[str, Admission] | None = None) -> Estimate:
    """Sequential time against a list-scheduling simulation with `jobs` slots, admitting
    targets by `rules` as the scheduler does.

    Unknown durations count as one unit each, so the result is then in target-steps.
    """
    known = bool(durations) and all(n in (durations or {}) for n in names)
    cost = {n: (durations or {}).get(n, 1.0) for n in names}
    remaining = remaining_path(graph, names, cost)
    chosen = set(names)
    waiting = {n: sum(1 for d in graph.targets[n].deps if d in chosen) for n in names}
    ready = [(start_key(graph.targets[n], remaining[n]), n) for n in names if not waiting[n]]
    heapq.heapify(ready)
    running: list[tuple[float, int, str]] = []  # (ends, start order, name)
    started = 0
    now = 0.0
    while ready or running:
        admitted = [(rules or {}).get(n, FREE) for _, _, n in running]
        for name in _admit_round(ready, admitted, max(jobs, 1), rules or {}):
            started += 1
            heapq.heappush(running, (now + cost[name], started, name))
        now, _, done = heapq.heappop(running)
        for child in graph.dependents[done]:
            if child in chosen:
                waiting[child] -= 1
                if not waiting[child]:
                    heapq.heappush(ready, (start_key(graph.targets[child], remaining[child]),
                                           child))
    return Estimate(sum(cost.values()), now, known)

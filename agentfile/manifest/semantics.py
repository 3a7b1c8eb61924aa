"""Checks that need the whole manifest: names that must exist, paths that must stay inside
the repository, placeholders that must mean something, and fan-out into concrete targets.
"""

from __future__ import annotations

import functools
import glob as globlib
from collections.abc import Iterable
from pathlib import Path

from agentfile import regular
from agentfile.errors import Problem, suggest
from agentfile.manifest.expand import (
    RUNTIME_PLACEHOLDERS,
    ConcreteTarget,
    bind_name,
    fanout_stem,
    foreach_values,
    placeholders,
    span_for,
)
from agentfile.manifest.lower import KeyPath, SpanTable
from agentfile.manifest.model import PROVIDERS, DirRef, Foreach, Manifest, Target

_AGENT_ONLY = ("agent", "context")
RESERVED_NAMES = ("options", "include")
# One fan-out instance: its name, definition, variable binding and position in the fan-out.
Row = tuple[str, Target, dict[str, str], int | None]


HINTS = 100  # unknown names given a "did you mean"


class Checker:
    """Collects problems while turning a valid model into concrete targets."""

    def __init__(self, manifest: Manifest, spans: SpanTable, *, base: Path, root: Path,
                 invalid: set[str] | None = None) -> None:
        self.manifest = manifest
        # Names of targets and agents already reported as invalid: not "unknown" as well.
        self.invalid = invalid or set()
        self.spans = spans
        self.base = base
        self.root = root
        self.problems: list[Problem] = []
        # "Did you mean" compares a name with every candidate: for thousands of unknown
        # names among thousands of targets that is minutes. The first ones get a hint.
        self.hints_left = HINTS


    def hint(self, word: str, choices: Iterable[str]) -> str:
        """`; did you mean 'x'?` while hints last, else nothing."""
        if self.hints_left <= 0:
            return ""
        self.hints_left -= 1
        return suggest(word, choices)
    def fail(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(span_for(self.spans, path), message))

    def run(self) -> list[ConcreteTarget]:
        self.check_agents()
        for name, target in self.manifest.targets.items():
            if name not in self.invalid:
                self.check_target(name, target)
        targets = self.fan_out()
        self.check_default(targets)
        return targets

    # -- agents and targets -------------------------------------------------------------

    def agent_names(self) -> list[str]:
        return [*self.manifest.agents, *PROVIDERS]

    def check_agent_ref(self, name: str | None, path: KeyPath) -> None:
        if name is not None and name not in (*self.manifest.agents, *PROVIDERS, *self.invalid):
            self.fail(path, f"unknown agent '{name}'{self.hint(name, self.agent_names())}")

    def check_agents(self) -> None:
        self.check_agent_ref(self.manifest.options.agent, ("options", "agent"))
        self.check_isolation(self.manifest.options.isolation, ("options", "isolation"))
        for name, agent in self.manifest.agents.items():
            path: KeyPath = ("agents", name)
            if agent.provider == "command" and not agent.command:
                self.fail(path, f"agent '{name}' uses the command provider and needs "
                          "`command = \"PROGRAM {prompt_file}\"`")
            if agent.provider != "command" and agent.command:
                self.fail((*path, "command"), f"`command` is for the command provider; "
                          f"'{name}' uses {agent.provider}")
            if agent.command:
                # One agent serves many targets: any fan-out variable may appear.
                fanout_vars = {t.foreach.var for t in self.manifest.targets.values()
                               if t.foreach is not None}
                self.check_placeholders(agent.command, (*path, "command"), fanout_vars,
                                        set())

    def check_target(self, name: str, target: Target) -> None:
        path: KeyPath = ("targets", name)
        if name in RESERVED_NAMES:
            self.fail(path, f"'{name}' cannot name a target: in the Agentfile language it "
                      "begins a statement")
        if target.prompt is not None and target.run is not None:
            self.fail((*path, "run"), f"target '{name}' has both prompt and run; an agent "
                      "target has a prompt, a run target a command")
        if target.kind != "agent":
            for attr in _AGENT_ONLY:
                if getattr(target, attr):
                    self.fail((*path, attr), f"'{attr}' is for agent targets (with a prompt)")
        if target.kind == "group":
            for attr in ("verify", "isolation", "budget", "terminal"):
                if getattr(target, attr) is not None:
                    self.fail((*path, attr), f"'{attr}' needs a prompt or run; "
                              f"'{name}' is a group target (dependencies only)")
        self.check_agent_ref(target.agent, (*path, "agent"))
        self.check_isolation(target.isolation, (*path, "isolation"))
        if target.prompt is not None and not isinstance(target.prompt, str):
            self.check_file(target.prompt.file, (*path, "prompt"))
        for index, context in enumerate(target.context):
            self.check_file(context, (*path, "context", index))
        for index, pattern in enumerate(target.inputs):
            self.check_input(pattern, (*path, "inputs", index))
        for index, copied in enumerate(target.copy_files):  # into the target's worktree
            if Path(copied).is_absolute() or ".." in Path(copied).parts:
                self.fail((*path, "copy", index), f"copy path '{copied}' must stay inside "
                          "the repository (a relative path without '..')")
        var = target.foreach.var if target.foreach else None
        unbound = sorted(set(placeholders(name)) - {var})
        if unbound:
            self.fail(path, f"target name '{name}' has {{{unbound[0]}}} but no "
                      f"`foreach {unbound[0]} in …`")
        names = set(placeholders(name))
        if var is not None and var not in names:
            self.fail((*path, "foreach"), f"a fan-out target's name must contain {{{var}}}")
        if target.foreach is not None and target.foreach.glob is not None:
            self.check_glob(target.foreach.glob, (*path, "foreach"))
        if target.canary is not None and target.foreach is None:
            self.fail((*path, "canary"), "canary needs a fan-out (`foreach`)")
        local = {var} if var else set()
        dep_names = set(target.deps)
        for attr in ("prompt", "run", "verify"):
            text = getattr(target, attr)
            if isinstance(text, str):
                self.check_placeholders(text, (*path, attr), local, dep_names)

    def check_placeholders(self, text: str, path: KeyPath, local: set[str],
                           deps: set[str]) -> None:
        known = [*RUNTIME_PLACEHOLDERS, *sorted(local)]
        for name in placeholders(text):
            if name in known:
                continue
            parts = name.split(".")
            if parts[0] == "deps":
                if len(parts) < 3 or parts[-1] not in ("result", "diff"):
                    self.fail(path, f"placeholder {{{name}}}: write {{deps.NAME.result}} or "
                              "{deps.NAME.diff}")
                    continue
                dep = ".".join(parts[1:-1])
                if dep not in deps and not self.instance_of(dep, deps):
                    hint = self.hint(dep, deps)
                    self.fail(path, f"placeholder {{{name}}} names '{dep}', which is not a "
                              f"dependency of this target{hint}")
                continue
            hint = self.hint(name, known)
            self.fail(path, f"unknown placeholder {{{name}}}{hint} (write {{{{ for a brace)")

    def instance_of(self, name: str, deps: set[str]) -> bool:
        """Whether `name` may be an instance of a fan-out the target depends on by its stem
        (`big/p` of `big`, for `big/{x}`): which instances there are is known only after
        fan-out, where a name that is none of them reads as empty."""
        return any(name.startswith(f"{d}/") and d in self.stems for d in deps)

    @functools.cached_property
    def stems(self) -> set[str | None]:
        """The names that stand for all of a fan-out's instances."""
        return {fanout_stem(t) for t in self.manifest.targets}

    def check_isolation(self, isolation: object, path: KeyPath) -> None:
        if isinstance(isolation, DirRef):
            self.check_inside(isolation.dir, path, "dir()")
            if not (self.base / isolation.dir).is_dir() and self.inside(isolation.dir):
                self.fail(path, f"dir(\"{isolation.dir}\") does not exist")

    def inside(self, relative: str) -> bool:
        try:
            resolved = (self.base / relative).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL: reading says why
            return True
        return resolved == self.root or self.root in resolved.parents

    def check_inside(self, relative: str, path: KeyPath, what: str) -> None:
        if not self.inside(relative):
            self.fail(path, f"{what} path '{relative}' is outside the repository ({self.root})")

    def check_file(self, relative: str, path: KeyPath) -> None:
        """A file whose content goes into a prompt or a list: a regular file (not a device or
        a FIFO, which never end or block), not too large, inside the repository (what is
        outside reaches prompts, and so a provider)."""
        if not self.inside(relative):
            self.fail(path, f"'{relative}' is outside the repository ({self.root}): name a "
                      "file inside it")
            return
        refused = _refusal(self.base / relative)
        if isinstance(refused, FileNotFoundError):
            self.fail(path, f"no such file: '{relative}'")
        elif refused is not None:
            self.fail(path, f"cannot read '{relative}': {refused.strerror}")

    def check_input(self, pattern: str, path: KeyPath) -> None:
        """An `inputs` pattern: inside the repository; a file it names, a regular one."""
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts or \
                not self.inside(pattern):
            self.fail(path, f"inputs \"{pattern}\" must stay inside the repository "
                      "(a relative path or pattern without '..')")
            return
        if not globlib.has_magic(pattern):
            refused = _refusal(self.base / pattern)
            if refused is not None and not isinstance(refused, FileNotFoundError):
                self.fail(path, f"cannot read input '{pattern}': {refused.strerror}")

    # -- fan-out and dependencies -------------------------------------------------------

    def fan_out(self) -> list[ConcreteTarget]:
        instances: dict[str, list[Row]] = {}
        for template, target in self.manifest.targets.items():
            path: KeyPath = ("targets", template, "foreach")
            if target.foreach is None:
                instances[template] = [(template, target, {}, None)]
                continue
            values = self.foreach_values(target.foreach, path)
            seen: set[str] = set()
            rows: list[Row] = []
            for position, value in enumerate(values):
                bound = {target.foreach.var: value}
                name = bind_name(template, bound)
                if name in seen or not name.isprintable():
                    self.fail(path, f"fan-out value '{value}' gives "
                              + ("a duplicate" if name in seen else "an invalid")
                              + f" target name '{name}'")
                    continue
                seen.add(name)
                rows.append((name, target, bound, position))
            instances[template] = rows
        groups = self.groups(instances)
        concrete: list[ConcreteTarget] = []
        names: set[str] = set()
        for template, rows in instances.items():
            for name, target, bound, number in rows:
                if name in names:
                    self.fail(("targets", template), f"fan-out instance '{name}' has the "
                              "same name as another target")
                    continue
                names.add(name)
                deps = self.resolve_deps(template, target, bound, groups, instances)
                concrete.append(ConcreteTarget(name, template, target, deps, bound,
                                               len(concrete), number))
        return concrete

    def foreach_values(self, foreach: Foreach, path: KeyPath) -> list[str]:
        """A fan-out's values; none, and a problem, when its file cannot be read or its glob
        would look outside the repository (refused before walking a single folder)."""
        if foreach.glob is not None and _outside(foreach.glob):
            return []  # check_glob says why
        if foreach.lines is not None and (_outside(foreach.lines) or
                                          not self.inside(foreach.lines)):
            self.fail(path, f"lines(\"{foreach.lines}\") must name a file inside the "
                      "repository (a relative path without '..')")
            return []
        try:
            return foreach_values(foreach, self.base)
        except OSError as err:
            self.fail(path, f"cannot read '{foreach.lines}': {err.strerror}")
        except UnicodeDecodeError:
            self.fail(path, f"cannot read '{foreach.lines}': not UTF-8 text")
        return []

    def groups(self, instances: dict[str, list[Row]]) -> dict[str, list[str]]:
        """Every name a dependency may use: concrete names, templates and fan-out stems."""
        groups: dict[str, list[str]] = {}
        for template, rows in instances.items():
            names = [row[0] for row in rows]
            groups[template] = names
            stem = fanout_stem(template)
            if stem and stem != template:
                if stem in self.manifest.targets:
                    self.fail(("targets", template), f"fan-out '{template}' and target "
                              f"'{stem}' share the name '{stem}'")
                groups.setdefault(stem, []).extend(names)
            if "{" in template:
                for name in names:
                    groups.setdefault(name, [name])
        return groups

    def resolve_deps(self, template: str, target: Target, bound: dict[str, str],
                     groups: dict[str, list[str]],
                     instances: dict[str, list[Row]]) -> tuple[str, ...]:
        deps: list[str] = []
        for index, dep in enumerate(target.deps):
            path: KeyPath = ("targets", template, "deps", index)
            paired = bind_name(dep, bound) if bound else dep
            if paired != dep and paired in groups:
                deps.append(paired)
            elif dep in groups:
                deps.extend(groups[dep])
            elif dep not in self.invalid:
                self.fail(path, f"'{template}' depends on unknown target '{dep}'"
                          f"{self.hint(dep, [*instances, *groups])}")
        return tuple(dict.fromkeys(deps))

    def check_glob(self, pattern: str, path: KeyPath) -> None:
        if _outside(pattern):
            self.fail(path, f"glob(\"{pattern}\") must stay inside the repository "
                      "(a relative pattern without '..')")

    def check_default(self, targets: list[ConcreteTarget]) -> None:
        default = self.manifest.options.default or []
        known = {t.name for t in targets} | set(self.manifest.targets)
        known |= {s for s in (fanout_stem(t) for t in self.manifest.targets) if s}
        for index, name in enumerate(default):
            if name not in known:
                self.fail(("options", "default", index),
                          f"default target '{name}' is unknown{self.hint(name, known)}")


def _outside(pattern: str) -> bool:
    """A path or glob that names something outside the repository by its spelling alone."""
    return Path(pattern).is_absolute() or ".." in Path(pattern).parts


def _refusal(path: Path) -> OSError | None:
    try:
        return regular.refusal(path)
    except ValueError as err:  # a NUL, or a lone surrogate the file system cannot spell
        return OSError(0, str(err))

"""Where a build's files live under `.agentfile/` (SPEC 5.6), and run ids."""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from agentfile.errors import UsageError

STATE_DIR = ".agentfile"


def new_run_id(now: float | None = None) -> str:
    """`YYYYmmdd-HHMMSS-xxxx`: sortable by time, unique by its random tail."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{secrets.token_hex(2)}"


@functools.lru_cache(maxsize=8192)  # each target's files are asked for several times
def target_path(name: str) -> str:
    """A target name as a relative path: `/` keeps its meaning, nothing can climb out, and
    no part is longer than a file name may be. Folders never hold a dot, so that no folder
    is named as a file beside it (`a.log/x` next to `a`, whose log is `a.log`)."""
    *folders, last = name.split("/")
    parts = [_fits(quote(part, safe="-_{}@+=,").replace(".", "%2E")) for part in folders]
    text = quote(last, safe="-_.{}@+=,")
    parts.append(_fits(text.replace(".", "%2E") if text in ("", ".", "..") else text))
    return "/".join(parts)


def flat_path(name: str) -> str:
    """A target name as one folder name (`/` encoded too): worktrees are siblings, so that
    no target's worktree is inside another's (`review/a` inside `review`)."""
    text = quote(name, safe="-_.{}@+=,")
    return _fits(text.replace(".", "%2E") if text in ("", ".", "..") else text)


def ref_safe(name: str) -> str:
    """A target name as the last part of a git branch name (git check-ref-format's rules),
    `/` encoded too: git cannot hold a branch `…/rev` beside `…/rev/a`."""
    # `~` is not allowed in a branch name: neither a name's own nor the one _fits adds.
    return _fits(quote(name, safe="-_").replace(".", "%2E")).replace("~", "%7E")


MAX_PART = 200  # bytes of one path part: file systems allow 255, and suffixes follow


def _fits(part: str) -> str:
    """A path part short enough for a file name: a long one is cut, and keeps a hash of the
    whole so that two long names never meet."""
    if len(part) <= MAX_PART:
        return part
    digest = hashlib.sha256(part.encode()).hexdigest()[:16]
    return f"{part[:MAX_PART - 17]}~{digest}"


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths of one repository's state."""

    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def database(self) -> Path:
        return self.state_dir / "state.sqlite"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "build.lock"

    @property
    def schema(self) -> Path:
        """A copy of the JSON Schema, for editors: YAML/JSON manifests name it relatively."""
        return self.state_dir / "agentfile.schema.json"

    @property
    def pool_dir(self) -> Path:
        """The pooled worktrees of `worktrees = reuse` (isolation/pool.py)."""
        return self.state_dir / "pool"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def ensure(self) -> None:
        """Create `.agentfile/` with a `.gitignore` of `*`, so git never sees it; a place
        where it cannot be (a file of that name, no permission) is the user's to fix."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            ignore = self.state_dir / ".gitignore"
            if not ignore.exists():
                ignore.write_text("*\n")
        except OSError as err:
            why = "a file of that name is in the way" if self.state_dir.is_file() else \
                err.strerror or str(err)
            raise UsageError(f"cannot keep build state in {self.state_dir}: {why}") from None


def raw_log(log: Path) -> Path:
    """Beside a target's log `NAME.log`, its agent's stream for machines: `NAME.jsonl`."""
    return log.with_suffix(".jsonl")


@dataclass(frozen=True)
class RunFiles:
    """Paths of one build's files: events, summary, and per-target logs, prompts, results."""

    dir: Path

    # Each folder joined once: a build asks for thousands of paths under them.
    @functools.cached_property
    def _logs(self) -> Path:
        return self.dir / "logs"

    @functools.cached_property
    def _prompts(self) -> Path:
        return self.dir / "prompts"

    @functools.cached_property
    def _results(self) -> Path:
        return self.dir / "results"

    @functools.cached_property
    def _usage(self) -> Path:
        return self.dir / "usage"

    @property
    def events(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def summary(self) -> Path:
        return self.dir / "summary.json"

    def log(self, target: str) -> Path:
        return self._logs / f"{target_path(target)}.log"

    def raw(self, target: str) -> Path:
        """An agent's output stream as its CLI wrote it (the log has what a person reads)."""
        return raw_log(self.log(target))

    def setup_log(self, target: str) -> Path:
        """The output of `setup` run for the target (not in `logs/`: a target may be named
        `x.setup`)."""
        return self.dir / "setup" / f"{target_path(target)}.log"

    def prompt(self, target: str) -> Path:
        return self._prompts / f"{target_path(target)}.md"

    def result(self, target: str) -> Path:
        return self._results / f"{target_path(target)}.md"

    def diff(self, target: str) -> Path:
        return self.dir / "diffs" / f"{target_path(target)}.diff"

    def usage(self, target: str) -> Path:
        return self._usage / f"{target_path(target)}.json"

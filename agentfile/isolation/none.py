"""`isolation = none`: the target runs at the repository root, in the user's checkout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentfile.isolation.base import Workspace


@contextmanager
def none_workspace(root: Path) -> Iterator[Workspace]:
    yield Workspace(path=root, mode="none")

"""Where the manifest is, and the repository it belongs to (SPEC 1), without reading it.

Commands that look at what builds left behind (`runs`, `logs`, `status`, `report`, `clean`,
`attach`) need only the repository's root: they work while the manifest is being edited, or
is broken, and do not pay for loading the manifest's model.
"""

from __future__ import annotations

from pathlib import Path

from agentfile import regular
from agentfile.errors import UsageError

MANIFEST_LIMIT = 64 << 20  # bytes: a manifest of 10,000 targets is a few MiB
MANIFEST_NAMES = ("Agentfile", "Agentfile.yaml", "Agentfile.yml", "Agentfile.json",
                  "agentfile", "agentfile.yaml", "agentfile.yml", "agentfile.json")


def git_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def find_manifest(start: Path) -> Path:
    """The manifest in `start`, else in its parents up to the git root (SPEC 1)."""
    start = start.resolve()
    top = git_root(start)
    folders = [start] if top is None else [start, *start.parents[: len(start.parents)
                                                                  - len(top.parents)]]
    for folder in folders:
        names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        for name in MANIFEST_NAMES:
            if name in names:
                return _readable(folder / name)
    where = f"{start}" + (f" or its parents up to {top}" if top and top != start else "")
    raise UsageError(f"no Agentfile in {where} (run `agentfile init` to write one)")


def manifest_path(file: str | None) -> Path:
    """`-f FILE` if given (it must exist), else the discovered manifest."""
    if file is None:
        return find_manifest(Path.cwd())
    path = Path(file)
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"no such manifest: {file}")
    return _readable(path)


def _readable(path: Path) -> Path:
    """The manifest, if it is a regular file that may be read whole: a FIFO would block the
    read, /dev/zero never end, a symlink loop never resolve."""
    refused = regular.refusal(path, limit=MANIFEST_LIMIT)
    if refused is not None:
        raise UsageError(f"cannot read the manifest {path}: {refused.strerror}")
    return path


def repository_root(manifest: Path) -> Path:
    """Where `.agentfile/` lives for this manifest: its git repository's root, else its
    folder."""
    folder = manifest.resolve().parent
    return git_root(folder) or folder

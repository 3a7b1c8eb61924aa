"""Where the manifest is, and the repository it belongs to (SPEC 1), without reading it.

Commands that look at what builds left behind (`runs`, `logs`, `status`, `report`, `clean`,
`attach`) need only the repository's root: they work while the manifest is being edited, or
is broken, and do not pay for loading the manifest's model.
"""

from __future__ import annotations

from pathlib import Path

from agentfile.errors import UsageError

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
                return folder / name
    where = f"{start}" + (f" or its parents up to {top}" if top and top != start else "")
    raise UsageError(f"no Agentfile in {where} (run `agentfile init` to write one)")


def manifest_path(file: str | None) -> Path:
    """`-f FILE` if given (it must exist), else the discovered manifest."""
    if file is None:
        return find_manifest(Path.cwd())
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"no such manifest: {file}")
    return path


def repository_root(manifest: Path) -> Path:
    """Where `.agentfile/` lives for this manifest: its git repository's root, else its
    folder."""
    folder = manifest.resolve().parent
    return git_root(folder) or folder

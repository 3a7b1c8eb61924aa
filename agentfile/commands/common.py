"""What several commands share: finding and loading the manifest, printing JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from agentfile.errors import UsageError
from agentfile.manifest.load import LoadedManifest, find_manifest, load


def manifest_path(file: str | None) -> Path:
    """`-f FILE` if given (it must exist), else the discovered manifest."""
    if file is None:
        return find_manifest(Path.cwd())
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"no such manifest: {file}")
    return path


def load_manifest(file: str | None) -> LoadedManifest:
    return load(manifest_path(file))


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


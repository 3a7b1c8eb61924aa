"""What several commands share: loading the manifest, printing JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentfile.errors import UsageError
from agentfile.manifest.locate import manifest_path

if TYPE_CHECKING:  # the model (pydantic) loads only for commands that read the manifest
    from agentfile.manifest.load import LoadedManifest


def load_manifest(file: str | None) -> LoadedManifest:
    from agentfile.manifest.load import load

    return load(manifest_path(file))


def write_output(file: str, text: str) -> None:
    """`-o FILE` / `--html FILE`: a place that cannot take the file is the user's to fix."""
    try:
        Path(file).write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write {file}: {err.strerror or err}") from None


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


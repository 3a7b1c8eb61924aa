"""`options.dotenv`: variables from a dotenv file, read by python-dotenv (only here).

They stand where the environment does, under it: `${VAR}` in the manifest finds the manifest's
variables, then the environment, then the dotenv file's; every target's process gets them
too (the environment's own value wins, as with python-dotenv's `load_dotenv`). A file that is
not there defines nothing, since such files are kept out of version control.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from agentfile.errors import Problem
from agentfile.manifest.expand import span_for
from agentfile.manifest.lower import SpanTable


def read_dotenv(doc: Mapping[str, Any], spans: SpanTable,
                base: Path) -> tuple[dict[str, str], list[Problem]]:
    """The variables of the document's `options.dotenv` file, relative to `base`."""
    options = doc.get("options")
    name = options.get("dotenv") if isinstance(options, dict) else None
    if not isinstance(name, str):  # none, or not a string: the schema says so
        return {}, []
    path = base / name
    if not path.exists():
        return {}, []
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        return {}, [Problem(span_for(spans, ("options", "dotenv")),
                            f"cannot read the dotenv file '{name}': {why}")]
    # `NAME` alone on a line has no value: it sets nothing.
    return {key: value for key, value in values.items() if value is not None}, []

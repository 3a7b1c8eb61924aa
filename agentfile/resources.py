"""Files shipped beside the code: the grammar and the JSON Schema.

In a wheel they live in `agentfile/_data/`; in a source checkout (editable install, tests) they
are read from the top-level `grammar/` and `schema/` directories they are committed in.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def resource_path(name: str) -> Path:
    """The path of a shipped file: `agentfile.lark` or `agentfile.schema.json`."""
    shipped = _PACKAGE / "_data" / name
    if shipped.is_file():
        return shipped
    folder = "grammar" if name.endswith(".lark") else "schema"
    return _CHECKOUT / folder / name


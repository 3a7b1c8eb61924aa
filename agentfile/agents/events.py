"""Reading a CLI's JSON-lines output, shared by the providers."""

from __future__ import annotations

import json
from typing import Any


def json_line(line: str) -> dict[str, Any] | None:
    """One event, or None for a line that is not a JSON object (banners, warnings)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def number(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

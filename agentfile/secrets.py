"""Secrets never reach logs, events, prompts or reports.

The values of environment variables whose names contain KEY, TOKEN, SECRET or PASSWORD are
replaced by `***` wherever agentfile writes text it did not get from the user's manifest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
MASK = "***"
_MIN_LENGTH = 4  # shorter values would mask ordinary words


class Redactor:
    def __init__(self, environ: Mapping[str, str]) -> None:
        values = {v for k, v in environ.items() if _SECRET_NAME.search(k)
                  and len(v) >= _MIN_LENGTH}
        self.pattern = (re.compile("|".join(re.escape(v) for v in sorted(values, key=len,
                                                                          reverse=True)))
                        if values else None)

    def text(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern and text else text

    def value(self, value: Any) -> Any:
        if self.pattern is None:
            return value  # no secrets: nothing to copy
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value


_default: Redactor | None = None


def configure(environ: Mapping[str, str]) -> Redactor:
    """Set the secrets of this process (the build's environment, including targets' env)."""
    global _default
    _default = Redactor(environ)
    return _default


def redactor() -> Redactor:
    global _default
    if _default is None:
        _default = Redactor(os.environ)
    return _default


def redact(value: Any) -> Any:
    return redactor().value(value)

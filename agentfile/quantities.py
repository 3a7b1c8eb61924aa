"""Typed quantities of the language (SPEC 2.1): durations, sizes, money, percentages, tokens.

Pure functions from text to numbers and back; each raises ValueError with a message fit for a
user. Used by the model's validators and by the lowering of `budget = $1.50, 10m, 2GiB`.
"""

from __future__ import annotations

import re
from decimal import Decimal

DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*(B|[KMGT]i?B|[kmgt]i?b)?\s*$"
PERCENT_PATTERN = r"^\s*\d+(\.\d+)?\s*%\s*$"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# The whole literal first, matched from its start only: findall alone would try every digit
# of a long run like 1111…1x as a start, time quadratic in its length.
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_TOKEN_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "m": 10**6, "G": 10**9}
_TOKENS = re.compile(r"(\d+(?:\.\d+)?)([kKmMG]?)")


def parse_duration(text: str) -> float:
    """`30s`, `10m`, `1h30m`, `250ms` -> seconds."""
    compact = text.strip()
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"'{text}' is not a duration (write e.g. 30s, 10m, 2h, 1h30m)")
    # Matched whole, its parts follow one another: each ends in a unit, the next starts with
    # a digit, so findall cuts it the same way.
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(compact))


def parse_size(text: str) -> int:
    """`512MiB`, `2GiB`, `1GB`, `1024` -> bytes."""
    match = _SIZE.fullmatch(text.strip())
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _SIZE_UNITS):
        raise ValueError(f"'{text}' is not a size (write e.g. 512MiB, 2GiB, 1GB)")
    return _whole(float(match.group(1)) * _SIZE_UNITS.get(unit, 1), text)


def parse_percent(text: str) -> float:
    """`85%` -> 85.0."""
    stripped = text.strip()
    try:
        if not stripped.endswith("%"):
            raise ValueError
        value = float(stripped[:-1])
    except ValueError:
        raise ValueError(f"'{text}' is not a percentage (write e.g. 85%)") from None
    if not 0 <= value <= 100:
        raise ValueError(f"'{text}' is not between 0% and 100%")
    return value


def parse_tokens(text: str) -> int:
    """`200k`, `1.5M`, `5000` -> a token count."""
    match = _TOKENS.fullmatch(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not a token count (write e.g. 200k tokens)")
    return _whole(float(match.group(1)) * _TOKEN_SUFFIX[match.group(2)], text)


def _whole(value: float, text: str) -> int:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"'{text[:40]}' is out of range")
    return int(value)


def classify(text: str) -> str:
    """Which kind a unit-bearing literal is: `duration`, `size`, `percent` or `tokens`."""
    for kind, parser in (("duration", parse_duration), ("size", parse_size),
                         ("percent", parse_percent), ("tokens", parse_tokens)):
        try:
            parser(text)
        except ValueError:
            continue
        return kind
    raise ValueError(f"'{text}' is not a duration, size, percentage or token count")


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact spelling (`90` -> `1m30s`)."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    remaining = int(seconds)
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            out += f"{remaining // size}{unit}"
            remaining %= size
    return out or "0s"


def format_size(size: int) -> str:
    """Bytes -> the shortest exact binary spelling (`2147483648` -> `2GiB`)."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _SIZE_UNITS[unit.lower()]
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def plain_decimal(value: float) -> str:
    """A float as the shortest decimal that reads back to it, never with an exponent
    (the language's numbers have none): `1e-05` -> `0.00001`."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_money(usd: float) -> str:
    """`1.5` -> `$1.50`; amounts finer than a cent keep every digit."""
    if usd == int(usd):
        return f"${plain_decimal(usd)}"
    return f"${usd:.2f}" if round(usd, 2) == usd else f"${plain_decimal(usd)}"


def format_number(value: float) -> str:
    return str(int(value)) if value == int(value) else plain_decimal(value)

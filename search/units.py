"""Counts and durations as people write them, parsed and formatted in one place.

Counts: ``1200000``, ``"1.2M"``, ``"50K"``, ``"2G"``, ``"1e6"``, ``"1_000"``, ``"1,000"``.
Durations: ``90`` (seconds), ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``, ``"1h30m"``.
Each parser raises ValueError with one line saying what is accepted; the formatters write
what the parsers read back.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hpsearch.trainables.errors import shown

__all__ = [
    "COUNT_SUFFIXES",
    "DURATION_UNITS",
    "format_clock",
    "format_compact",
    "format_count",
    "format_duration",
    "parse_count",
    "parse_duration",
]

COUNT_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_COUNT = re.compile(r"(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmg]?)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_count(value: str | int | float) -> int:
    """``"1.2M"`` -> 1200000; also ``"50K"``, ``"2G"``, ``"1e6"``, ``"1_000"``, ``"1,000"``.

    Raises:
        ValueError: Not a positive (>= 1), finite count.
    """
    number: float | None = None
    if _real(value):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(",", "").replace("_", "")
        m = _COUNT.fullmatch(text)
        if m:
            number = float(m[1]) * COUNT_SUFFIXES[m[2]]
    if number is None or not number >= 1 or not math.isfinite(number):
        raise ValueError(f"expected a positive count like 1200000, '1.2M', '50K' or '2G' "
                         f"(got {shown(value)})")
    return round(number)


def format_count(n: float, suffix: str | None = None, digits: int = 3) -> str:
    """``n`` with a K/M/G suffix: ``1200000`` -> ``"1.2M"``; ``parse_count`` reads it back.

    Without ``suffix`` the largest one that keeps the number >= 1 is used and trailing zeros
    go (at most ``digits`` decimals); with ``suffix`` (``"K"``, ``"M"``, ``"G"`` or ``""``)
    exactly ``digits`` decimals are written, e.g. ``format_count(390634, "M", 6)`` ->
    ``"0.390634M"``.
    """
    if suffix is None:
        suffix = next((s for s in "GMK" if abs(n) >= COUNT_SUFFIXES[s.lower()]), "")
        text = f"{n / COUNT_SUFFIXES[suffix.lower()]:.{digits}f}"
        return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix
    return f"{n / COUNT_SUFFIXES[suffix.lower()]:.{digits}f}{suffix}"


def format_compact(n: float, significant: int = 3) -> str:
    """``n`` to ``significant`` digits with a K/M/G suffix, for a reader: ``13286`` ->
    ``"13.3K"``, ``207098`` -> ``"207K"``, ``1218000`` -> ``"1.22M"``, ``512`` -> ``"512"``;
    ``parse_count`` reads it back (rounded)."""
    if not math.isfinite(n) or n == 0:
        return f"{n:g}"
    rounded = float(f"{n:.{significant}g}")  # 999_950 -> 1e6: the suffix follows the rounding
    suffix = next((s for s in "GMK" if abs(rounded) >= COUNT_SUFFIXES[s.lower()]), "")
    scaled = rounded / COUNT_SUFFIXES[suffix.lower()]
    decimals = max(0, significant - 1 - math.floor(math.log10(abs(scaled))))
    text = f"{scaled:.{decimals}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix


def parse_duration(value: str | int | float) -> float:
    """``"1h30m"`` -> 5400.0 seconds; also ``90``, ``"90"``, ``"90s"``, ``"30m"``, ``"2d"``.

    Raises:
        ValueError: Not a positive number of seconds or such a duration.
    """
    seconds: float | None = None
    if _real(value):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif parts and "".join(n + u for n, u in parts) == text:
            seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if seconds is None or not seconds > 0:
        raise ValueError(f"expected a positive number of seconds or a duration like '90s', "
                         f"'30m', '2h' (got {shown(value)})")
    return seconds


def format_duration(seconds: float) -> str:
    """Whole seconds as ``"1h30m"``, ``"2d"``, ``"45s"`` (``"0s"`` under half a second);
    ``parse_duration`` reads it back."""
    rest = max(0, round(seconds))
    parts = []
    for unit, size in DURATION_UNITS.items():
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


def format_clock(seconds: float) -> str:
    """Whole seconds on a clock: ``"1:02:03"``, or ``"2:03"`` under an hour."""
    total = int(max(0, seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

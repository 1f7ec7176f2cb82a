"""The one exception type for mistakes a user can fix: one line, no traceback; and how such a
line shows the value a user gave (cut short, so a huge value cannot flood the terminal)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from itertools import islice
from typing import Any

__all__ = ["MAX_SHOWN", "UserError", "closest", "cut", "shown"]

MAX_SHOWN = 200  # characters of a quoted value


class UserError(ValueError):
    """Bad input from a user (a config value, a name, a path): printed as one line, exit code 2."""


def closest(name: str, allowed: Iterable[str]) -> str | None:
    """The allowed name nearest to ``name`` (difflib), or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None


def cut(text: str, limit: int = MAX_SHOWN) -> str:
    """``text``, or its first ``limit - 1`` characters and '…' when it is longer."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to ``limit`` characters, for the ``got ...`` part of a message.

    A long str, bytes, list, tuple or dict is shortened to ``limit`` items before ``repr``
    (whose text is longer than ``limit`` still, so the '…' shows), so that a value of ten
    million items costs no more than a short one.
    """
    if isinstance(value, str | bytes | list | tuple) and len(value) > limit:
        value = value[:limit]
    elif isinstance(value, dict) and len(value) > limit:
        value = dict(islice(value.items(), limit))
    return cut(repr(value), limit)

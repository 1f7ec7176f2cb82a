"""The one exception type for mistakes a user can fix: one line, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UserError", "closest"]


class UserError(ValueError):
    """Bad input from a user (a config value, a name, a path): printed as one line, exit code 2."""


def closest(name: str, allowed: Iterable[str]) -> str | None:
    """The allowed name nearest to ``name`` (difflib), or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None

"""The one rule for a name from user input that becomes a folder (a sweep under the storage
root, an MLflow experiment's artifacts, a report under results/): it cannot leave its parent."""

from __future__ import annotations

import re

from hpsearch.trainables.errors import UserError, shown

__all__ = ["check_plain", "plain_name"]

MAX_NAME = 100
_PLAIN = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_NAME}}}")


def check_plain(value: str) -> str:
    """``value`` if it is a plain folder name, else a ValueError saying what is allowed."""
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value not in (".", ".."):
        return value
    raise ValueError(f"must be a plain folder name (1-{MAX_NAME} letters, digits, '.', '_', "
                     f"'-'; not '.' or '..'), but got {shown(value)}")


def plain_name(value: str, where: str) -> str:
    """``value`` if it is a plain folder name, else a one-line UserError about ``where``."""
    try:
        return check_plain(value)
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None

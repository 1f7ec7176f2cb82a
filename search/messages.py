"""How error lines show what a user gave: values cut short, one printable line each.

``cut``, ``shown`` and ``MAX_SHOWN`` live in :mod:`trainables.errors` (trainables imports
nothing from search/) and are re-exported here.
"""

from __future__ import annotations

import re

from hpsearch.trainables.errors import MAX_SHOWN, cut, shown

__all__ = ["MAX_LINE", "MAX_LINES", "MAX_SHOWN", "cut", "error_lines", "shown"]

MAX_LINE = 500  # characters of an error line, whatever it quotes
MAX_LINES = 20  # error lines printed; the rest are counted
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def error_lines(text: str) -> list[str]:
    """The lines of an error, each cut to MAX_LINE with control characters escaped (a spec
    cannot drive the terminal); past MAX_LINES, one line counting the rest."""
    lines = text.splitlines()
    out = [cut(_CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", line), MAX_LINE)
           for line in lines[:MAX_LINES]]
    if len(lines) > MAX_LINES:
        out.append(f"... and {len(lines) - MAX_LINES} more problem(s)")
    return out

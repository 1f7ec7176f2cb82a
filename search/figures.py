"""How a trial is drawn and its confusion matrix written, shared by the MLflow artifacts
(:mod:`search.tracking`) and the report (:mod:`search.report`): one look, one file format.

Axes-level only (no figure, no backend), so each caller keeps its own sizes and margins.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CONFUSION_CSV", "CONFUSION_PNG", "CURVES_PNG", "confusion_csv", "draw_confusion",
           "draw_series", "read_confusion"]

# A trial's artifact files in MLflow.
CURVES_PNG = "curves.png"
CONFUSION_CSV = "confusion.csv"
CONFUSION_PNG = "confusion.png"


def draw_series(ax: Any, epochs: Sequence[float], series: Mapping[str, Sequence[Any]],
                ylabel: str) -> None:
    """Lines of per-epoch values on ``ax`` (non-numbers skipped), whole-number epoch ticks,
    and a "not finite" note when nothing could be drawn (a diverged trial)."""
    from matplotlib.ticker import MaxNLocator

    markers = ("o", "s", "^", "d")
    drawn = False
    for i, (label, values) in enumerate(series.items()):
        pts = [(e, float(v)) for e, v in zip(epochs, values, strict=True)
               if isinstance(v, numbers.Real) and math.isfinite(v)]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=markers[i % len(markers)],
                    linestyle="-" if i == 0 else "--", label=label)
            drawn = True
    if not drawn and len(epochs):
        ax.text(0.5, 0.5, "not finite", transform=ax.transAxes, ha="center")
    last = int(max(epochs, default=1))
    ax.set_xlim(0.5, last + 0.5)
    if last <= 20:
        ax.set_xticks(range(1, last + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)


def draw_confusion(ax: Any, matrix: list[list[float]]) -> None:
    """A confusion matrix ``[true][predicted]`` as a heatmap on ``ax``, counts written in
    each cell up to 20 classes."""
    image = ax.imshow(matrix, cmap="Blues")
    ax.figure.colorbar(image, ax=ax)
    if len(matrix) <= 20:
        ax.set_xticks(range(len(matrix[0]) if matrix else 0))
        ax.set_yticks(range(len(matrix)))
        top = max((max(row) for row in matrix if row), default=0)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=7,
                        color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")


def confusion_csv(matrix: list[list[float]]) -> str:
    """``confusion.csv``: a header row of predicted classes, then ``true,counts...``."""
    lines = ["true\\pred," + ",".join(str(j) for j in range(len(matrix[0]) if matrix else 0))]
    lines += [f"{i}," + ",".join(f"{v:g}" for v in row) for i, row in enumerate(matrix)]
    return "\n".join(lines) + "\n"


def read_confusion(text: str) -> list[list[float]] | None:
    """:func:`confusion_csv`'s text back as a matrix; None if it is not one."""
    lines = [ln for ln in text.splitlines() if ln.strip()][1:]
    try:
        return [[float(v) for v in ln.split(",")[1:]] for ln in lines] or None
    except ValueError:
        return None

"""How a trial is drawn and its confusion matrix written, shared by the MLflow artifacts
(:mod:`search.tracking`) and the report (:mod:`search.report`): one look, one file format.

Axes-level only (no figure, no backend), so each caller keeps its own sizes and margins.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CONFUSION_CSV", "CONFUSION_PNG", "CURVES_PNG", "confusion_classes", "confusion_csv",
           "draw_confusion", "draw_series", "read_confusion"]

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


def draw_confusion(ax: Any, matrix: list[list[float]],
                   classes: Sequence[str] | None = None) -> None:
    """A confusion matrix ``[true][predicted]`` as a heatmap on ``ax``, counts written in
    each cell and the axes labelled with the class names (else their indices) up to 20
    classes; past 20, a colour bar instead of the counts. (A colour bar beside the counts
    repeats them, and costs a quarter of the drawing time of a figure the tracker draws for
    every trial.)"""
    image = ax.imshow(matrix, cmap="Blues")
    if len(matrix) > 20:
        ax.figure.colorbar(image, ax=ax)
    else:
        n = len(matrix[0]) if matrix else 0
        ax.set_xticks(range(n))
        ax.set_yticks(range(len(matrix)))
        if classes is not None and len(classes) == n == len(matrix):
            ax.set_xticklabels(list(classes), rotation=90, fontsize=7)
            ax.set_yticklabels(list(classes), fontsize=7)
        top = max((max(row) for row in matrix if row), default=0)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=7,
                        color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")


def confusion_csv(matrix: list[list[float]], classes: Sequence[str] | None = None) -> str:
    """``confusion.csv``: a header row of predicted classes, then ``true,counts...``; classes
    by name when ``classes`` names them all, else by index."""
    n = len(matrix[0]) if matrix else 0
    names = list(classes) if classes is not None and len(classes) == n else \
        [str(j) for j in range(n)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["true\\pred", *names])
    writer.writerows([names[i] if i < len(names) else str(i), *(f"{v:g}" for v in row)]
                     for i, row in enumerate(matrix))
    return out.getvalue()


def read_confusion(text: str) -> list[list[float]] | None:
    """:func:`confusion_csv`'s text back as a matrix; None if it is not one."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r][1:]
    try:
        return [[float(v) for v in r[1:]] for r in rows] or None
    except ValueError:
        return None


def confusion_classes(text: str) -> list[str] | None:
    """The class names in :func:`confusion_csv`'s header; None if it has none."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    return rows[0][1:] or None if rows else None

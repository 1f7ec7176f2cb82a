"""A trial's figures as MLflow artifacts: learning curves and its test confusion matrix, drawn
with :mod:`search.figures` as the report draws them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpsearch.search.figures import confusion_csv, draw_confusion, draw_series
from hpsearch.search.sweepdir import result_step

__all__ = ["draw_confusion", "plot_curves", "write_confusion"]


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train vs val loss and top-1 accuracy per epoch, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins, not a layout engine: half the rendering time, which a tracker drawing
    # one figure per trial (thousands in a long sweep) spends on its writer thread.
    fig = Figure(figsize=(9, 3.6))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.86, wspace=0.25)
    FigureCanvasAgg(fig)
    epochs = [result_step(r) for r in history]
    panels = (("loss", ("train_loss", "val_loss")), ("top-1 accuracy", ("train_top1", "val_top1")))
    for ax, (name, keys) in zip(fig.subplots(1, 2), panels, strict=True):
        draw_series(ax, epochs, {k.split("_")[0]: [r.get(k) for r in history] for k in keys},
                    name)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def write_confusion(matrix: list[list[float]], csv_path: Path, png_path: Path | None,
                    classes: Sequence[str] | None = None) -> None:
    """A confusion matrix ``[true][pred]`` as CSV (:func:`search.figures.confusion_csv`) and
    heatmap (none when ``png_path`` is None), classes by name when ``classes`` are given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv_path.write_text(confusion_csv(matrix, classes))
    if png_path is None:
        return
    n = len(matrix)
    label = 0.06 * max((len(c) for c in classes or ()), default=0)  # inches of tick text
    left, bottom = 0.75 + label, 0.65 + label
    bar = 0.85 if n > 20 else 0.3  # room for the colour bar (only past 20 classes)
    width, height = left + bar + 0.45 * n, bottom + 0.55 + 0.45 * n
    fig = Figure(figsize=(width, height))  # fixed margins (in inches), as in plot_curves
    fig.subplots_adjust(left=left / width, right=1 - 0.2 / width, bottom=bottom / height,
                        top=1 - 0.2 / height)
    FigureCanvasAgg(fig)
    draw_confusion(fig.subplots(), matrix, classes)
    fig.savefig(png_path, dpi=100)

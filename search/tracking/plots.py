"""A trial's figures: learning curves and its test confusion matrix (MLflow artifacts; the
report draws confusion matrices the same way)."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from search.sweepdir import result_step

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
        for key in keys:
            pts = [(e, r[key]) for e, r in zip(epochs, history, strict=True)
                   if isinstance(r.get(key), numbers.Real)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=key.split("_")[0])
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def draw_confusion(ax: Any, matrix: list[list[float]]) -> None:
    """A confusion matrix ``[true][predicted]`` as a heatmap on ``ax``, counts written in
    each cell up to 20 classes (shared by the per-trial artifact and the report)."""
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


def write_confusion(matrix: list[list[float]], csv_path: Path, png_path: Path) -> None:
    """A confusion matrix ``[true][pred]`` as CSV (header row: predicted class) and heatmap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(matrix)
    lines = ["true\\pred," + ",".join(str(j) for j in range(len(matrix[0]) if n else 0))]
    lines += [f"{i}," + ",".join(f"{v:g}" for v in row) for i, row in enumerate(matrix)]
    csv_path.write_text("\n".join(lines) + "\n")

    width, height = 1.6 + 0.45 * n, 1.2 + 0.45 * n
    fig = Figure(figsize=(width, height))  # fixed margins (in inches), as in plot_curves
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.65 / height,
                        top=1 - 0.2 / height)
    FigureCanvasAgg(fig)
    draw_confusion(fig.subplots(), matrix)
    fig.savefig(png_path, dpi=100)

"""The report's plots as PNG bytes: learning curves, the confusion matrix, parallel coordinates,
hyperparameter importance, score against cost.

Parallel coordinates and importance are Optuna's own (``optuna.visualization.matplotlib``) over
the trials as a study; they draw through pyplot, which is put on Agg first unless someone loaded
it already, so the report never opens a window.
"""

from __future__ import annotations

import io
import math
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from hpsearch.search.figures import draw_confusion, draw_series
from hpsearch.search.report.data import SweepData, varies
from hpsearch.search.report.formats import (
    fmt_metric,
    format_macs,
    format_params,
    is_accuracy,
    metric_name,
    metric_title,
    missing,
    setting_title,
    status_label,
)
from hpsearch.search.report.study import evaluator, importance_study, scored_study
from hpsearch.search.report.tables import pareto_front

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["CURVES", "curve_metrics", "plot_confusion", "plot_cost", "plot_curves",
           "plot_importances", "plot_parallel"]

CURVES = 4  # learning curves of this many top trials


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, **savefig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, **savefig)
    return buf.getvalue()


def _optuna_png(draw: Callable[[], Axes], width: float, height: float) -> bytes:
    """An Optuna matplotlib plot as PNG bytes; its pyplot figure is closed and its style undone
    after."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # the report writes files: never a window
    import optuna
    from matplotlib import pyplot as plt

    # rc_context: Optuna sets pyplot's style (ggplot) for the process; it stays with this plot
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # an axis whose trials all share one value (matplotlib widens it itself)
        warnings.filterwarnings("ignore", "Attempting to set identical", UserWarning)
        fig = draw().figure
        try:
            fig.set_size_inches(width, height)
            return _png(fig, bbox_inches="tight")
        finally:
            plt.close(fig)


def curve_metrics(data: SweepData) -> list[str]:
    """What the learning curves draw: train and val loss; for a trainable that reports neither,
    its own metrics (only those some trial reported)."""
    def reported(metric: str) -> bool:
        return bool(data.history[metric].notna().any())

    losses = [m for m in ("train_loss", "val_loss") if reported(m)]
    return losses or [m for m in data.own_metrics if reported(m)]


def plot_curves(data: SweepData, n: int = CURVES) -> bytes | None:
    """:func:`curve_metrics` per epoch of the top ``n`` trials: train vs val loss (a widening
    gap: overfitting), or the trainable's own metrics."""
    ids = [t for t in data.trials["trial_id"] if (data.history["trial_id"] == t).any()][:n]
    names = curve_metrics(data)
    if not ids or not names:
        return None
    metric = data.objective[0]
    unit = "%" if is_accuracy(metric) else ""
    ylabel = "loss" if all(m.endswith("loss") for m in names) else "value"
    cols = min(2, len(ids))
    rows = math.ceil(len(ids) / cols)
    fig = _figure(5 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, trial_id in zip(axes, ids, strict=False):
        h = data.history[data.history["trial_id"] == trial_id]
        t = data.trials[data.trials["trial_id"] == trial_id].iloc[0]
        draw_series(ax, list(h["epoch"]),
                    {metric_name(m).lower(): list(h[m]) for m in names}, ylabel)
        ax.set_title(f"trial {trial_id}: {metric_name(metric).lower()} "
                     f"{fmt_metric(metric, t[data.score_column])}{unit}, "
                     f"{status_label(t['status'], t['stopped_epoch'], data.meta.get('rungs'))}",
                     fontsize=9)
    for ax in axes[len(ids):]:
        ax.set_visible(False)
    return _png(fig)


def plot_confusion(data: SweepData) -> bytes | None:
    """The best trial's test confusion matrix as a heatmap (drawn as the tracker draws it)."""
    matrix = data.confusion
    if not matrix:
        return None
    n = len(matrix)
    names = data.confusion_classes if data.confusion_classes and \
        len(data.confusion_classes) == n and n <= 20 else None
    pad = 0.06 * max(map(len, names)) if names else 0.0  # room for the longest name
    fig = _figure(1.8 + 0.45 * n + pad, 1.4 + 0.45 * n + pad)
    ax = fig.subplots()
    draw_confusion(ax, matrix, names)
    ax.set_title(f"test confusion, trial {data.confusion_trial}", fontsize=9)
    return _png(fig)


def plot_parallel(data: SweepData) -> bytes | None:
    """Optuna's parallel coordinates: one line per completed trial through each searched setting
    that varies, coloured by the score (a trial without a setting passes through "None")."""
    score = data.score_column
    trials = data.completed[data.completed[score].notna()]
    keys = [k for k in data.searched if varies(trials[k]) and not trials[k].map(missing).all()]
    if len(trials) < 2 or not keys:
        return None
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    metric = data.objective[0]
    scale = 100.0 if is_accuracy(metric) else 1.0
    study = scored_study(data, keys, trials, titled=True)

    def draw() -> Axes:
        ax = plot_parallel_coordinate(
            study, params=[setting_title(k) for k in keys],
            target=lambda t: scale * t.value, target_name=metric_title(metric))
        ax.set_title("")
        _tidy_axes(ax.figure)
        for lines in ax.collections:  # no line fades into the page; the best is yellow
            lines.set_cmap("viridis" if data.objective[1] == "max" else "viridis_r")
        return ax

    return _optuna_png(draw, max(6.4, 2.2 * (len(keys) + 1)), 4.8)


def _tidy_axes(fig: Figure) -> None:
    """Parallel coordinates readable: plain numbers on log axes (0.003, not 3x10^-3), small
    tick labels, and at most 8 labels on an axis of many categories, so none overlap."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for ax in fig.axes:
        ax.tick_params(axis="both", which="both", labelsize=8)
        if ax.get_yscale() == "log":
            low, high = ax.get_ylim()
            plain = FuncFormatter(lambda v, _: f"{v:.2g}")
            ax.yaxis.set_major_formatter(plain)
            # within a decade only minor ticks fall in view: label those instead
            ax.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())
        labels = ax.get_yticklabels()
        if len(labels) > 8 and any(lab.get_text() for lab in labels):
            step = -(-len(labels) // 8)
            for i, lab in enumerate(labels):
                lab.set_visible(i % step == 0)


def plot_importances(data: SweepData) -> bytes | None:
    """Optuna's bars of the PED-ANOVA importances :func:`~search.report.study.param_importances`
    gives; None where it gives none."""
    found = importance_study(data, titled=True)
    if isinstance(found, str):
        return None
    from optuna.visualization.matplotlib import plot_param_importances

    study, keys = found
    try:
        return _optuna_png(lambda: plot_param_importances(
            study, evaluator=evaluator(), target_name=metric_name(data.objective[0])),
            6.4, 1.6 + 0.5 * len(keys))
    except RuntimeError:  # no variance to split
        return None


def plot_cost(data: SweepData, *, max_params: int | None = None,
              max_macs: int | None = None) -> bytes | None:
    """Score of the completed trials against params and against MACs (log axes), Pareto front
    in red. Trials stopped early are left out: their scores are from fewer epochs."""
    score = data.score_column
    trials = data.completed[data.completed[score].notna() & data.completed["params"].notna()]
    if trials.empty:
        return None
    fig = _figure(10, 3.8)
    metric, mode = data.objective
    scale = 100 if is_accuracy(metric) else 1
    for ax, (cost, limit, fmt) in zip(fig.subplots(1, 2), (
            ("params", max_params, format_params), ("macs", max_macs, format_macs)),
            strict=True):
        sub = trials[trials[cost].notna()]
        x, y = sub[cost].astype(float), sub[score].astype(float) * scale
        ax.scatter(x, y, color="tab:blue", alpha=0.7, label="trials")
        front = pareto_front(sub, [(score, mode), (cost, "min")])
        fx, fy = x[front].sort_values(), y[front]
        ax.step(fx, fy[fx.index], where="post", color="tab:red")
        ax.scatter(fx, fy[fx.index], color="tab:red", zorder=3, label="Pareto front")
        if limit is not None:
            ax.axvline(limit, color="grey", linestyle="--", label=f"budget {fmt(limit)}")
        if (x > 0).all() and x.max() > x.min():
            ax.set_xscale("log")
        ax.set_xlabel("MACs per image" if cost == "macs" else "parameters")
        ax.set_ylabel(metric_title(metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)

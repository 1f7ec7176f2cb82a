"""How the report writes a value in a table cell: counts, metrics, settings, statuses, times."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from hpsearch.search.report.machine import without_paths
from hpsearch.search.units import (
    format_compact,
    parse_count,  # re-exported: the one count parser
)
from hpsearch.trainables.vocab import Status, stopped_label

__all__ = ["DASH", "budget_text", "duration", "fmt_metric", "fmt_value",
           "format_macs", "format_params", "is_accuracy", "metric_name", "metric_title",
           "missing", "parse_count", "setting_title", "status_label"]

DASH = "—"  # a cell with no value
# A setting's column title, in the leaderboard and the factor tables alike.
_TITLES = {"model": "Model", "optimizer": "Optimizer", "lr": "Learning rate",
           "batch_size": "Batch size", "augment": "Data augmentation",
           "activation": "Activation", "fc_depth": "FC depth", "fc_width": "FC width",
           "channels": "Channels", "weight_decay": "Weight decay", "ema": "EMA decay",
           "tta_flip": "Flip TTA"}


def setting_title(key: str) -> str:
    """``lr`` -> ``Learning rate``; ``label_smoothing`` -> ``Label smoothing``."""
    return _TITLES.get(key, key.replace("_", " ").capitalize())


def format_params(n: float | None) -> str:
    """A parameter count to three digits: 390634 -> ``"391K"``, 1218000 -> ``"1.22M"``."""
    return DASH if missing(n) else format_compact(float(n))


def format_macs(n: float | None) -> str:
    """Multiply-accumulates per image to three digits: 7924000 -> ``"7.92M"``."""
    return DASH if missing(n) else format_compact(float(n))


def missing(value: Any) -> bool:
    """None, pandas' NA or a float NaN."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def is_accuracy(metric: str) -> bool:
    """A metric shown in percent."""
    return any(part in metric for part in ("top1", "top3", "f1", "precision", "recall"))


def metric_name(metric: str) -> str:
    """``val_top1`` -> ``Val acc``."""
    split, _, kind = metric.partition("_")
    name = {"top1": "acc", "top3": "top-3 acc", "loss": "loss", "f1": "F1"}.get(kind, kind)
    return f"{split.capitalize()} {name}" if kind else metric


def metric_title(metric: str) -> str:
    """A column title with the unit: ``Val acc (%)``."""
    return f"{metric_name(metric)} (%)" if is_accuracy(metric) else metric_name(metric)


def fmt_metric(metric: str, value: Any) -> str:
    """A metric's value as a cell: accuracies in %, params in millions, MACs in billions."""
    if missing(value):
        return DASH
    if is_accuracy(metric):
        return f"{100 * float(value):.2f}"
    if metric in ("params",):
        return format_params(value)
    if metric in ("macs",):
        return format_macs(value)
    return f"{float(value):.4g}"


def fmt_value(key: str, value: Any) -> str:
    """A setting's value as a table cell: ``0.00354``, ``[8, 16]``, ``hflip+rotate``; a path
    without the machine's folders (:mod:`.machine`)."""
    if missing(value):
        return DASH
    if key == "augment":
        return "+".join(value) if value else "none"
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return without_paths(str(value))


def status_label(status: str, stopped_epoch: Any, rungs: Any = None) -> str:
    """A trial's status as a cell: ``stopped at epoch 3`` for one stopped early; ``ended at
    epoch 11`` for one still training when the sweep ended (time limit, target, a stop), seen
    by an epoch that is none of the scheduler's ``rungs`` (when they are known)."""
    if status == Status.STOPPED_EARLY:
        return Status.STOPPED_EARLY.label if missing(stopped_epoch) \
            else stopped_label(stopped_epoch, rungs)
    return status


def duration(seconds: float | None) -> str:
    """``1:02:03 (3723.0 s)``."""
    if seconds is None or not math.isfinite(seconds):
        return DASH
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d} ({seconds:.1f} s)"


def budget_text(max_params: int | None, max_macs: int | None) -> str:
    """``params <= 1M and MACs <= 50M``; empty without a budget."""
    parts = ([f"params <= {format_params(max_params)}"] if max_params is not None else []) + \
        ([f"MACs <= {format_macs(max_macs)}"] if max_macs is not None else [])
    return " and ".join(parts)

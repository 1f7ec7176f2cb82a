"""Trials read from either source, as :class:`Trial` records, assembled once into
:class:`~search.report.data.SweepData`: the same frames whichever source they came from."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from hpsearch.search.report.data import INT_FINALS, SweepData, best_columns, own_metrics
from hpsearch.search.report.lineage import lineage_frame
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import FINAL_METRICS, HISTORY_METRICS, METRICS, Status

if TYPE_CHECKING:
    from hpsearch.search.spec import SweepSpec

__all__ = ["Confusion", "Trial", "assemble", "split_sizes"]

Confusion = tuple[list[list[float]], list[str] | None]  # a test confusion matrix, class names


@dataclass
class Trial:
    """One trial as either source holds it; :func:`assemble` turns these into frames."""

    trial_id: str
    config: dict[str, Any]
    rows: list[dict[str, float]]  # per step (epoch 0 = rejected before training): metrics
    finals: dict[str, float]
    status: str
    error: str | None = None
    rejected_reason: str | None = None
    node: str | None = None
    gpus: str | None = None  # the GPU ids Ray gave the trial (CUDA_VISIBLE_DEVICES)
    sizes: dict[str, int] | None = None  # images per split it last ran on: train, val
    copies: list[dict[str, Any]] | None = None  # PBT: other trials' weights it trained on


def split_sizes(values: Mapping[str, Any]) -> dict[str, int]:
    """The images a trial trained and validated on, from its last result or run metrics."""
    return {split: int(values[f"{split}_samples"]) for split in ("train", "val")
            if isinstance(values.get(f"{split}_samples"), int | float)
            and math.isfinite(values[f"{split}_samples"])}


def assemble(name: str, spec: SweepSpec | None, trials: list[Trial], meta: dict[str, Any],
             objective: tuple[str, str],
             confusion_of: Callable[[str], Confusion | None]) -> SweepData:
    """The trials and history frames, in ranking order, from either source."""
    if not trials:
        where = meta.get("run_dir") or meta.get("tracking_uri")
        raise UserError(f"report {name}: no trials yet in {where}")
    metric, mode = objective
    own = own_metrics(k for t in trials for r in t.rows for k in r)
    keys = ["trial_id", "epoch", "timestamp", *HISTORY_METRICS, *own]
    records, history = [], []
    for t in trials:
        records.append(_record(t, metric, mode, own))
        history += [{"trial_id": t.trial_id, "epoch": int(r["epoch"]),
                     "timestamp": r.get("timestamp", math.nan),
                     **{k: r.get(k, math.nan) for k in keys[3:]}}
                    for r in t.rows if r["epoch"] >= 1]
    data = SweepData.from_rows(name, records, spec=spec, objective=objective, meta=meta,
                               history=pd.DataFrame(history, columns=keys))
    data.lineage = lineage_frame((t.trial_id, t.copies or []) for t in trials)
    frame = data.trials
    for trial_id in frame["trial_id"]:
        if frame.loc[frame["trial_id"] == trial_id, "status"].iloc[0] != Status.COMPLETED:
            continue
        found = confusion_of(trial_id)
        if found:
            data.confusion, data.confusion_trial = found[0], trial_id
            data.confusion_classes = found[1]
            sizes = next((t.sizes for t in trials if t.trial_id == trial_id), None) or {}
            data.meta["split_sizes"] = {**sizes, "test": round(sum(map(sum, found[0])))}
            break
    return data


def _record(t: Trial, metric: str, mode: str, own: tuple[str, ...]) -> dict[str, Any]:
    """One trial's row of the trials frame; of the trainable's ``own`` metrics but the
    objective, the value after the last epoch it ran (as MLflow's runs table shows it)."""
    record: dict[str, Any] = {"trial_id": t.trial_id, "status": t.status}
    record.update(t.config)
    trained = [r for r in t.rows if r["epoch"] >= 1]
    rejected = t.status == Status.REJECTED
    for col in best_columns(metric):
        key = col.removeprefix("best_")
        values = [r[key] for r in trained if math.isfinite(r.get(key, math.nan))]
        direction = mode if key == metric else METRICS.get(key, "max")
        better = max if direction == "max" else min
        record[col] = better(values) if values and not rejected else math.nan
    record["best_epoch"] = _best_epoch(trained, metric, mode) if not rejected else math.nan
    for key in FINAL_METRICS:
        value = t.finals.get(key, math.nan)
        record[key] = int(value) if key in INT_FINALS and math.isfinite(value) else value
    for key in (k for k in own if k != metric):
        record[key] = next((r[key] for r in reversed(trained) if key in r), math.nan)
    stamps = [r["timestamp"] for r in t.rows if math.isfinite(r.get("timestamp", math.nan))]
    totals = [r["time_total_s"] for r in t.rows if "time_total_s" in r]
    epochs = int(max((r["epoch"] for r in trained), default=0))
    record.update(
        epochs_run=epochs,
        stopped_epoch=epochs if t.status == Status.STOPPED_EARLY else None,
        wall_seconds=totals[-1] if totals else math.nan,
        ended=max(stamps) if stamps else math.nan,
        node=t.node, gpus=t.gpus, rejected_reason=t.rejected_reason, error=t.error)
    record["started"] = record["ended"] - record["wall_seconds"]
    return record


def _best_epoch(rows: list[dict[str, float]], metric: str, mode: str) -> float:
    scored = [(r[metric], r["epoch"]) for r in rows if math.isfinite(r.get(metric, math.nan))]
    if not scored:
        return math.nan
    best = (max if mode == "max" else min)(v for v, _ in scored)
    return next(e for v, e in scored if v == best)

"""The report's tables, computed from :class:`~search.report.data.SweepData`: the leaderboard,
factor tables (one-factor-at-a-time for ``design: ofat``), the Pareto front of score against
cost, and the compute summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hpsearch.search.report.data import SweepData, hashable, varies
from hpsearch.search.report.formats import (
    _TITLES,
    DASH,
    budget_text,
    duration,
    fmt_metric,
    fmt_value,
    format_macs,
    format_params,
    metric_title,
    missing,
    setting_title,
    status_label,
)
from hpsearch.search.report.machine import MACHINE_SETTINGS
from hpsearch.search.spec import Choice, Grid, IntRange, LogUniform, Uniform
from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import ENDED_WITH_SWEEP, STATUS_ORDER, Status, ended_with_sweep

__all__ = ["compute_summary", "compute_table", "cost_table", "factor_tables", "final_line",
           "final_table", "fixed_settings", "leaderboard", "leaderboard_text", "ofat_table",
           "pareto_front", "heading_test_acc", "rank_agreement", "rung_columns", "table_rungs"]

# Settings named in the "fixed settings" line when they do not vary (besides spec.fixed).
_USUAL = ("model", "optimizer", "lr", "batch_size")
_NOT_SHOWN = (*MACHINE_SETTINGS, "device")  # where it ran, not what it was
_MAX_CATEGORIES = 6  # a numeric setting with more distinct values than this is binned
_BINS = 4
AGREEMENT_MIN_TRIALS = 5  # fewer completed trials: no rank agreement table


def _under_budget(trials: pd.DataFrame, max_params: int | None,
                  max_macs: int | None) -> pd.DataFrame:
    keep = pd.Series(True, index=trials.index)
    if max_params is not None:
        keep &= trials["params"].fillna(max_params + 1) <= max_params
    if max_macs is not None:
        keep &= trials["macs"].fillna(max_macs + 1) <= max_macs
    return trials[keep.astype(bool)]


def _unused_settings(trials: pd.DataFrame, keys: Sequence[str]) -> list[set[str]]:
    """Per trial, the settings among ``keys`` its config does not use (momentum under Adam)."""
    try:
        from hpsearch.trainables.config import parse_trial_config
        from hpsearch.trainables.settings import used_keys
    except ImportError:  # torch missing: show every value
        return [set() for _ in range(len(trials))]
    out = []
    fields = set(TrialConfig.model_fields)
    for _, row in trials.iterrows():
        values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()
                  if k in fields and not missing(v)}
        try:
            used = set(used_keys(parse_trial_config(values)))
        except (UserError, KeyError, ValueError):
            used = set(keys)
        out.append({k for k in keys if k not in used and k in fields})
    return out


def leaderboard(data: SweepData, *, top: int | None = None, max_params: int | None = None,
                max_macs: int | None = None) -> pd.DataFrame:
    """One display row per trial, best first: the settings that matter, cost, scores, status.

    ``max_params``/``max_macs`` keep only the trials whose model fits; ``top`` the first N.
    """
    trials = _under_budget(data.trials, max_params, max_macs)
    keys = _varied(data)
    if top is not None:
        trials = trials.head(top)
    unused = _unused_settings(trials, keys)
    shown = _shown_metrics(data)
    rows = []
    for (_, t), skip in zip(trials.iterrows(), unused, strict=True):
        row: dict[str, Any] = {"Trial": t["trial_id"]}
        for k in keys:
            row[setting_title(k)] = DASH if k in skip else fmt_value(k, t[k])
        for title, (column, metric) in shown.items():
            row[title] = fmt_metric(metric, t[column])
        row["Epochs run"] = DASH if missing(t["epochs_run"]) else str(int(t["epochs_run"]))
        row["Status"] = status_label(t["status"], t["stopped_epoch"], data.meta.get("rungs"))
        rows.append(row)
    columns = ["Trial", *(setting_title(k) for k in keys), *shown, "Epochs run", "Status"]
    return pd.DataFrame(rows, columns=columns)


def _shown_metrics(data: SweepData) -> dict[str, tuple[str, str]]:
    """The leaderboard's metric columns, title -> (trials column, metric): cost, the score,
    the trainable's own metrics, val and test accuracy; only those some trial has a value
    in (a plugin trainable reports no accuracy, params or MACs)."""
    metric = data.objective[0]
    columns = {"Params": ("params", "params"), "MACs": ("macs", "macs")}
    if data.score_column != "best_val_top1":
        columns[f"Best {metric_title(metric).lower()}"] = (data.score_column, metric)
    columns.update({metric_title(m): (m, m) for m in data.own_metrics if m != metric})
    columns["Val acc (%)"] = ("best_val_top1", "val_top1")
    columns[heading_test_acc(data)] = ("test_top1", "test_top1")
    return {title: (column, m) for title, (column, m) in columns.items()
            if data.has_values(column)}


def _varied(data: SweepData) -> list[str]:
    """The settings that vary across the trials: the usual ones, then the searched ones."""
    keys = [k for k in _TITLES if k in data.trials.columns and varies(data.trials[k])]
    return keys + [k for k in data.searched if k not in keys and varies(data.trials[k])]


def fixed_settings(data: SweepData) -> dict[str, Any]:
    """The settings every trial shared (the spec's ``fixed``, and model, optimizer, learning
    rate, batch size when they did not vary): key -> value; no paths, no device."""
    keys = list(data.spec.trial_defaults()) if data.spec is not None else []
    keys += [k for k in _USUAL if k not in keys]
    return {k: _plain(data.trials[k].dropna().iloc[0]) for k in keys
            if k in data.trials.columns and k not in _NOT_SHOWN
            and not varies(data.trials[k]) and data.trials[k].notna().any()}


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (``True``, not ``np.True_``)."""
    return value.item() if isinstance(value, np.generic) else value


def eval_limit(data: SweepData) -> int | None:
    """The trials' ``eval_limit`` (val and test cut to the first N images), if any had one."""
    if "eval_limit" not in data.trials.columns:
        return None
    limits = data.trials["eval_limit"].dropna()
    return int(limits.max()) if len(limits) else None


def heading_test_acc(data: SweepData) -> str:
    """The test accuracy column: marked as a subset when ``eval_limit`` cut the test set."""
    return "Test acc (%)" if eval_limit(data) is None else "Test acc, subset (%)"


def leaderboard_text(data: SweepData, *, top: int | None = None,
                     max_params: int | None = None, max_macs: int | None = None) -> str:
    """The leaderboard for the terminal, with a one-line summary above it."""
    board = leaderboard(data, top=top, max_params=max_params, max_macs=max_macs)
    s = compute_summary(data)
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in s["counts"].items() if n)
    budget = budget_text(max_params, max_macs)
    head = f"sweep '{data.name}': {s['trials']} trials ({counts})"
    if budget:
        head += f"; {len(_under_budget(data.trials, max_params, max_macs))} within {budget}"
    final = final_line(data)
    tail = f"\n{final}" if final else ""
    if board.empty:
        return (f"{head}\n(no trial fits {budget})" if budget else head) + tail
    return f"{head}\n{board.to_string(index=False)}{tail}"


def final_line(data: SweepData) -> str | None:
    """The sweep's final model (``hpsearch finalize``) in one line; None when it has none."""
    f = data.final
    if not f:
        return None
    test = (f.get("metrics") or {}).get("test_top1")
    epochs = f.get("epochs", DASH)
    return (f"Final model (retrained on train+val, {epochs} epoch{'' if epochs == 1 else 's'}): "
            f"test top-1 {fmt_metric('test_top1', test)} %, params "
            f"{format_params(f.get('params'))}, MACs {format_macs(f.get('macs'))}")


def final_table(data: SweepData) -> pd.DataFrame | None:
    """The final model as one table row: the trial it retrained, what it trained and was
    tested on, its test scores and cost, and its MLflow model; None when it has none."""
    f = data.final
    if not f:
        return None
    m = f.get("metrics") or {}
    tracked = f.get("mlflow") or {}
    model = f"{tracked['registered_model']} v{tracked['version']}" \
        if tracked.get("registered_model") else DASH

    def count(key: str) -> str:
        return f"{f[key]:,}" if isinstance(f.get(key), int) else DASH

    return pd.DataFrame([{
        "From trial": f.get("trial_id", DASH), "Epochs": f.get("epochs", DASH),
        "Train images": count("train_samples"), "Test images": count("test_samples"),
        "Test acc (%)": fmt_metric("test_top1", m.get("test_top1")),
        "Test loss": fmt_metric("test_loss", m.get("test_loss")),
        "Params": format_params(f.get("params")), "MACs": format_macs(f.get("macs")),
        "Wall time": duration(f.get("wall_seconds")), "MLflow model": model}])



def _is_continuous(data: SweepData, key: str) -> bool:
    entry = data.spec.space.get(key) if data.spec is not None else None
    if isinstance(entry, Uniform | LogUniform):
        return True
    if isinstance(entry, Choice | Grid):
        return False
    values = data.trials[key].dropna()
    numeric = values.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool))
    if len(values) == 0 or not numeric.all():
        return False
    if isinstance(entry, IntRange):
        return len(entry.finite_values()) > _MAX_CATEGORIES
    return values.nunique() > _MAX_CATEGORIES


def _bin_labels(data: SweepData, key: str, values: pd.Series) -> pd.Series:
    """Continuous values in a few bins: log-spaced for log-uniform (or wide positive) ranges."""
    entry = data.spec.space.get(key) if data.spec is not None else None
    numbers = values.astype(float)
    low, high = float(numbers.min()), float(numbers.max())
    log = isinstance(entry, LogUniform) or (isinstance(entry, IntRange) and entry.log)
    if isinstance(entry, Uniform | LogUniform | IntRange):
        low, high = min(low, float(entry.low)), max(high, float(entry.high))
    elif low > 0 and high / low >= 10:
        log = True
    n = min(_BINS, numbers.nunique())
    if n <= 1 or low == high:
        return numbers.map(lambda v: f"{v:.3g}")
    edges = np.geomspace(low, high, n + 1) if log else np.linspace(low, high, n + 1)
    labels = [f"{a:.3g}–{b:.3g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return pd.cut(numbers, edges, labels=labels, include_lowest=True).astype(object)


def rung_columns(epoch: int) -> tuple[str, str]:
    """A factor table's two columns for one rung: how many trials reached ``epoch``, and
    their mean score at it."""
    return f"reached_{epoch}", f"mean_at_{epoch}"


def table_rungs(data: SweepData, table: pd.DataFrame) -> list[int]:
    """The rungs (:attr:`SweepData.rung_epochs`) a factor table has columns for."""
    return [e for e in data.rung_epochs if rung_columns(e)[0] in table.columns]


def factor_tables(data: SweepData) -> dict[str, pd.DataFrame]:
    """Per searched setting that varies: each value's ``trials``, ``completed`` (ran every
    epoch) and the ``best`` and ``mean`` objective score of the completed ones (continuous
    settings binned). Per rung at which the scheduler stopped trials
    (:attr:`SweepData.rung_epochs`), also ``reached_<N>`` and ``mean_at_<N>``
    (:func:`rung_columns`): how many trials reached epoch N and their mean score at it. Scores
    at different epochs are never mixed. Trials that do not use the setting (momentum under
    Adam) or lack it (conditional) are left out of its table."""
    metric, mode = data.objective
    score = data.score_column
    done = (data.trials["status"] == Status.COMPLETED).to_numpy()
    rungs = {e: scores for e in data.rung_epochs
             if len(scores := data.at_epoch(e))}  # no history: no rung to compare at
    keys = [k for k in data.searched if varies(data.trials[k])]
    unused = _unused_settings(data.trials, keys)
    out = {}
    for key in keys:
        mask = [not missing(v) and key not in skip
                for v, skip in zip(data.trials[key], unused, strict=True)]
        trials = data.trials[mask]
        if trials.empty:
            continue
        full = trials[score].where(done[mask])  # completed trials' scores; others NaN
        if _is_continuous(data, key):
            labels = _bin_labels(data, key, trials[key])
            order = list(dict.fromkeys(sorted(labels.unique(), key=_bin_start)))
        else:
            labels = trials[key].map(lambda v, k=key: fmt_value(k, v))
            order = _category_order(data, key, labels)
        frame = pd.DataFrame({"value": labels.to_numpy(), "score": full.to_numpy()})
        grouped = frame.groupby("value", sort=False)["score"]
        table = pd.DataFrame({"trials": grouped.size(), "completed": grouped.count(),
                              "best": grouped.max() if mode == "max" else grouped.min(),
                              "mean": grouped.mean()})
        for epoch, scores in rungs.items():
            reached, mean = rung_columns(epoch)
            frame[reached] = trials["trial_id"].map(scores).to_numpy()
            table[reached] = frame.groupby("value", sort=False)[reached].count()
            table[mean] = frame.groupby("value", sort=False)[reached].mean()
        table = table.reindex(order)
        out[key] = table.rename_axis("value").reset_index()
    return out


def _bin_start(label: str) -> float:
    try:
        return float(label.split("–")[0])
    except ValueError:
        return math.inf


def _category_order(data: SweepData, key: str, labels: pd.Series) -> list[str]:
    entry = data.spec.space.get(key) if data.spec is not None else None
    present = set(labels)
    if entry is not None and entry.finite_values() is not None:
        spec_order = [fmt_value(key, hashable(v)) for v in entry.finite_values()]
        return [v for v in spec_order if v in present] + sorted(present - set(spec_order))
    try:
        return sorted(present, key=lambda v: float(v))
    except ValueError:
        return sorted(present)


def ofat_table(data: SweepData) -> pd.DataFrame | None:
    """For ``design: ofat``: the baseline, then one row per variation with ``delta`` (its best
    score minus the baseline's). None for other sweeps. Columns: ``setting``, ``value``,
    ``trial_id``, ``best``, ``delta``, ``test_top1``, ``status``."""
    spec = data.spec
    if spec is None or spec.design != "ofat":
        return None
    from hpsearch.search.space import ofat_configs, ofat_labels

    defaults = {**TrialConfig().to_dict(), **spec.trial_defaults()}
    keys = list(spec.space)
    trials = data.trials  # ranked: the first match is the best one
    rows = []
    for (setting, value), config in zip(ofat_labels(spec), ofat_configs(spec), strict=True):
        want = {k: hashable({**defaults, **config}.get(k)) for k in keys}
        match = trials[[all(hashable(defaults.get(k)) == want[k] if missing(t.get(k))
                            else t.get(k) == want[k] for k in keys)
                        for _, t in trials.iterrows()]]
        t = match.iloc[0] if len(match) else None
        shown = ", ".join(f"{k}={fmt_value(k, hashable(v))}" for k, v in config.items()) \
            if setting == "baseline" else fmt_value(setting, hashable(value))
        rows.append({"setting": setting, "value": shown,
                     "trial_id": t["trial_id"] if t is not None else None,
                     "best": t[data.score_column] if t is not None else math.nan,
                     "test_top1": t["test_top1"] if t is not None else math.nan,
                     "status": status_label(t["status"], t["stopped_epoch"],
                                            data.meta.get("rungs"))
                     if t is not None else "not run"})
    table = pd.DataFrame(rows)
    table.insert(4, "delta", table["best"] - table["best"].iloc[0])
    return table


def pareto_front(points: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.Index:
    """The rows no other row dominates (at least as good in every objective, better in one).

    Args:
        points: One row per candidate; rows with a missing objective value are left out.
        objectives: ``(column, "max" | "min")`` pairs, e.g.
            ``[("best_val_top1", "max"), ("params", "min")]``.

    Returns:
        The index labels of the front, in ``points``' order. Ties and duplicates stay: equal
        points do not dominate each other.
    """
    for column, mode in objectives:
        if mode not in ("max", "min"):
            raise ValueError(f"objective mode must be 'max' or 'min', but got "
                             f"({column!r}, {mode!r})")
    if not objectives or points.empty:
        return points.index[:0] if not objectives else points.index
    values = points[[c for c, _ in objectives]].astype(float)
    values = values[values.notna().all(axis=1)]
    signs = np.array([1.0 if mode == "max" else -1.0 for _, mode in objectives])
    v = values.to_numpy() * signs  # every objective maximised
    geq = (v[:, None, :] >= v[None, :, :]).all(axis=2)  # [j, i]: j at least as good as i
    gt = (v[:, None, :] > v[None, :, :]).any(axis=2)
    dominated = (geq & gt).any(axis=0)
    return values.index[~dominated]


def cost_table(data: SweepData, *, max_params: int | None = None,
               max_macs: int | None = None) -> pd.DataFrame:
    """The Pareto-optimal completed trials (score vs params and MACs), best score first, with a
    column ``fits`` saying whether each model is within the budget. Trials stopped early are
    left out: their scores are from fewer epochs."""
    scored = data.completed[data.completed[data.score_column].notna()]
    score = (data.score_column, data.objective[1])
    front = pareto_front(scored, [score, ("params", "min"), ("macs", "min")])
    table = scored.loc[front, ["trial_id", data.score_column, "test_top1", "params", "macs"]]
    fits = _under_budget(table, max_params, max_macs).index
    return table.assign(fits=table.index.isin(fits)).reset_index(drop=True)


def compute_summary(data: SweepData) -> dict[str, Any]:
    """Counts by status, trial-epochs against a full-budget run, wall time, CPU/GPU-hours."""
    trials = data.trials
    counts = {s.value: int((trials["status"] == s).sum()) for s in STATUS_ORDER}
    counts.update({s: int(n) for s, n in trials["status"].value_counts().items()
                   if s not in counts})
    # of those "stopped early", the ones still training when the sweep ended (no rung's epoch)
    stopped = trials.loc[trials["status"] == Status.STOPPED_EARLY, "stopped_epoch"].dropna()
    cut = sum(1 for e in stopped if ended_with_sweep(e, data.meta.get("rungs")))
    if cut:
        counts[Status.STOPPED_EARLY.value] -= cut
        counts[ENDED_WITH_SWEEP] = cut
    max_epochs = data.meta.get("max_epochs")
    trained = int((trials["status"] != Status.REJECTED).sum())
    run = int(trials["epochs_run"].sum())
    full = int(trained * max_epochs) if max_epochs else None
    trial_seconds = float(trials["wall_seconds"].fillna(0).sum())
    started, ended = trials["started"].min(), trials["ended"].max()
    cpu, gpu = data.meta.get("cpu_per_trial"), data.meta.get("gpu_per_trial")
    best = None
    if len(trials) and not missing(trials[data.score_column].iloc[0]):
        t = trials.iloc[0]
        best = {"trial_id": t["trial_id"], "score": float(t[data.score_column]),
                "val_top1": float(t["best_val_top1"]), "test_top1": _none(t["test_top1"]),
                "params": _none(t["params"]), "macs": _none(t["macs"]),
                "config": {k: t[k].item() if isinstance(t[k], np.generic) else t[k]
                           for k in data.searched if not missing(t[k])}}
    return {
        "trials": len(trials), "counts": counts, "objective": data.objective,
        "trained_trials": trained, "trial_epochs": run, "full_budget_epochs": full,
        "max_epochs": max_epochs,
        "savings": 1 - run / full if full else None,
        "wall_seconds": float(ended - started) if pd.notna(started) and pd.notna(ended)
        else None,
        "trial_seconds": trial_seconds,
        "cpu_hours": trial_seconds * cpu / 3600 if cpu is not None else None,
        "gpu_hours": trial_seconds * gpu / 3600 if gpu else (0.0 if gpu == 0 else None),
        "best": best,
    }


def _none(value: Any) -> Any:
    return None if missing(value) else (int(value) if isinstance(value, np.integer)
                                         else float(value))


def compute_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    c = summary["counts"]
    rows = [("Trials", str(summary["trials"]))]
    rows += [(f"Trials {k.replace('_', ' ')}", str(n)) for k, n in c.items() if n]
    rows.append(("Trial-epochs run", str(summary["trial_epochs"])))
    if summary["full_budget_epochs"]:
        rows.append((f"Full budget ({summary['trained_trials']} trials x "
                     f"{summary['max_epochs']:g} epochs)",
                     str(summary["full_budget_epochs"])))
        by = " and ".join(why for why, n in (("early stopping", c.get(Status.STOPPED_EARLY)),
                                             ("the sweep's end", c.get(ENDED_WITH_SWEEP)))
                          if n) or "early stopping"  # nothing saved: the row says 0.0 %
        rows.append((f"Saved by {by}", f"{100 * summary['savings']:.1f}%"))
    rows.append(("Wall time", duration(summary["wall_seconds"])))
    rows.append(("Sum of trial times", duration(summary["trial_seconds"])))
    if summary["cpu_hours"] is not None:
        rows.append(("CPU-hours", f"{summary['cpu_hours']:.3f}"))
    if summary["gpu_hours"]:
        rows.append(("GPU-hours", f"{summary['gpu_hours']:.3f}"))
    return pd.DataFrame(rows, columns=["Compute", "Value"])


def rank_agreement(data: SweepData) -> tuple[pd.DataFrame, int, float] | None:
    """How well the objective after an earlier epoch ranked the completed trials as their last
    epoch did: what an early-stopping cut there would have kept. Per earlier epoch (the
    scheduler's rungs, else epochs 1, 2, 3 and each x3 after): ``trials`` (completed ones
    scored at both), ``spearman`` (the rank correlation of their two scores) and ``kept``
    (of the best 1/reduction-factor at the last epoch, the share also that good at this epoch:
    1.0 when a cut there keeps every one of them). Returns the table, the last epoch and the
    share a cut keeps (1 / the scheduler's reduction factor, 1/3 without one); None with fewer
    than :data:`AGREEMENT_MIN_TRIALS` completed trials scored every epoch, and for population
    based training (a trial's last score is of weights and settings it copied from others)."""
    metric, mode = data.objective
    done = data.completed
    copied = data.meta.get("scheduler") == "pbt" or (
        data.lineage is not None and not data.lineage.empty)
    if copied or metric not in data.history_metrics or len(done) < AGREEMENT_MIN_TRIALS:
        return None
    last = int(done["epochs_run"].max())
    final = data.at_epoch(last).reindex(done["trial_id"]).dropna()
    if len(final) < AGREEMENT_MIN_TRIALS:
        return None
    scheduler = data.spec.scheduler if data.spec is not None else None
    factor = float(getattr(scheduler, "reduction_factor", None) or 3.0)
    rungs = data.meta.get("rungs")
    if rungs:
        epochs = {int(e) for e in rungs}
    else:  # no scheduler: 1, 2, 3, 9, 27, ...
        epochs, power = {1, 2}, 3
        while power < last:
            epochs.add(power)
            power *= 3
    rows = []
    for epoch in sorted(e for e in epochs if 0 < e < last):
        early = data.at_epoch(epoch).reindex(final.index).dropna()
        if len(early) < AGREEMENT_MIN_TRIALS:
            continue
        late = final[early.index]
        top = max(1, round(len(early) / factor))
        best_late = set(late.sort_values(ascending=mode == "min").index[:top])
        best_early = set(early.sort_values(ascending=mode == "min").index[:top])
        rows.append({"epoch": epoch, "trials": len(early),
                     "spearman": float(early.rank().corr(late.rank())),
                     "kept": len(best_late & best_early) / top})
    if not rows:
        return None
    return pd.DataFrame(rows), last, 1 / factor

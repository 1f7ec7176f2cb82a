"""A finished (or running) sweep as a lab report: tables (md/html/csv/tex) and plots.

One sweep is read either from Ray's files (``<storage>/<name>/``: each trial's ``result.json``
and ``params.json``, Tune's experiment state, ``hpsearch.json``) or from MLflow (the sweep's
parent run and its nested trial runs). Both give a :class:`SweepData` with the same columns, so
every table and plot below is computed once, from it:

* leaderboard: one row per trial, best first, only the settings that vary (or always matter);
* factor tables: each searched setting's values with trial count, best and mean score; for
  ``design: ofat``, the baseline and each one-factor change with its delta;
* cost: score against params and MACs with the Pareto front, the best model under a budget;
* compute: trial-epochs against a full-budget run (ASHA's savings), wall time, CPU/GPU-hours;
* plots: learning curves, confusion matrix, parallel coordinates, hyperparameter importance.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from search.spec import (
    METRICS,
    Choice,
    Grid,
    IntRange,
    LogUniform,
    SweepSpec,
    Uniform,
    parse_spec,
)
from search.yamlio import parse_yaml
from trainables.config import TrialConfig
from trainables.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from search.storage import RemotePath
    from search.tracking import TrialFiles

__all__ = [
    "FINAL_METRICS",
    "HISTORY_METRICS",
    "SweepData",
    "compute_summary",
    "cost_table",
    "factor_tables",
    "format_macs",
    "format_params",
    "from_mlflow",
    "from_ray_dir",
    "latex_table",
    "leaderboard",
    "leaderboard_text",
    "load_trials",
    "ofat_table",
    "param_importances",
    "parse_count",
    "pareto_front",
    "write_report",
]

# Reported every epoch: the history frame's columns (besides trial_id, epoch, timestamp).
HISTORY_METRICS = ("train_loss", "train_top1", "train_top3", "val_loss", "val_top1", "val_top3",
                   "lr", "images_per_second", "epoch_seconds", "time_total_s")
# Reported once per trial (test scores after the last epoch; the model's cost).
FINAL_METRICS = ("test_loss", "test_top1", "test_top3", "test_precision", "test_recall",
                 "test_f1", "params", "macs")
_INT_FINALS = ("params", "macs")
_TEXT_COLUMNS = ("trial_id", "status", "node", "rejected_reason", "error")
_STATUS_ORDER = ("completed", "stopped_early", "diverged", "rejected", "failed", "running",
                 "unknown")
# Leaderboard columns for settings: always shown, or shown when they vary across trials.
_TITLES = {"model": "Model", "optimizer": "Optimizer", "lr": "Learning rate",
           "batch_size": "Batch size", "augment": "Data augmentation",
           "activation": "Activation", "fc_depth": "FC depth", "channels": "Channels"}
_ALWAYS_SHOWN = ("model", "optimizer", "lr", "batch_size")
_MAX_CATEGORIES = 6  # a numeric setting with more distinct values than this is binned
_BINS = 4
_CURVES = 4  # learning curves of this many top trials
_DASH = "—"
_MIN_IMPORTANCE_TRIALS = 4


@dataclass
class SweepData:
    """One sweep's trials, as read from Ray's files or from MLflow (the same columns either way).

    Attributes:
        name: The sweep's name (``results/<name>/`` is where its report goes).
        spec: The sweep spec, when it could be read (``hpsearch.json`` or MLflow's
            ``spec.yaml``).
        trials: One row per trial, best first: ``trial_id``, ``status``, every config key,
            ``best_<metric>`` per epoch metric scored, ``best_epoch``, the test scores,
            ``params``, ``macs``, ``epochs_run``, ``stopped_epoch``, ``wall_seconds``,
            ``started``/``ended`` (Unix seconds), ``node``, ``rejected_reason``, ``error``.
        history: One row per trial and epoch: ``trial_id``, ``epoch``, ``timestamp`` and
            :data:`HISTORY_METRICS`.
        objective: ``(metric, "max" | "min")`` that ranks trials (a multi-objective sweep: its
            first metric).
        confusion: The test confusion matrix ``[true][pred]`` of the best trial that has one.
        confusion_trial: Which trial that matrix belongs to.
        meta: Where the data came from and how to reproduce it: ``source``, ``git_commit``,
            ``created``, ``spec_yaml``, ``run_dir``, ``tracking_uri``, ``experiment``,
            ``cpu_per_trial``, ``gpu_per_trial``, ``max_epochs``.
    """

    name: str
    spec: SweepSpec | None
    trials: pd.DataFrame
    history: pd.DataFrame
    objective: tuple[str, str] = ("val_top1", "max")
    confusion: list[list[float]] | None = None
    confusion_trial: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, name: str, rows: Sequence[Mapping[str, Any]], *,
                  spec: SweepSpec | None = None,
                  objective: tuple[str, str] = ("val_top1", "max"),
                  history: pd.DataFrame | None = None,
                  meta: dict[str, Any] | None = None) -> SweepData:
        """Trials given as one mapping each (settings plus any of the trials columns): missing
        columns are added empty, settings placed after ``status`` (searched ones first), lists
        made tuples, and the rows ranked best first."""
        metric, mode = objective
        frame = pd.DataFrame.from_records(
            [{k: _hashable(v) for k, v in r.items()} for r in rows])
        order = _fixed_columns(metric)
        for column in order:
            if column not in frame.columns:
                frame[column] = None if column in _TEXT_COLUMNS else math.nan
        settings = [c for c in frame.columns if c not in order]
        searched = [k for k in (spec.space if spec is not None else ()) if k in settings]
        settings = searched + sorted(c for c in settings if c not in searched)
        frame = frame[order[:2] + settings + order[2:]]
        for key in _INT_FINALS + ("stopped_epoch", "epochs_run"):
            frame[key] = frame[key].astype("Int64")
        frame = _ranked(frame, metric, mode)
        columns = ["trial_id", "epoch", "timestamp", *HISTORY_METRICS]
        hist = pd.DataFrame(columns=columns) if history is None or history.empty \
            else history.reindex(columns=columns)
        rank = {t: i for i, t in enumerate(frame["trial_id"])}
        hist = hist.sort_values(["trial_id", "epoch"], key=lambda s: s.map(rank)
                                if s.name == "trial_id" else s, kind="stable")
        return cls(name=name, spec=spec, trials=frame, history=hist.reset_index(drop=True),
                   objective=objective, meta=dict(meta or {}))

    @property
    def score_column(self) -> str:
        """The trials column that ranks them (``best_val_top1`` for the default objective)."""
        return _score_column(self.objective[0])

    @property
    def config_keys(self) -> list[str]:
        """The trial settings present as columns, searched ones first."""
        fixed = set(_fixed_columns(self.objective[0]))
        return [c for c in self.trials.columns if c not in fixed]

    @property
    def searched(self) -> list[str]:
        """The settings the sweep searched: the spec's space, else those that vary."""
        keys = self.config_keys
        if self.spec is not None:
            return [k for k in self.spec.space if k in keys]
        return [k for k in keys if _varies(self.trials[k])]


# --------------------------------------------------------------------------- small helpers


def parse_count(text: str | int | float) -> int:
    """``"1M"`` -> 1000000; also ``"1.2M"``, ``"50K"``, ``"2G"``, ``"1e6"``, ``1200000``.

    Raises:
        ValueError: Not a positive count.
    """
    number: float | None = None
    if isinstance(text, int | float) and not isinstance(text, bool):
        number = float(text)
    elif isinstance(text, str):
        m = re.fullmatch(r"(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmg]?)", text.strip().lower()
                         .replace(",", "").replace("_", ""))
        if m:
            number = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
    if number is None or not number >= 1 or not math.isfinite(number):
        raise ValueError(f"expected a positive count like 1200000, '1.2M', '50K' or '2G' "
                         f"(got {text!r})")
    return round(number)


def format_params(n: float | None) -> str:
    """A parameter count in millions: 390634 -> ``"0.390634M"``."""
    return _DASH if _missing(n) else f"{float(n) / 1e6:.6f}M"


def format_macs(n: float | None) -> str:
    """Multiply-accumulates per image in billions: 7924000 -> ``"0.007924G"``."""
    return _DASH if _missing(n) else f"{float(n) / 1e9:.6f}G"


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _hashable(value: Any) -> Any:
    """Lists (e.g. ``channels``) as tuples, so they group, compare and index."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


def _is_accuracy(metric: str) -> bool:
    return any(part in metric for part in ("top1", "top3", "f1", "precision", "recall"))


def _score_column(metric: str) -> str:
    return f"best_{metric}" if metric in HISTORY_METRICS else metric


def _best_columns(metric: str) -> list[str]:
    keys = ["val_top1", "val_loss"] + ([metric] if metric in HISTORY_METRICS else [])
    return [f"best_{k}" for k in dict.fromkeys(keys)]


def _fixed_columns(metric: str) -> list[str]:
    """Every trials column that is not a setting, in order."""
    return (["trial_id", "status"] + _best_columns(metric) + ["best_epoch"]
            + list(FINAL_METRICS) + ["epochs_run", "stopped_epoch", "wall_seconds", "started",
                                     "ended", "node", "rejected_reason", "error"])


def _varies(column: pd.Series) -> bool:
    return column.map(lambda v: None if _missing(v) else v).nunique(dropna=False) > 1


def _metric_name(metric: str) -> str:
    """``val_top1`` -> ``Val acc``."""
    split, _, kind = metric.partition("_")
    name = {"top1": "acc", "top3": "top-3 acc", "loss": "loss", "f1": "F1"}.get(kind, kind)
    return f"{split.capitalize()} {name}" if kind else metric


def _metric_title(metric: str) -> str:
    """A column title with the unit: ``Val acc (%)``."""
    return f"{_metric_name(metric)} (%)" if _is_accuracy(metric) else _metric_name(metric)


def _fmt_metric(metric: str, value: Any) -> str:
    if _missing(value):
        return _DASH
    if _is_accuracy(metric):
        return f"{100 * float(value):.2f}"
    if metric in ("params",):
        return format_params(value)
    if metric in ("macs",):
        return format_macs(value)
    return f"{float(value):.4g}"


def _fmt_value(key: str, value: Any) -> str:
    """A setting's value as a table cell: ``0.00354``, ``[8, 16]``, ``hflip+rotate``."""
    if _missing(value):
        return _DASH
    if key == "augment":
        return "+".join(value) if value else "none"
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _status_label(status: str, stopped_epoch: Any) -> str:
    if status == "stopped_early":
        return f"stopped at epoch {int(stopped_epoch)}" if not _missing(stopped_epoch) \
            else "stopped early"
    return status


# --------------------------------------------------------------------------- loading


@dataclass
class _Trial:
    """One trial as either source holds it; :func:`_assemble` turns these into frames."""

    trial_id: str
    config: dict[str, Any]
    rows: list[dict[str, float]]  # per step (epoch 0 = rejected before training): metrics
    finals: dict[str, float]
    status: str
    error: str | None = None
    rejected_reason: str | None = None
    node: str | None = None


def load_trials(source: str, *, storage: str | None = None,
                tracking_uri: str | None = None) -> SweepData:
    """A sweep by name (under ``storage``), a Ray results dir, or an MLflow experiment name.

    Ray's files are read when ``source`` is a results dir or a sweep under ``storage``
    (default ``$HPSEARCH_STORAGE`` or ``runs``); otherwise MLflow at ``tracking_uri``
    (default ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``).

    Raises:
        UserError: None of these holds such a sweep.
    """
    from search.runner import META_FILE, run_dir_for
    from search.storage import is_uri, storage_error

    if is_uri(source):  # a sweep folder on remote storage, e.g. s3://bucket/runs/<name>
        return from_ray_dir(source)
    path = Path(source).expanduser()
    if path.is_dir() and _is_results_dir(path):
        return from_ray_dir(path)
    run_dir = run_dir_for(source, storage)
    try:
        if (run_dir / META_FILE).is_file():
            return from_ray_dir(run_dir)
    except (OSError, ValueError) as err:  # remote storage: bad URI, no bucket, no credentials
        raise UserError(storage_error(run_dir.parent, err)) from None
    uri = _tracking_uri(tracking_uri)
    if _store_exists(uri) and _find_experiment(source, uri) is not None:
        return from_mlflow(source, tracking_uri=uri)
    root = run_dir.parent
    sweeps = sorted(p.parent.name for p in root.glob(f"*/{META_FILE}")) if root.is_dir() else []
    listed = f"; sweeps there: {', '.join(sweeps)}" if sweeps else ""
    raise UserError(f"report {source}: not a Ray results dir, not a sweep under {root}/"
                    f"{listed}, and no MLflow experiment '{source}' at {uri} (pass "
                    f"--storage or --tracking-uri)")


def _is_results_dir(path: Path) -> bool:
    return ((path / "hpsearch.json").is_file() or any(path.glob("experiment_state-*.json"))
            or any(path.glob("*/result.json")))


def _tracking_uri(tracking_uri: str | None) -> str:
    from search.tracking import resolve_tracking_uri

    return resolve_tracking_uri(tracking_uri)


def _store_exists(uri: str) -> bool:
    """False for a SQLite file that is not there (opening it would create an empty one)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


# ---- Ray's files


def from_ray_dir(run_dir: str | os.PathLike[str] | RemotePath) -> SweepData:
    """A sweep from Tune's results dir ``<storage>/<name>/`` (its files only; no MLflow), a
    local folder or a URI (read through a temporary local copy without the checkpoints).

    Raises:
        UserError: ``run_dir`` holds no trials, or remote storage cannot be read.
    """
    from search.storage import local_copy, location, storage_error

    where = location(run_dir)
    if isinstance(where, Path):
        return _from_local_dir(where, str(where), where.name)
    try:
        if not (where / "hpsearch.json").is_file() and not any(where.glob("*/result.json")):
            raise UserError(f"report {where}: no sweep there (no hpsearch.json, no trial "
                            "results)")
        copy = local_copy(where)
    except (OSError, ValueError) as err:
        raise UserError(storage_error(where, err)) from None
    try:
        return _from_local_dir(copy, str(where), where.name)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _from_local_dir(run_dir: Path, shown: str, name: str) -> SweepData:
    from search.runner import META_FILE

    meta_path = run_dir / META_FILE
    saved = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    spec = _spec_or_none(saved.get("spec"), f"{run_dir.name}/{META_FILE}")
    from search.tracking import read_trial_dirs, tune_states

    states = tune_states(run_dir)
    trials = [_ray_trial(files, states) for files in read_trial_dirs(run_dir, states)]
    matrices = {t.trial_id: m for t, m in trials if m}
    meta = {"source": "ray", "run_dir": shown, **_meta_from(saved, spec)}
    return _assemble(saved.get("name") or name, spec, [t for t, _ in trials], meta,
                     _objective(spec, None), matrices.get)


def _ray_trial(files: TrialFiles, states: Mapping[str, tuple[str | None, str | None]],
               ) -> tuple[_Trial, list[list[float]] | None]:
    """One trial folder (``result.json``, ``params.json``, ``error.txt``) and its test
    confusion matrix, if it has one."""
    from search.tracking import by_step, result_metrics, result_step, trial_status

    rows = by_step(files.rows)  # a resumed trial may repeat an epoch
    trial_id = files.trial_id or files.dir.name.removeprefix("trial_")
    config = files.config
    error = files.error
    if error is None and (files.dir / "error.pkl").is_file():
        error = "error.pkl (no error.txt)"
    status = trial_status(rows, states.get(trial_id, (None, None))[0], error)
    metric_rows, finals, matrix = [], {}, None
    for r in rows:
        values = result_metrics(r)
        metric_rows.append({"epoch": float(result_step(r)),
                            "timestamp": float(r.get("timestamp", math.nan)),
                            **{k: values[k] for k in HISTORY_METRICS if k in values}})
        finals.update({k: values[k] for k in FINAL_METRICS if k in values})
        if isinstance(r.get("test_confusion"), list) and r["test_confusion"]:
            matrix = r["test_confusion"]
    last = rows[-1] if rows else {}
    trial = _Trial(trial_id=trial_id, config=config, rows=metric_rows, finals=finals,
                   status=status, error=error if status == "failed" else None,
                   rejected_reason=last.get("rejected_reason") if status == "rejected" else None,
                   node=last.get("hostname"))
    return trial, matrix


def _spec_or_none(data: Any, source: str) -> SweepSpec | None:
    if not isinstance(data, dict):
        return None
    try:
        return parse_spec(data, source=source)
    except UserError:  # e.g. written by another version: the report goes on without it
        return None


def _meta_from(saved: Mapping[str, Any], spec: SweepSpec | None) -> dict[str, Any]:
    meta = {k: saved.get(k) for k in ("git_commit", "created", "tracking_uri", "experiment",
                                      "spec_yaml")}
    if spec is not None:
        meta.update(cpu_per_trial=spec.resources.cpu, gpu_per_trial=spec.resources.gpu,
                    max_epochs=spec.budget.max_epochs)
    return meta


def _find_experiment(name: str, uri: str) -> Any:
    from mlflow import MlflowClient

    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return found if found is not None and found.lifecycle_stage == "active" else None


def from_mlflow(experiment: str, *, tracking_uri: str | None = None,
                sweep: str | None = None) -> SweepData:
    """A sweep from MLflow: the experiment's newest sweep run (``sweep``: the one tagged with
    that name) and its nested trial runs, with the per-epoch metric histories.

    Raises:
        UserError: No such experiment, or no sweep run in it.
    """
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = _tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    exp = _find_experiment(experiment, uri) if _store_exists(uri) else None
    if exp is None:
        raise UserError(f"report {experiment}: no MLflow experiment named '{experiment}' at "
                        f"{uri}")
    parents = _search_all(client, exp.experiment_id, "tags.`hpsearch.role` = 'sweep'")
    wanted = sweep or experiment
    parents.sort(key=lambda r: (r.data.tags.get("hpsearch.sweep") == wanted, r.info.start_time),
                 reverse=True)
    if not parents:
        raise UserError(f"report {experiment}: MLflow experiment '{experiment}' holds no sweep "
                        f"run (tag hpsearch.role=sweep); was it written by `hpsearch sweep`?")
    parent = parents[0]
    spec_yaml = _artifact_text(client, parent.info.run_id, "spec.yaml")
    spec = _spec_from_yaml(spec_yaml, f"{experiment}/spec.yaml")
    children = _search_all(client, exp.experiment_id,
                           f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    trials = [_mlflow_trial(client, run) for run in children]
    run_ids = {t.trial_id: run.info.run_id for t, run in zip(trials, children, strict=True)}
    params = parent.data.params
    meta = {"source": "mlflow", "tracking_uri": uri, "experiment": experiment,
            "run_dir": parent.data.tags.get("hpsearch.run_dir"),
            "git_commit": parent.data.tags.get("hpsearch.git_commit"),
            "created": datetime.fromtimestamp(parent.info.start_time / 1000, UTC)
            .strftime("%Y-%m-%dT%H:%M:%S%z"),
            "spec_yaml": spec_yaml, "sweep_host": parent.data.tags.get("hpsearch.host"),
            "cpu_per_trial": _float_or_none(params.get("cpu_per_trial")),
            "gpu_per_trial": _float_or_none(params.get("gpu_per_trial")),
            "max_epochs": _float_or_none(params.get("max_epochs"))}
    if spec is not None:
        meta.update(cpu_per_trial=spec.resources.cpu, gpu_per_trial=spec.resources.gpu,
                    max_epochs=spec.budget.max_epochs)
    objective = _objective(spec, parent.data.tags.get("hpsearch.objective"))

    def confusion(trial_id: str) -> list[list[float]] | None:
        run_id = run_ids.get(trial_id)
        text = _artifact_text(client, run_id, "confusion.csv") if run_id else None
        return _parse_confusion(text) if text else None

    name = parent.data.tags.get("hpsearch.sweep") or experiment
    return _assemble(name, spec, trials, meta, objective, confusion)


def _spec_from_yaml(text: str | None, source: str) -> SweepSpec | None:
    """The spec an MLflow sweep kept, or None (the report goes on without it) when it is not
    a spec: invalid YAML, or over the bounds a spec file is read within."""
    if not text:
        return None
    try:
        return _spec_or_none(parse_yaml(text, source), source)
    except UserError:
        return None


def _mlflow_trial(client: Any, run: Any) -> _Trial:
    """One nested trial run: its params (decoded), metric histories and status tags."""
    tags = run.data.tags
    status = tags.get("hpsearch.status", "unknown")
    return _Trial(
        trial_id=tags.get("hpsearch.trial_id") or run.info.run_name,
        config={k: _decode_param(k, v) for k, v in run.data.params.items()},
        rows=_mlflow_rows(client, run),
        finals={k: v for k, v in run.data.metrics.items() if k in FINAL_METRICS},
        status=status,
        error=tags.get("hpsearch.error") if status == "failed" else None,
        rejected_reason=tags.get("hpsearch.rejected_reason") if status == "rejected" else None,
        node=tags.get("hpsearch.node"))


def _search_all(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _mlflow_rows(client: Any, run: Any) -> list[dict[str, float]]:
    """Per step: ``epoch``, ``timestamp`` (seconds) and the history metrics the run holds."""
    steps: dict[int, dict[str, float]] = {}
    for key in HISTORY_METRICS:
        if key not in run.data.metrics:
            continue
        for m in client.get_metric_history(run.info.run_id, key):
            row = steps.setdefault(m.step, {"epoch": float(m.step), "timestamp": -math.inf})
            row[key] = float(m.value)
            row["timestamp"] = max(row["timestamp"], m.timestamp / 1000)
    return [steps[s] for s in sorted(steps)]


def _artifact_text(client: Any, run_id: str, path: str) -> str | None:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text()
    except Exception:  # noqa: BLE001 - missing artifact or unreachable store: report goes on
        return None


def _parse_confusion(text: str) -> list[list[float]] | None:
    """The tracker's ``confusion.csv`` (header row, then ``true,counts...``) as a matrix."""
    lines = [ln for ln in text.splitlines() if ln.strip()][1:]
    try:
        return [[float(v) for v in ln.split(",")[1:]] for ln in lines] or None
    except ValueError:
        return None


_TEXT_KEYS = frozenset(
    k for k, f in TrialConfig.model_fields.items()
    if f.annotation is str or typing.get_origin(f.annotation) is Literal)


def _decode_param(key: str, text: str) -> Any:
    """An MLflow param (text) back to the config value the trial had (JSON for non-strings)."""
    if key in _TEXT_KEYS:
        return text
    try:
        return json.loads(text)
    except ValueError:
        try:
            return float(text)  # repr of inf / nan
        except ValueError:
            return text


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "null") else None
    except ValueError:
        return None


def _objective(spec: SweepSpec | None, tag: str | None) -> tuple[str, str]:
    if spec is not None:
        return spec.metrics[0], spec.modes[0]
    if tag and ":" in tag:
        metric, mode = tag.rsplit(":", 1)
        if mode in ("max", "min"):
            return metric, mode
    return "val_top1", "max"


# ---- both


def _assemble(name: str, spec: SweepSpec | None, trials: list[_Trial], meta: dict[str, Any],
              objective: tuple[str, str],
              confusion_of: Callable[[str], list[list[float]] | None]) -> SweepData:
    """The trials and history frames, in ranking order, from either source."""
    if not trials:
        where = meta.get("run_dir") or meta.get("tracking_uri")
        raise UserError(f"report {name}: no trials yet in {where}")
    metric, mode = objective
    records, history = [], []
    for t in trials:
        record: dict[str, Any] = {"trial_id": t.trial_id, "status": t.status}
        record.update(t.config)
        trained = [r for r in t.rows if r["epoch"] >= 1]
        for col in _best_columns(metric):
            key = col.removeprefix("best_")
            values = [r[key] for r in trained if math.isfinite(r.get(key, math.nan))]
            better = max if METRICS.get(key, "max") == "max" else min
            record[col] = better(values) if values and t.status != "rejected" else math.nan
        record["best_epoch"] = _best_epoch(trained, metric, mode) if t.status != "rejected" \
            else math.nan
        for key in FINAL_METRICS:
            value = t.finals.get(key, math.nan)
            record[key] = int(value) if key in _INT_FINALS and math.isfinite(value) else value
        stamps = [r["timestamp"] for r in t.rows if math.isfinite(r.get("timestamp", math.nan))]
        totals = [r["time_total_s"] for r in t.rows if "time_total_s" in r]
        epochs = int(max((r["epoch"] for r in trained), default=0))
        record.update(
            epochs_run=epochs,
            stopped_epoch=epochs if t.status == "stopped_early" else None,
            wall_seconds=totals[-1] if totals else math.nan,
            ended=max(stamps) if stamps else math.nan,
            node=t.node, rejected_reason=t.rejected_reason, error=t.error)
        record["started"] = record["ended"] - record["wall_seconds"]
        records.append(record)
        history += [{"trial_id": t.trial_id, "epoch": int(r["epoch"]),
                     "timestamp": r.get("timestamp", math.nan),
                     **{k: r.get(k, math.nan) for k in HISTORY_METRICS}} for r in trained]
    data = SweepData.from_rows(name, records, spec=spec, objective=objective, meta=meta,
                               history=pd.DataFrame(history))
    frame = data.trials
    for trial_id in frame["trial_id"]:
        if frame.loc[frame["trial_id"] == trial_id, "status"].iloc[0] != "completed":
            continue
        matrix = confusion_of(trial_id)
        if matrix:
            data.confusion, data.confusion_trial = matrix, trial_id
            break
    return data


def _best_epoch(rows: list[dict[str, float]], metric: str, mode: str) -> float:
    scored = [(r[metric], r["epoch"]) for r in rows if math.isfinite(r.get(metric, math.nan))]
    if not scored:
        return math.nan
    best = (max if mode == "max" else min)(v for v, _ in scored)
    return next(e for v, e in scored if v == best)


def _ranked(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Best first by the objective; ties by val loss (val accuracy when that is the objective),
    then trial id; unscored trials last."""
    score = _score_column(metric)
    tie, tie_up = ("best_val_top1", False) if score == "best_val_loss" else ("best_val_loss", True)
    return frame.sort_values([score, tie, "trial_id"], ascending=[mode == "min", tie_up, True],
                             na_position="last", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- tables


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
        from trainables.config import parse_trial_config
        from trainables.settings import used_keys
    except ImportError:  # torch missing: show every value
        return [set() for _ in range(len(trials))]
    out = []
    fields = set(TrialConfig.model_fields)
    for _, row in trials.iterrows():
        values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()
                  if k in fields and not _missing(v)}
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
    keys = [k for k in _ALWAYS_SHOWN if k in trials.columns]
    keys += [k for k in _TITLES if k not in keys and k in trials.columns
             and _varies(data.trials[k])]
    keys += [k for k in data.searched if k not in keys and _varies(data.trials[k])]
    if top is not None:
        trials = trials.head(top)
    unused = _unused_settings(trials, keys)
    metric = data.objective[0]
    score = data.score_column
    rows = []
    for (_, t), skip in zip(trials.iterrows(), unused, strict=True):
        row: dict[str, Any] = {"Trial": t["trial_id"]}
        for k in keys:
            row[_TITLES.get(k, k.replace("_", " ").capitalize())] = \
                _DASH if k in skip else _fmt_value(k, t[k])
        row["Params"] = format_params(t["params"])
        row["MACs"] = format_macs(t["macs"])
        if score != "best_val_top1":
            row[f"Best {_metric_title(metric).lower()}"] = _fmt_metric(metric, t[score])
        row["Val acc (%)"] = _fmt_metric("val_top1", t["best_val_top1"])
        row["Test acc (%)"] = _fmt_metric("test_top1", t["test_top1"])
        row["Epochs run"] = _DASH if _missing(t["epochs_run"]) else str(int(t["epochs_run"]))
        row["Status"] = _status_label(t["status"], t["stopped_epoch"])
        rows.append(row)
    columns = ["Trial", *(_TITLES.get(k, k.replace("_", " ").capitalize()) for k in keys),
               "Params", "MACs", "Val acc (%)", "Test acc (%)", "Epochs run", "Status"]
    if score != "best_val_top1":
        columns.insert(columns.index("Val acc (%)"), f"Best {_metric_title(metric).lower()}")
    return pd.DataFrame(rows, columns=columns)


def leaderboard_text(data: SweepData, *, top: int | None = None,
                     max_params: int | None = None, max_macs: int | None = None) -> str:
    """The leaderboard for the terminal, with a one-line summary above it."""
    board = leaderboard(data, top=top, max_params=max_params, max_macs=max_macs)
    s = compute_summary(data)
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in s["counts"].items() if n)
    budget = _budget_text(max_params, max_macs)
    head = f"sweep '{data.name}': {s['trials']} trials ({counts})"
    if budget:
        head += f"; {len(_under_budget(data.trials, max_params, max_macs))} within {budget}"
    if board.empty:
        return f"{head}\n(no trial fits {budget})" if budget else head
    return f"{head}\n{board.to_string(index=False)}"


def _budget_text(max_params: int | None, max_macs: int | None) -> str:
    parts = ([f"params <= {format_params(max_params)}"] if max_params is not None else []) + \
        ([f"MACs <= {format_macs(max_macs)}"] if max_macs is not None else [])
    return " and ".join(parts)


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


def factor_tables(data: SweepData) -> dict[str, pd.DataFrame]:
    """Per searched setting: each value's ``trials``, ``scored`` (trained), ``best`` and
    ``mean`` objective score (continuous settings binned). Trials that do not use the setting
    (momentum under Adam) or lack it (conditional) are left out of its table."""
    metric, mode = data.objective
    score = data.score_column
    keys = data.searched
    unused = _unused_settings(data.trials, keys)
    out = {}
    for key in keys:
        mask = [not _missing(v) and key not in skip
                for v, skip in zip(data.trials[key], unused, strict=True)]
        trials = data.trials[mask]
        if trials.empty:
            continue
        if _is_continuous(data, key):
            labels = _bin_labels(data, key, trials[key])
            order = list(dict.fromkeys(sorted(labels.unique(), key=_bin_start)))
        else:
            labels = trials[key].map(lambda v, k=key: _fmt_value(k, v))
            order = _category_order(data, key, labels)
        frame = pd.DataFrame({"value": labels.to_numpy(), "score": trials[score].to_numpy()})
        grouped = frame.groupby("value", sort=False)["score"]
        table = pd.DataFrame({"trials": grouped.size(), "scored": grouped.count(),
                              "best": grouped.max() if mode == "max" else grouped.min(),
                              "mean": grouped.mean()}).reindex(order)
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
        spec_order = [_fmt_value(key, _hashable(v)) for v in entry.finite_values()]
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
    from search.space import ofat_configs, ofat_labels

    defaults = {**TrialConfig().to_dict(), **spec.trial_defaults()}
    keys = list(spec.space)
    trials = data.trials  # ranked: the first match is the best one
    rows = []
    for (setting, value), config in zip(ofat_labels(spec), ofat_configs(spec), strict=True):
        want = {k: _hashable({**defaults, **config}.get(k)) for k in keys}
        match = trials[[all(_hashable(defaults.get(k)) == want[k] if _missing(t.get(k))
                            else t.get(k) == want[k] for k in keys)
                        for _, t in trials.iterrows()]]
        t = match.iloc[0] if len(match) else None
        shown = ", ".join(f"{k}={_fmt_value(k, _hashable(v))}" for k, v in config.items()) \
            if setting == "baseline" else _fmt_value(setting, _hashable(value))
        rows.append({"setting": setting, "value": shown,
                     "trial_id": t["trial_id"] if t is not None else None,
                     "best": t[data.score_column] if t is not None else math.nan,
                     "test_top1": t["test_top1"] if t is not None else math.nan,
                     "status": _status_label(t["status"], t["stopped_epoch"])
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
    """The Pareto-optimal trials (score vs params and MACs), best score first, with a column
    ``fits`` saying whether each model is within the budget."""
    scored = data.trials[data.trials[data.score_column].notna()]
    score = (data.score_column, data.objective[1])
    front = pareto_front(scored, [score, ("params", "min"), ("macs", "min")])
    table = scored.loc[front, ["trial_id", data.score_column, "test_top1", "params", "macs"]]
    fits = _under_budget(table, max_params, max_macs).index
    return table.assign(fits=table.index.isin(fits)).reset_index(drop=True)


def compute_summary(data: SweepData) -> dict[str, Any]:
    """Counts by status, trial-epochs against a full-budget run, wall time, CPU/GPU-hours."""
    trials = data.trials
    counts = {s: int((trials["status"] == s).sum()) for s in _STATUS_ORDER}
    counts.update({s: int(n) for s, n in trials["status"].value_counts().items()
                   if s not in counts})
    max_epochs = data.meta.get("max_epochs")
    trained = int((trials["status"] != "rejected").sum())
    run = int(trials["epochs_run"].sum())
    full = int(trained * max_epochs) if max_epochs else None
    trial_seconds = float(trials["wall_seconds"].fillna(0).sum())
    started, ended = trials["started"].min(), trials["ended"].max()
    cpu, gpu = data.meta.get("cpu_per_trial"), data.meta.get("gpu_per_trial")
    best = None
    if len(trials) and not _missing(trials[data.score_column].iloc[0]):
        t = trials.iloc[0]
        best = {"trial_id": t["trial_id"], "score": float(t[data.score_column]),
                "val_top1": float(t["best_val_top1"]), "test_top1": _none(t["test_top1"]),
                "params": _none(t["params"]), "macs": _none(t["macs"]),
                "config": {k: t[k].item() if isinstance(t[k], np.generic) else t[k]
                           for k in data.searched if not _missing(t[k])}}
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
    return None if _missing(value) else (int(value) if isinstance(value, np.integer)
                                         else float(value))


def _compute_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    c = summary["counts"]
    rows = [("Trials", str(summary["trials"]))]
    rows += [(f"  {k.replace('_', ' ')}", str(n)) for k, n in c.items() if n]
    rows.append(("Trial-epochs run", str(summary["trial_epochs"])))
    if summary["full_budget_epochs"]:
        rows.append((f"Full budget ({summary['trained_trials']} trials x "
                     f"{summary['max_epochs']:g} epochs)",
                     str(summary["full_budget_epochs"])))
        rows.append(("Saved by early stopping", f"{100 * summary['savings']:.1f}%"))
    rows.append(("Wall time", _duration(summary["wall_seconds"])))
    rows.append(("Sum of trial times", _duration(summary["trial_seconds"])))
    if summary["cpu_hours"] is not None:
        rows.append(("CPU-hours", f"{summary['cpu_hours']:.3f}"))
    if summary["gpu_hours"]:
        rows.append(("GPU-hours", f"{summary['gpu_hours']:.3f}"))
    return pd.DataFrame(rows, columns=["Compute", "Value"])


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return _DASH
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d} ({seconds:.1f} s)"


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def plot_curves(data: SweepData, n: int = _CURVES) -> bytes | None:
    """Train vs val loss per epoch of the top ``n`` trials (a widening gap: overfitting)."""
    ids = [t for t in data.trials["trial_id"] if (data.history["trial_id"] == t).any()][:n]
    if not ids:
        return None
    from matplotlib.ticker import MaxNLocator

    cols = min(2, len(ids))
    rows = math.ceil(len(ids) / cols)
    fig = _figure(5 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, trial_id in zip(axes, ids, strict=False):
        h = data.history[data.history["trial_id"] == trial_id]
        t = data.trials[data.trials["trial_id"] == trial_id].iloc[0]
        ax.plot(h["epoch"], h["train_loss"], marker="o", label="train loss")
        ax.plot(h["epoch"], h["val_loss"], marker="s", linestyle="--", label="val loss")
        if not np.isfinite(h[["train_loss", "val_loss"]].to_numpy(dtype=float)).any():
            ax.text(0.5, 0.5, "loss not finite", transform=ax.transAxes, ha="center")
        ax.set_title(f"trial {trial_id}: val acc {_fmt_metric('val_top1', t['best_val_top1'])}"
                     f"%, {_status_label(t['status'], t['stopped_epoch'])}", fontsize=9)
        last = int(h["epoch"].max())
        ax.set_xlim(0.5, last + 0.5)
        if last <= 20:
            ax.set_xticks(range(1, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(ids):]:
        ax.set_visible(False)
    return _png(fig)


def plot_confusion(data: SweepData) -> bytes | None:
    """The best trial's test confusion matrix as a heatmap."""
    matrix = data.confusion
    if not matrix:
        return None
    n = len(matrix)
    fig = _figure(1.8 + 0.45 * n, 1.4 + 0.45 * n)
    from search.tracking import draw_confusion

    ax = fig.subplots()
    draw_confusion(ax, matrix)
    ax.set_title(f"test confusion, trial {data.confusion_trial}", fontsize=9)
    return _png(fig)


def plot_parallel(data: SweepData) -> bytes | None:
    """Parallel coordinates: one line per scored trial through each searched setting and the
    score, coloured by the score (categorical axes evenly spaced, wide ranges in log)."""
    score = data.score_column
    trials = data.trials[data.trials[score].notna()]
    keys = [k for k in data.searched if _varies(data.trials[k])]
    if len(trials) < 2 or not keys:
        return None
    axes_data: list[tuple[str, np.ndarray, list[tuple[float, str]]]] = []
    for key in [*keys, score]:
        column = trials[key]
        numeric = column.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool)
                             and not _missing(v)).all()
        if numeric and column.nunique() > 1:
            x = column.astype(float).to_numpy()
            log = bool((x > 0).all() and x.max() / x.min() >= 10)
            y = np.log10(x) if log else x
            lo, hi = y.min(), y.max()
            pos = (y - lo) / (hi - lo)
            ticks = [(0.0, f"{x.min():.3g}"), (1.0, f"{x.max():.3g}")]
            if key == score and _is_accuracy(data.objective[0]):
                ticks = [(0.0, f"{100 * x.min():.2f}%"), (1.0, f"{100 * x.max():.2f}%")]
        else:
            labels = column.map(lambda v, k=key: _fmt_value(k, v))
            cats = sorted(labels.unique())
            spots = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5)
                     for i, c in enumerate(cats)}
            pos = labels.map(spots).to_numpy(dtype=float)
            ticks = [(spots[c], c) for c in cats]
        axes_data.append((key, pos, ticks))
    from matplotlib import colormaps

    fig = _figure(max(5.0, 1.8 * len(axes_data)), 4.0)
    ax = fig.subplots()
    values = trials[score].astype(float).to_numpy()
    span = values.max() - values.min()
    shade = (values - values.min()) / span if span > 0 else np.full(len(values), 0.5)
    if data.objective[1] == "min":
        shade = 1 - shade
    cmap = colormaps["viridis"]
    xs = np.arange(len(axes_data))
    for i in range(len(trials)):
        ax.plot(xs, [a[1][i] for a in axes_data], color=cmap(shade[i]), alpha=0.8)
    for x, (_, _, ticks) in zip(xs, axes_data, strict=True):
        ax.axvline(x, color="grey", linewidth=0.8)
        for y, text in ticks:
            ax.annotate(text, (x, y), xytext=(3, 0), textcoords="offset points", fontsize=7,
                        va="center")
    ax.set_xticks(xs, [a[0] for a in axes_data], fontsize=8)
    ax.set_yticks([])
    ax.set_title("parallel coordinates (colour: score, yellow = best)", fontsize=9)
    return _png(fig)


def param_importances(data: SweepData) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances (Optuna) of the searched settings for the objective score.

    Returns:
        ``(importances, note)``: None and the reason when there are fewer than 2 varied
        settings or fewer than 4 scored trials.
    """
    score = data.score_column
    trials = data.trials[data.trials[score].notna()]
    keys = [k for k in data.searched
            if trials[k].map(lambda v: not _missing(v)).all() and _varies(trials[k])]
    if len(trials) < _MIN_IMPORTANCE_TRIALS:
        return None, (f"hyperparameter importance skipped: {len(trials)} scored trial(s), "
                      f"at least {_MIN_IMPORTANCE_TRIALS} needed")
    if len(keys) < 2:
        return None, (f"hyperparameter importance skipped: {len(keys)} setting(s) varied across "
                      f"every scored trial, at least 2 needed")
    if trials[score].nunique() < 2:
        return None, "hyperparameter importance skipped: every scored trial has the same score"
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {k: _distribution(data, k, trials[k]) for k in keys}
    study = optuna.create_study(direction="maximize" if data.objective[1] == "max"
                                else "minimize")
    for _, t in trials.iterrows():
        params = {k: _optuna_value(distributions[k], t[k]) for k in keys}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(t[score])))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except RuntimeError as err:  # e.g. fANOVA finds no variance to split
        return None, f"hyperparameter importance skipped: {err}"
    return {k: float(v) for k, v in found.items()}, (
        f"fANOVA over {len(trials)} scored trials (settings present in every one of them)")


def _distribution(data: SweepData, key: str, values: pd.Series) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    entry = data.spec.space.get(key) if data.spec is not None else None
    present = values.tolist()
    if isinstance(entry, LogUniform):
        return FloatDistribution(min(entry.low, *present), max(entry.high, *present), log=True)
    if isinstance(entry, Uniform):
        return FloatDistribution(min(entry.low, *present), max(entry.high, *present))
    if isinstance(entry, IntRange) and all(isinstance(v, int) for v in present):
        return IntDistribution(min(entry.low, *present), max(entry.high, *present),
                               log=entry.log)
    if entry is None and all(isinstance(v, int | float) and not isinstance(v, bool)
                             for v in present):
        log = min(present) > 0 and max(present) / min(present) >= 10
        if all(isinstance(v, int) for v in present):
            return IntDistribution(min(present), max(present), log=log)
        return FloatDistribution(float(min(present)), float(max(present)), log=log)
    choices = list(dict.fromkeys(_categorical(v) for v in present))
    return CategoricalDistribution(choices)


def _categorical(value: Any) -> Any:
    """Lists as JSON text, as Optuna stores choices (search.space.encode_value)."""
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _optuna_value(distribution: Any, value: Any) -> Any:
    from optuna.distributions import CategoricalDistribution

    return _categorical(value) if isinstance(distribution, CategoricalDistribution) else value


def plot_importances(importances: Mapping[str, float]) -> bytes:
    """Horizontal bars, most important on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _figure(5.5, 0.9 + 0.4 * len(items))
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_xlim(0, 1)
    return _png(fig)


def plot_cost(data: SweepData, *, max_params: int | None = None,
              max_macs: int | None = None) -> bytes | None:
    """Score against params and against MACs (log axes), Pareto front in red."""
    score = data.score_column
    trials = data.trials[data.trials[score].notna() & data.trials["params"].notna()]
    if trials.empty:
        return None
    fig = _figure(10, 3.8)
    metric, mode = data.objective
    scale = 100 if _is_accuracy(metric) else 1
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
        ax.set_ylabel(_metric_title(metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------- writing


def _machine() -> dict[str, Any]:
    """The machine this report is made on (usually the sweep's driver)."""
    info: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(),
                            "python": platform.python_version(), "cpus": os.cpu_count()}
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True)
            gpus = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        except (OSError, subprocess.SubprocessError):
            gpus = []
    info["gpus"] = gpus
    return info


@dataclass
class _Doc:
    """Blocks rendered once to Markdown and once to self-contained HTML; tables also to TeX."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def table(self, name: str, frame: pd.DataFrame, caption: str = "") -> None:
        self.tables[name] = frame
        self.blocks.append(("table", (name, caption)))

    def image(self, name: str, png: bytes | None, alt: str) -> None:
        if png is not None:
            self.images[name] = png
            self.blocks.append(("img", (name, alt)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, payload in self.blocks:
            if kind == "h2":
                out += [f"## {payload}", ""]
            elif kind == "p":
                out += [payload, ""]
            elif kind == "pre":
                out += ["```", payload.rstrip("\n"), "```", ""]
            elif kind == "table":
                name, caption = payload
                out += ([f"*{caption}*", ""] if caption else []) + \
                    [_md_table(self.tables[name]), ""]
            else:
                name, alt = payload
                out += [f"![{alt}]({name}.png)", ""]
        return "\n".join(out)

    def html(self) -> str:
        out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
               f"<title>{html.escape(self.title)}</title>", f"<style>{_CSS}</style>",
               "</head><body>", f"<h1>{html.escape(self.title)}</h1>"]
        for kind, payload in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{html.escape(payload)}</h2>")
            elif kind == "p":
                out.append(f"<p>{html.escape(payload)}</p>")
            elif kind == "pre":
                out.append(f"<pre>{html.escape(payload)}</pre>")
            elif kind == "table":
                name, caption = payload
                if caption:
                    out.append(f"<p class='caption'>{html.escape(caption)}</p>")
                out.append(self.tables[name].to_html(index=False, border=0, na_rep=_DASH))
            else:
                name, alt = payload
                data = base64.b64encode(self.images[name]).decode("ascii")
                out.append(f"<figure><img alt='{html.escape(alt)}' "
                           f"src='data:image/png;base64,{data}'>"
                           f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;overflow:auto}"
        "img{max-width:100%}.caption{font-style:italic;margin-bottom:0}")


def _md_table(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return (_DASH if _missing(v) else str(v)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "\\": r"\textbackslash{}"}


def latex_table(frame: pd.DataFrame) -> str:
    """A ``tabular`` (booktabs) via pandas' ``to_latex`` when jinja2 is there, else by hand."""
    frame = frame.astype(object).where(frame.notna(), _DASH)
    if importlib.util.find_spec("jinja2") is not None:
        return _tex_symbols(frame.to_latex(index=False, escape=True))

    def esc(v: Any) -> str:
        return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(v))

    lines = [r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule",
             " & ".join(esc(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    return _tex_symbols("\n".join([*lines, r"\bottomrule", r"\end{tabular}", ""]))


def _tex_symbols(tex: str) -> str:
    """The few non-ASCII symbols the tables use, as plain LaTeX (pdflatex has no Δ)."""
    return tex.replace("Δ", r"$\Delta$").replace("—", "---").replace("–", "--")


def _factor_display(data: SweepData, key: str, table: pd.DataFrame) -> pd.DataFrame:
    metric = data.objective[0]
    title = _metric_title(metric)
    return pd.DataFrame({
        key: table["value"], "Trials": table["trials"], "Trained": table["scored"],
        f"Best {title.lower()}": table["best"].map(lambda v: _fmt_metric(metric, v)),
        f"Mean {title.lower()}": table["mean"].map(lambda v: _fmt_metric(metric, v))})


def _ofat_display(data: SweepData, table: pd.DataFrame) -> pd.DataFrame:
    metric = data.objective[0]
    acc = _is_accuracy(metric)

    def delta(v: Any) -> str:
        if _missing(v):
            return _DASH
        return f"{100 * v:+.2f} pp" if acc else f"{v:+.4g}"

    return pd.DataFrame({
        "Setting": table["setting"], "Value": table["value"],
        "Trial": table["trial_id"].map(lambda v: _DASH if _missing(v) else v),
        _metric_title(metric): table["best"].map(lambda v: _fmt_metric(metric, v)),
        "Δ vs baseline": table["delta"].map(delta),
        "Test acc (%)": table["test_top1"].map(lambda v: _fmt_metric("test_top1", v)),
        "Status": table["status"]})


def _cost_display(data: SweepData, table: pd.DataFrame, budgeted: bool) -> pd.DataFrame:
    metric = data.objective[0]
    out = pd.DataFrame({
        "Trial": table["trial_id"], "Params": table["params"].map(format_params),
        "MACs": table["macs"].map(format_macs),
        _metric_title(metric): table[data.score_column].map(lambda v: _fmt_metric(metric, v)),
        "Test acc (%)": table["test_top1"].map(lambda v: _fmt_metric("test_top1", v))})
    if budgeted:
        out["Within budget"] = table["fits"].map({True: "yes", False: "no"})
    return out


def write_report(data: SweepData, out_dir: Path, *, top: int | None = None,
                 max_params: int | None = None, max_macs: int | None = None,
                 ) -> dict[str, Path]:
    """Write ``report.md``, a self-contained ``report.html``, ``trials.csv``,
    ``history.csv``, one ``.tex`` per table and the plots' PNGs into ``out_dir``.

    Returns:
        File name -> path of everything written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = _build(data, top=top, max_params=max_params, max_macs=max_macs)
    files: dict[str, Path] = {}

    def put(name: str, content: str | bytes) -> None:
        path = out_dir / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        files[name] = path

    trials = data.trials.copy()
    for column in trials.columns:  # lists as JSON, as in MLflow's params
        if trials[column].map(lambda v: isinstance(v, tuple)).any():
            trials[column] = trials[column].map(
                lambda v: json.dumps(list(v)) if isinstance(v, tuple) else v)
    put("trials.csv", trials.to_csv(index=False))
    put("history.csv", data.history.to_csv(index=False))
    for name, frame in doc.tables.items():
        put(f"{name}.tex", latex_table(frame))
    for name, png in doc.images.items():
        put(f"{name}.png", png)
    put("report.md", doc.markdown())
    put("report.html", doc.html())
    return files


def _build(data: SweepData, *, top: int | None, max_params: int | None,
           max_macs: int | None) -> _Doc:
    spec, meta = data.spec, data.meta
    s = compute_summary(data)
    doc = _Doc(f"Sweep report: {data.name}")
    if spec is not None and spec.description:
        doc.text(spec.description)
    metric, mode = data.objective
    doc.text(f"Objective: {mode}imise {metric}. Source: {meta.get('source')} "
             f"({meta.get('run_dir') or meta.get('tracking_uri')}).")
    if s["best"] is not None:
        b = s["best"]
        settings = ", ".join(f"{k}={_fmt_value(k, v)}" for k, v in b["config"].items())
        unit = " %" if _is_accuracy(metric) else ""
        doc.text(f"Best trial {b['trial_id']}: {_metric_name(metric).lower()} "
                 f"{_fmt_metric(metric, b['score'])}{unit}, test acc "
                 f"{_fmt_metric('test_top1', b['test_top1'])} %, "
                 f"{format_params(b['params'])} params, {format_macs(b['macs'])} MACs"
                 f"{' (' + settings + ')' if settings else ''}.")

    doc.heading("Leaderboard")
    board = leaderboard(data, top=top)
    shown = f"top {len(board)} of {len(data.trials)}" if top is not None else \
        f"all {len(board)}"
    doc.table("leaderboard", board, f"{shown} trials, best first; accuracies in %, params in "
                                    "millions, MACs per image in billions")
    budget = _budget_text(max_params, max_macs)
    if budget:
        within = leaderboard(data, max_params=max_params, max_macs=max_macs)
        doc.heading(f"Best under budget ({budget})")
        if within.empty:
            doc.text(f"No trial fits {budget}.")
        else:
            doc.table("leaderboard_budget", within.head(top or len(within)),
                      f"{len(within)} of {len(data.trials)} trials fit {budget}")

    ofat = ofat_table(data)
    if ofat is not None:
        doc.heading("One factor at a time")
        doc.table("ofat", _ofat_display(data, ofat),
                  "the baseline, then each change on its own; Δ: score minus the baseline's")
    factors = factor_tables(data)
    if factors:
        doc.heading("Factors")
        for key, table in factors.items():
            doc.table(f"factor_{key}", _factor_display(data, key, table),
                      f"{key}: trials per value, best and mean score of the trained ones")

    doc.heading("Cost")
    cost = cost_table(data, max_params=max_params, max_macs=max_macs)
    if cost.empty:
        doc.text("No scored trial with a known cost.")
    else:
        doc.table("pareto", _cost_display(data, cost, bool(budget)),
                  "Pareto-optimal trials: no other trial scores better with fewer params and "
                  "MACs")
        doc.image("cost", plot_cost(data, max_params=max_params, max_macs=max_macs),
                  "score vs parameters and vs MACs per image; red: Pareto front")

    doc.heading("Compute")
    doc.table("compute", _compute_table(s))

    doc.heading("Plots")
    doc.image("curves", plot_curves(data), f"train vs val loss of the top {_CURVES} trials")
    doc.image("confusion", plot_confusion(data),
              f"test confusion matrix of the best completed trial ({data.confusion_trial})")
    doc.image("parallel", plot_parallel(data), "parallel coordinates of the searched settings")
    importances, note = param_importances(data)
    if importances is not None:
        doc.image("importance", plot_importances(importances), f"hyperparameter importance: "
                                                               f"{note}")
    else:
        doc.text(note[:1].upper() + note[1:] + ".")

    doc.heading("Reproducibility")
    machine = _machine()
    nodes = data.trials["node"].dropna().value_counts()
    seeds = {k: sorted({_fmt_value(k, v) for v in data.trials[k].dropna()})
             for k in ("seed", "split_seed") if k in data.trials.columns}
    search_seed = spec.search.seed if spec is not None else None
    lines = [
        f"git commit: {meta.get('git_commit') or 'unknown'}",
        f"sweep created: {meta.get('created') or 'unknown'}",
        f"search seed: {search_seed}; trial seeds: "
        f"{', '.join(seeds.get('seed', [])) or '0 (default)'}; data split seeds: "
        f"{', '.join(seeds.get('split_seed', [])) or '23 (default)'}",
        f"resources per trial: {meta.get('cpu_per_trial')} CPU, "
        f"{meta.get('gpu_per_trial')} GPU",
        f"sweep driver: {meta.get('sweep_host') or 'not recorded'}; trial nodes: "
        f"{', '.join(f'{n} ({c} trials)' for n, c in nodes.items()) or 'unknown'}",
        f"report machine: {machine['host']}, {machine['platform']}, Python "
        f"{machine['python']}, {machine['cpus']} CPUs, GPUs: "
        f"{', '.join(machine['gpus']) or 'none'}",
        f"MLflow: {meta.get('tracking_uri')} (experiment {meta.get('experiment')})",
        f"report written: {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S%z')}",
    ]
    doc.code("\n".join(lines))
    spec_yaml = meta.get("spec_yaml")
    if not spec_yaml and spec is not None:
        import yaml

        spec_yaml = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    if spec_yaml:
        doc.text("The sweep spec:")
        doc.code(spec_yaml)
    return doc

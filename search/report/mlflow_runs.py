"""A sweep read from MLflow: the sweep's parent run and its nested trial runs, with their
params, per-epoch metric histories, status tags and confusion-matrix artifacts."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from hpsearch.search.figures import CONFUSION_CSV, read_confusion
from hpsearch.search.report.assemble import Confusion, Trial, assemble, split_sizes
from hpsearch.search.report.data import SweepData, per_epoch
from hpsearch.search.report.lineage import copies_in_tags
from hpsearch.search.report.saved_spec import (
    objective,
    section,
    spec_facts,
    spec_or_none,
    yaml_mapping,
)
from hpsearch.search.sweepdir import read_final
from hpsearch.search.tracking.store import all_runs
from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import FINAL_METRICS, ROLE_TAG, Role, Status

__all__ = ["find_experiment", "from_mlflow", "store_exists"]


def store_exists(uri: str) -> bool:
    """False for a SQLite file that is not there (opening it would create an empty one)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


def find_experiment(name: str, uri: str) -> Any:
    """The active MLflow experiment ``name`` at ``uri``, or None."""
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

    from hpsearch.search.tracking import resolve_tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    exp = find_experiment(experiment, uri) if store_exists(uri) else None
    if exp is None:
        raise UserError(f"report {experiment}: no MLflow experiment named '{experiment}' at "
                        f"{uri}")
    parents = list(all_runs(client, exp.experiment_id, f"tags.`{ROLE_TAG}` = '{Role.SWEEP}'"))
    wanted = sweep or experiment
    parents.sort(key=lambda r: (r.data.tags.get("hpsearch.sweep") == wanted, r.info.start_time),
                 reverse=True)
    if not parents:
        raise UserError(f"report {experiment}: MLflow experiment '{experiment}' holds no sweep "
                        f"run (tag {ROLE_TAG}={Role.SWEEP}); was it written by `hpsearch sweep`?")
    parent = parents[0]
    spec_yaml = _artifact_text(client, parent.info.run_id, "spec.yaml")
    raw = yaml_mapping(spec_yaml, f"{experiment}/spec.yaml")
    spec = spec_or_none(raw, f"{experiment}/spec.yaml")
    children = [run for run in all_runs(client, exp.experiment_id,
                                        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
                if run.data.tags.get(ROLE_TAG) != Role.FINAL]  # the final model is no trial
    # the runs log every setting a trial used (defaults too); the report, as from Ray's files,
    # shows the sweep's own: what it fixed and what it searched
    given = set(spec.trial_defaults()) | set(spec.space) if spec is not None else \
        _given(raw)
    trials = [_mlflow_trial(client, run, given) for run in children]
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
    meta.update(spec_facts(spec, raw))
    goal = objective(spec, raw, parent.data.tags.get("hpsearch.objective"))

    def confusion(trial_id: str) -> Confusion | None:
        run_id = run_ids.get(trial_id)
        text = _artifact_text(client, run_id, CONFUSION_CSV) if run_id else None
        matrix = read_confusion(text) if text else None
        return (matrix, _csv_classes(text, len(matrix))) if text and matrix else None

    name = parent.data.tags.get("hpsearch.sweep") or experiment
    data = assemble(name, spec, trials, meta, goal, confusion)
    folder = meta["run_dir"]  # the sweep's folder, when it is on this machine: its final model
    data.final = read_final(Path(folder)) if folder and Path(folder).is_dir() else None
    return data


def _given(raw: Any) -> set[str] | None:
    """The settings a saved spec (unchecked) fixed and searched, and ``epochs``; None when it
    names none."""
    keys = set(section(raw, "fixed")) | set(section(raw, "space"))
    return keys | {"epochs"} if keys else None


def _mlflow_trial(client: Any, run: Any, given: set[str] | None = None) -> Trial:
    """One nested trial run: its params (decoded; only the ``given`` settings when known),
    metric histories and status tags."""
    from hpsearch.search.tracking.lineage import settings_now_of

    tags = run.data.tags
    status = tags.get("hpsearch.status", Status.UNKNOWN.value)
    # the settings it ended with: its params, where PBT did not change them since
    params = {k: _decode_param(k, v) for k, v in run.data.params.items()}
    return Trial(
        trial_id=tags.get("hpsearch.trial_id") or run.info.run_name,
        config={k: v for k, v in {**params, **settings_now_of(tags)}.items()
                if given is None or k in given},
        rows=_mlflow_rows(client, run),
        finals={k: v for k, v in run.data.metrics.items() if k in FINAL_METRICS},
        status=status,
        error=tags.get("hpsearch.error") if status == Status.FAILED else None,
        rejected_reason=tags.get("hpsearch.rejected_reason")
        if status == Status.REJECTED else None,
        node=tags.get("hpsearch.node"), sizes=split_sizes(run.data.metrics),
        gpus=tags.get("hpsearch.gpu_ids"), copies=copies_in_tags(tags))


def _csv_classes(text: str, n: int) -> list[str] | None:
    """The class names in ``confusion.csv``'s header, when it names them (not 0..n-1)."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    header = rows[0][1:] if rows else []
    if len(header) != n or header == [str(i) for i in range(n)]:
        return None
    return header


def _mlflow_rows(client: Any, run: Any) -> list[dict[str, float]]:
    """Per step: ``epoch``, ``timestamp`` (seconds) and the per-epoch metrics the run holds
    (the classifier's and its trainable's own)."""
    steps: dict[int, dict[str, float]] = {}
    for key in per_epoch(run.data.metrics):
        for m in client.get_metric_history(run.info.run_id, key):
            row = steps.setdefault(m.step, {"epoch": float(m.step), "timestamp": -math.inf})
            row[key] = float(m.value)
            row["timestamp"] = max(row["timestamp"], m.timestamp / 1000)
    lr = run.data.params.get("lr")
    if "lr" not in run.data.metrics and lr is not None:  # no schedule: the param, every epoch
        for row in steps.values():
            row["lr"] = float(lr)
    return [steps[s] for s in sorted(steps)]


def _artifact_text(client: Any, run_id: str, path: str) -> str | None:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text()
    except Exception:  # noqa: BLE001 - missing artifact or unreachable store: report goes on
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

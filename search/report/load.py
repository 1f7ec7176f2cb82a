"""A sweep read into :class:`~search.report.data.SweepData`, from Ray's files or from MLflow.

Ray's files: ``<storage>/<name>/``, each trial's ``result.json`` and ``params.json``, Tune's
experiment state and ``hpsearch.json`` (a local folder or a URI). MLflow: the sweep's parent run
and its nested trial runs. Both are read into :class:`_Trial` records and assembled once, so
either source gives the same frames.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import tempfile
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from hpsearch.search.figures import CONFUSION_CSV, read_confusion
from hpsearch.search.report.data import (
    INT_FINALS,
    SweepData,
    best_columns,
    own_metrics,
    per_epoch,
)
from hpsearch.search.report.lineage import copies_in_results, copies_in_tags, lineage_frame
from hpsearch.search.spec import Scheduler, SweepSpec, load_plugins, parse_spec
from hpsearch.search.spec.sections import scheduler_shorthand
from hpsearch.search.sweepdir import (
    META_FILE,
    RESULT_FILE,
    STATE_GLOB,
    read_final,
    run_dir_for,
    sweep_names,
)
from hpsearch.search.yamlio import parse_yaml
from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import (
    DEFAULT_OBJECTIVE,
    FINAL_METRICS,
    HISTORY_METRICS,
    METRICS,
    ROLE_TAG,
    Role,
    Status,
    trial_status,
)

if TYPE_CHECKING:
    from hpsearch.search.storage import RemotePath
    from hpsearch.search.tracking import TrialFiles

__all__ = ["from_mlflow", "from_ray_dir", "load_trials"]

logger = logging.getLogger(__name__)

_Confusion = tuple[list[list[float]], list[str] | None]  # a test confusion matrix, class names


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
    gpus: str | None = None  # the GPU ids Ray gave the trial (CUDA_VISIBLE_DEVICES)
    sizes: dict[str, int] | None = None  # images per split it last ran on: train, val
    copies: list[dict[str, Any]] | None = None  # PBT: other trials' weights it trained on


def load_trials(source: str, *, storage: str | None = None,
                tracking_uri: str | None = None) -> SweepData:
    """A sweep by name (under ``storage``), a Ray results dir, or an MLflow experiment name.

    Ray's files are read when ``source`` is a results dir or a sweep under ``storage``
    (default ``$HPSEARCH_STORAGE`` or ``runs``); otherwise MLflow at ``tracking_uri``
    (default ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``).

    Raises:
        UserError: None of these holds such a sweep.
    """
    from hpsearch.search.names import check_plain
    from hpsearch.search.storage import is_uri, location, storage_error

    if is_uri(source):  # a sweep folder on remote storage, e.g. s3://bucket/runs/<name>
        return from_ray_dir(source)
    path = Path(source).expanduser()
    if path.is_dir() and _is_results_dir(path):
        return from_ray_dir(path)
    try:
        run_dir = run_dir_for(check_plain(source), storage)
    except ValueError:  # a path that is no results dir: only MLflow may know the name
        run_dir = None
    try:
        if run_dir is not None and (run_dir / META_FILE).is_file():
            return from_ray_dir(run_dir)
    except (OSError, ValueError) as err:  # remote storage: bad URI, no bucket, no credentials
        raise UserError(storage_error(run_dir.parent, err)) from None
    uri = _tracking_uri(tracking_uri)
    if _store_exists(uri) and _find_experiment(source, uri) is not None:
        return from_mlflow(source, tracking_uri=uri)
    root = run_dir.parent if run_dir is not None else location(
        storage or os.environ.get("HPSEARCH_STORAGE") or "runs")
    sweeps = sweep_names(root)
    listed = f"; sweeps there: {', '.join(sweeps)}" if sweeps else ""
    raise UserError(f"report {source}: not a Ray results dir, not a sweep under {root}/"
                    f"{listed}, and no MLflow experiment '{source}' at {uri} (pass "
                    f"--storage or --tracking-uri)")


def _is_results_dir(path: Path) -> bool:
    return ((path / META_FILE).is_file() or any(path.glob(STATE_GLOB))
            or any(path.glob(f"*/{RESULT_FILE}")))


def _tracking_uri(tracking_uri: str | None) -> str:
    from hpsearch.search.tracking import resolve_tracking_uri

    return resolve_tracking_uri(tracking_uri)


def _store_exists(uri: str) -> bool:
    """False for a SQLite file that is not there (opening it would create an empty one)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


# --------------------------------------------------------------------------- Ray's files


def from_ray_dir(run_dir: str | os.PathLike[str] | RemotePath) -> SweepData:
    """A sweep from Tune's results dir ``<storage>/<name>/`` (its files only; no MLflow), a
    local folder or a URI (read through a temporary local copy without the checkpoints).

    Raises:
        UserError: ``run_dir`` holds no trials, or remote storage cannot be read.
    """
    from hpsearch.search.storage import local_copy, location, storage_error

    where = location(run_dir)
    if isinstance(where, Path):
        return _from_local_dir(where, str(where), where.name)
    try:
        if not (where / META_FILE).is_file() and not any(where.glob(f"*/{RESULT_FILE}")):
            raise UserError(f"report {where}: no sweep there (no {META_FILE}, no trial "
                            "results)")
        copy = local_copy(where)
    except (OSError, ValueError) as err:
        raise UserError(storage_error(where, err)) from None
    try:
        return _from_local_dir(copy, str(where), where.name)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _from_local_dir(run_dir: Path, shown: str, name: str) -> SweepData:
    from hpsearch.search.tracking import read_trial_dirs, tune_states

    meta_path = run_dir / META_FILE
    saved = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    spec = _spec_or_none(saved.get("spec"), f"{run_dir.name}/{META_FILE}")
    states = tune_states(run_dir)
    trials = [_ray_trial(files, states) for files in read_trial_dirs(run_dir, states)]
    matrices = {t.trial_id: m for t, m in trials if m}
    meta = {"source": "ray", "run_dir": shown, **_meta_from(saved, spec)}
    data = _assemble(saved.get("name") or name, spec, [t for t, _ in trials], meta,
                     _objective(spec, saved.get("spec"), None), matrices.get)
    data.final = read_final(run_dir)
    return data


def _ray_trial(files: TrialFiles, states: Mapping[str, tuple[str | None, str | None]],
               ) -> tuple[_Trial, _Confusion | None]:
    """One trial folder (``result.json``, ``params.json``, ``error.txt``) and its test
    confusion matrix with the class names, if it has one."""
    from hpsearch.search.tracking import by_step, result_metrics, result_step

    rows = by_step(files.rows)  # a resumed trial may repeat an epoch
    trial_id = files.trial_id or files.dir.name.removeprefix("trial_")
    error = files.error
    if error is None and (files.dir / "error.pkl").is_file():
        error = "error.pkl (no error.txt)"
    status = trial_status(rows[-1].get("status") if rows else None,
                          states.get(trial_id, (None, None))[0], error).value
    metric_rows, finals, matrix = [], {}, None
    for r in rows:
        values = result_metrics(r)
        metric_rows.append({"epoch": float(result_step(r)),
                            "timestamp": float(r.get("timestamp", math.nan)),
                            **per_epoch(values)})
        finals.update({k: values[k] for k in FINAL_METRICS if k in values})
        if isinstance(r.get("test_confusion"), list) and r["test_confusion"]:
            matrix = (r["test_confusion"], _names(r.get("test_classes")))
    last = rows[-1] if rows else {}
    trial = _Trial(trial_id=trial_id, config=files.config, rows=metric_rows, finals=finals,
                   status=status, error=error if status == Status.FAILED else None,
                   rejected_reason=last.get("rejected_reason")
                   if status == Status.REJECTED else None,
                   node=last.get("hostname"), sizes=_sizes(last),
                   gpus=last.get("gpu_ids") or None, copies=copies_in_results(rows))
    return trial, matrix


def _sizes(values: Mapping[str, Any]) -> dict[str, int]:
    """The images a trial trained and validated on, from its last result or run metrics."""
    return {split: int(values[f"{split}_samples"]) for split in ("train", "val")
            if isinstance(values.get(f"{split}_samples"), int | float)
            and math.isfinite(values[f"{split}_samples"])}


def _names(classes: Any) -> list[str] | None:
    """Class names a trial recorded, if they are a list of strings."""
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        return classes
    return None


def _spec_or_none(data: Any, source: str) -> SweepSpec | None:
    """The saved spec validated, or None: the report goes on without it (written by another
    version, or its plugins cannot be imported here; each such plugin is named in one warning
    line, and the report reads what it needs unchecked: :func:`_spec_facts`)."""
    if not isinstance(data, dict):
        return None
    try:
        load_plugins(data.get("plugins"), source)  # validating the spec needs their names
    except UserError as err:
        logger.warning("report: %s; the report goes on without it (metrics from the trials' "
                       "results; objective, budget and scheduler from the saved spec, unchecked)",
                       err)
        return None
    try:
        return parse_spec(data, source=source)
    except UserError:  # e.g. written by another version: the report goes on without it
        return None


def _meta_from(saved: Mapping[str, Any], spec: SweepSpec | None) -> dict[str, Any]:
    meta = {k: saved.get(k) for k in ("git_commit", "created", "tracking_uri", "experiment",
                                      "spec_yaml")}
    return {**meta, **_spec_facts(spec, saved.get("spec"))}


def _spec_facts(spec: SweepSpec | None, raw: Any) -> dict[str, Any]:
    """What the report's compute and fidelity figures need of the spec: resources, epochs
    and the scheduler's rungs; from the raw saved spec, where each has the right type, when
    it could not be validated (the sweep wrote it validated)."""
    if spec is not None:
        return {"cpu_per_trial": spec.resources.cpu, "gpu_per_trial": spec.resources.gpu,
                "max_epochs": spec.budget.max_epochs,
                "rungs": spec.scheduler.rungs(spec.budget.max_epochs)}
    budget, resources = (_section(raw, key) for key in ("budget", "resources"))
    out: dict[str, Any] = {f"{k}_per_trial": float(resources[k]) for k in ("cpu", "gpu")
                           if _number(resources.get(k))}
    epochs = budget.get("max_epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1:
        out["max_epochs"] = epochs
        given = raw.get("scheduler", {})  # left out: the default (ASHA); null: none
        try:
            out["rungs"] = Scheduler.model_validate(scheduler_shorthand(given)).resolved() \
                .rungs(epochs)
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
            pass
    return out


def _section(raw: Any, key: str) -> dict[str, Any]:
    value = raw.get(key) if isinstance(raw, dict) else None
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


# --------------------------------------------------------------------------- MLflow


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
    parents = _search_all(client, exp.experiment_id, f"tags.`{ROLE_TAG}` = '{Role.SWEEP}'")
    wanted = sweep or experiment
    parents.sort(key=lambda r: (r.data.tags.get("hpsearch.sweep") == wanted, r.info.start_time),
                 reverse=True)
    if not parents:
        raise UserError(f"report {experiment}: MLflow experiment '{experiment}' holds no sweep "
                        f"run (tag {ROLE_TAG}={Role.SWEEP}); was it written by `hpsearch sweep`?")
    parent = parents[0]
    spec_yaml = _artifact_text(client, parent.info.run_id, "spec.yaml")
    raw = _yaml_mapping(spec_yaml, f"{experiment}/spec.yaml")
    spec = _spec_or_none(raw, f"{experiment}/spec.yaml")
    children = [run for run in _search_all(client, exp.experiment_id,
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
    meta.update(_spec_facts(spec, raw))
    objective = _objective(spec, raw, parent.data.tags.get("hpsearch.objective"))

    def confusion(trial_id: str) -> _Confusion | None:
        run_id = run_ids.get(trial_id)
        text = _artifact_text(client, run_id, CONFUSION_CSV) if run_id else None
        matrix = read_confusion(text) if text else None
        return (matrix, _csv_classes(text, len(matrix))) if text and matrix else None

    name = parent.data.tags.get("hpsearch.sweep") or experiment
    data = _assemble(name, spec, trials, meta, objective, confusion)
    folder = meta["run_dir"]  # the sweep's folder, when it is on this machine: its final model
    data.final = read_final(Path(folder)) if folder and Path(folder).is_dir() else None
    return data


def _given(raw: Any) -> set[str] | None:
    """The settings a saved spec (unchecked) fixed and searched, and ``epochs``; None when it
    names none."""
    keys = set(_section(raw, "fixed")) | set(_section(raw, "space"))
    return keys | {"epochs"} if keys else None


def _spec_from_yaml(text: str | None, source: str) -> SweepSpec | None:
    """The spec an MLflow sweep kept, or None (the report goes on without it) when it is not
    a spec: invalid YAML, or over the bounds a spec file is read within."""
    return _spec_or_none(_yaml_mapping(text, source), source)


def _yaml_mapping(text: str | None, source: str) -> Any:
    """A kept spec's YAML as data, read within the bounds a spec file is; None when it is
    not YAML or over them."""
    if not text:
        return None
    try:
        return parse_yaml(text, source)
    except UserError:
        return None


def _mlflow_trial(client: Any, run: Any, given: set[str] | None = None) -> _Trial:
    """One nested trial run: its params (decoded; only the ``given`` settings when known),
    metric histories and status tags."""
    from hpsearch.search.tracking.lineage import settings_now_of

    tags = run.data.tags
    status = tags.get("hpsearch.status", Status.UNKNOWN.value)
    # the settings it ended with: its params, where PBT did not change them since
    params = {k: _decode_param(k, v) for k, v in run.data.params.items()}
    return _Trial(
        trial_id=tags.get("hpsearch.trial_id") or run.info.run_name,
        config={k: v for k, v in {**params, **settings_now_of(tags)}.items()
                if given is None or k in given},
        rows=_mlflow_rows(client, run),
        finals={k: v for k, v in run.data.metrics.items() if k in FINAL_METRICS},
        status=status,
        error=tags.get("hpsearch.error") if status == Status.FAILED else None,
        rejected_reason=tags.get("hpsearch.rejected_reason")
        if status == Status.REJECTED else None,
        node=tags.get("hpsearch.node"), sizes=_sizes(run.data.metrics),
        gpus=tags.get("hpsearch.gpu_ids"), copies=copies_in_tags(tags))


def _csv_classes(text: str, n: int) -> list[str] | None:
    """The class names in ``confusion.csv``'s header, when it names them (not 0..n-1)."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    header = rows[0][1:] if rows else []
    if len(header) != n or header == [str(i) for i in range(n)]:
        return None
    return header


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


def _objective(spec: SweepSpec | None, raw: Any, tag: str | None) -> tuple[str, str]:
    """The metric that ranks the trials and its mode: the spec's first, else as the saved
    spec (unchecked) or MLflow's tag says."""
    if spec is not None:
        return spec.metrics[0], spec.modes[0]
    objective = _section(raw, "objective")
    goals = objective.get("metrics")
    first = goals[0] if isinstance(goals, list) and goals and isinstance(goals[0], dict) \
        else {"name": objective.get("metric"), "mode": objective.get("mode")}
    if isinstance(first.get("name"), str) and first.get("mode") in ("max", "min"):
        return first["name"], first["mode"]
    if tag and ":" in tag:
        metric, mode = tag.rsplit(":", 1)
        if mode in ("max", "min"):
            return metric, mode
    return DEFAULT_OBJECTIVE


# --------------------------------------------------------------------------- both sources


def _assemble(name: str, spec: SweepSpec | None, trials: list[_Trial], meta: dict[str, Any],
              objective: tuple[str, str],
              confusion_of: Callable[[str], _Confusion | None]) -> SweepData:
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


def _record(t: _Trial, metric: str, mode: str, own: tuple[str, ...]) -> dict[str, Any]:
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

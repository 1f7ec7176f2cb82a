"""Driver-side MLflow tracking of a sweep: one parent run, one nested run per trial, replayable.

``MlflowTracker`` is a Tune callback. It only puts events on a queue; one background thread turns
them into batched MLflow calls, so a slow or dead tracking server never slows a trial or the Tune
event loop, and an MLflow error never fails the sweep (one warning, then a ``mlflow_pending``
marker in the run dir). Ray keeps every result in each trial's ``result.json`` anyway, and
:func:`sync` replays those files into MLflow, adding only what is missing.

Runs are keyed, not remembered: a trial's run carries the tag ``hpsearch.trial_id`` under a parent
tagged ``hpsearch.sweep`` + ``hpsearch.run_dir``, and ``<run_dir>/mlflow_runs.json`` caches the
ids per tracking URI. A resumed sweep, a retried trial or a second ``sync`` reattaches to the
same runs and skips every (metric, step) already logged, so nothing is duplicated.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search.storage import Location, RemotePath, local_copy, location, write_atomic

__all__ = ["MARKER_FILE", "RUNS_FILE", "MlflowTracker", "SyncStats", "TrialFiles",
           "flatten_params", "git_commit", "last_line", "plot_curves", "read_results",
           "read_trial_dirs", "resolve_tracking_uri", "result_metrics", "result_step", "sync",
           "trial_status", "write_confusion"]

logger = logging.getLogger(__name__)

RUNS_FILE = "mlflow_runs.json"
MARKER_FILE = "mlflow_pending"
WEIGHTS_FILE = "model.pt"
_THREAD = "hpsearch-mlflow"
_FLUSH, _CLOSE = object(), object()  # control events for the writer thread

# Ray's own bookkeeping in a result: not metrics worth a chart (``epoch`` is the step).
_NOT_METRICS = frozenset({
    "epoch", "timestamp", "training_iteration", "time_this_iter_s", "time_since_restore",
    "iterations_since_restore", "pid", "done", "should_checkpoint", "trial_id", "date",
    "node_ip", "hostname", "experiment_tag", "config", "checkpoint_dir_name",
})
_FINAL = frozenset({"completed", "stopped_early", "diverged", "failed", "rejected"})
_MLFLOW_STATUS = {"failed": "FAILED"}  # every other final status: FINISHED
_BATCH_METRICS = 1000  # MLflow's log_batch limits: 1000 entities, 100 params/tags per call
_BATCH_PARAMS_TAGS = 100
_PARAM_MAX = 6000
_TAG_MAX = 8000


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The explicit URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<abs ./mlflow.db>``."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path('mlflow.db').resolve()}"


@dataclass
class SyncStats:
    """What :func:`sync` did."""

    trials: int = 0
    runs_created: int = 0
    runs_deleted: int = 0
    points_logged: int = 0
    artifacts_logged: int = 0


# --------------------------------------------------------------------------- pure helpers


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings to dotted keys; lists and None as JSON strings (MLflow params are text)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        elif isinstance(value, str):
            out[name] = value[:_PARAM_MAX]
        else:
            try:
                text = json.dumps(value) if not isinstance(value, float) else repr(value)
            except TypeError:
                text = str(value)
            out[name] = text[:_PARAM_MAX]
    return out


def result_step(result: Mapping[str, Any]) -> int:
    """A result's MLflow step: its ``epoch``, else Tune's ``training_iteration``."""
    step = result.get("epoch", result.get("training_iteration", 0))
    return int(step) if isinstance(step, numbers.Real) else 0


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of one result (no strings, no lists, no Ray bookkeeping)."""
    return {k: float(v) for k, v in result.items()
            if k not in _NOT_METRICS and isinstance(v, numbers.Real) and not isinstance(v, bool)}


def trial_status(history: list[dict[str, Any]], tune_status: str | None,
                 error: str | None) -> str:
    """completed | stopped_early | diverged | failed | rejected, or running | unknown if not over.

    The trial's own last ``status`` wins (a retried trial that completed is completed); otherwise
    Tune's: ERROR -> failed, TERMINATED while still "running" -> stopped early by the scheduler.
    """
    last = history[-1].get("status") if history else None
    if last in ("completed", "diverged", "rejected"):
        return last
    if tune_status == "ERROR" or (tune_status is None and error):
        return "failed"
    if tune_status == "TERMINATED":
        return "stopped_early"
    if tune_status in ("RUNNING", "PENDING", "PAUSED"):
        return "running"
    return "unknown"


def read_results(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a Tune ``result.json``; a torn last line (writer killed) is skipped."""
    rows: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def by_step(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per step (the last one wins: a resumed trial may repeat an epoch), in order."""
    merged: dict[int, dict[str, Any]] = {}
    for row in rows:
        merged[result_step(row)] = row
    return [merged[s] for s in sorted(merged)]


@dataclass
class TrialFiles:
    """What one trial folder of a Tune results dir holds (``sync`` and ``report`` read it)."""

    dir: Path
    trial_id: str | None  # from its results, else from Tune's experiment state
    config: dict[str, Any]  # params.json, else the config in its results
    rows: list[dict[str, Any]]  # result.json in file order (a resumed trial may repeat a step)
    error: str | None  # the last line of error.txt


def read_trial_dirs(run_dir: Path, states: Mapping[str, tuple[str | None, str | None]],
                    ) -> list[TrialFiles]:
    """Every trial folder under ``run_dir`` (one with ``params.json`` or ``result.json``);
    ``states`` is :func:`tune_states` of it."""
    by_dir = {d: t for t, (_, d) in states.items() if d}
    dirs = sorted({p.parent for p in run_dir.glob("*/params.json")}
                  | {p.parent for p in run_dir.glob("*/result.json")})
    if states:  # a folder Tune never recorded (its driver was killed) is no trial of the sweep
        dirs = [d for d in dirs if d.name in by_dir]
    found = []
    for trial_dir in dirs:
        rows = read_results(trial_dir / "result.json")
        config = _read_json(trial_dir / "params.json")
        if not isinstance(config, dict):
            config = next((r["config"] for r in rows if isinstance(r.get("config"), dict)), {})
        found.append(TrialFiles(
            dir=trial_dir, config=config, rows=rows, error=last_line(trial_dir / "error.txt"),
            trial_id=next((r["trial_id"] for r in rows if r.get("trial_id")),
                          by_dir.get(trial_dir.name))))
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def last_line(path: str | Path | None) -> str | None:
    """The last non-blank line of a text file (an error's message), cut to MLflow's tag size;
    None when there is no such file."""
    if not path:
        return None
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [ln for ln in lines if ln]
    return lines[-1][:_TAG_MAX] if lines else None


def git_commit() -> str | None:
    """The commit of the hpsearch code that runs: ``$HPSEARCH_GIT_COMMIT`` (set when the
    image is built; containers have no git), else ``git rev-parse HEAD`` of this checkout."""
    if os.environ.get("HPSEARCH_GIT_COMMIT"):
        return os.environ["HPSEARCH_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _weights_in(ckpt: Path, tmp: Path) -> Path | None:
    """A checkpoint folder's model weights: its ``model.pt`` (any Tune checkpoint that has
    one), else the ``model`` entry of a trial's own checkpoint state, written out under
    ``tmp``."""
    import torch

    from trainables.tune_adapter import CHECKPOINT_FILE, load_state

    if (ckpt / WEIGHTS_FILE).is_file():
        return ckpt / WEIGHTS_FILE
    if not (ckpt / CHECKPOINT_FILE).is_file():
        return None

    try:
        state = load_state(ckpt)
    except Exception as err:  # noqa: BLE001 - foreign or corrupt: no weights, not a failure
        logger.warning("no weights from %s: %s", ckpt / CHECKPOINT_FILE, err)
        return None
    if not isinstance(state, dict) or "model" not in state:
        return None
    torch.save(state["model"], tmp / WEIGHTS_FILE)
    return tmp / WEIGHTS_FILE


def _has_weights(ckpt: Location) -> bool:
    from trainables.tune_adapter import CHECKPOINT_FILE

    return (ckpt / WEIGHTS_FILE).exists() or (ckpt / CHECKPOINT_FILE).exists()


def _is_transient(err: BaseException) -> bool:
    """Worth retrying later (server down, timeout, 5xx); a 4xx will fail the same way again."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return not 400 <= err.get_http_status_code() < 500
    return isinstance(err, OSError)  # requests' ConnectionError and Timeout are OSErrors


def _limit_http_retries() -> None:
    # MLflow's REST client retries 7 times with backoff 2 (minutes per call against a dead
    # server); we retry whole batches ourselves, so fail fast unless the user chose otherwise.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


# --------------------------------------------------------------------------- plots


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


# --------------------------------------------------------------------------- MLflow side


@dataclass
class _Run:
    """One MLflow run and what this process knows it holds (so nothing is logged twice)."""

    run_id: str
    logged: set[tuple[str, int]] = field(default_factory=set)  # (key, step) already sent
    seeded: bool = True  # False: ``logged`` not yet read back from MLflow (a reattached run)
    params: dict[str, str] = field(default_factory=dict)  # already on the run
    tags: dict[str, str] = field(default_factory=dict)  # already on the run
    status: str = "RUNNING"
    latest: dict[str, float] = field(default_factory=dict)  # latest value per metric key
    pending_metrics: list[Any] = field(default_factory=list)
    pending_params: dict[str, str] = field(default_factory=dict)
    pending_tags: dict[str, str] = field(default_factory=dict)
    history: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> result
    trial_path: str | None = None
    checkpoint: Any = None  # latest ray.tune.Checkpoint, when known
    compacted: bool = False

    def has_pending(self) -> bool:
        return bool(self.pending_metrics or self.pending_params or self.pending_tags)

    def drop_pending(self) -> None:
        self.pending_metrics, self.pending_params, self.pending_tags = [], {}, {}

    def compact(self) -> None:
        """Forget a finished run's bookkeeping (a long sweep has thousands); keep its id."""
        self.logged, self.params, self.tags, self.latest, self.history = set(), {}, {}, {}, {}
        self.drop_pending()
        self.seeded, self.compacted = False, True


class _Best:
    """Best-so-far result of the sweep by the objective."""

    _SHOWN = ("val_loss", "val_top1", "val_top3", "train_loss", "train_top1", "test_loss",
              "test_top1", "test_top3", "test_f1")

    def __init__(self, metric: str, mode: str, value: float | None = None) -> None:
        self.metric, self.mode, self.value = metric, mode, value
        self.trial_id: str | None = None
        self.result: dict[str, Any] | None = None

    def update(self, trial_id: str, result: Mapping[str, Any]) -> dict[str, float] | None:
        """``best_*`` metrics if this result beats the best so far, else None."""
        value = result.get(self.metric)
        if (result.get("status") == "rejected" or not isinstance(value, numbers.Real)
                or isinstance(value, bool) or not math.isfinite(value)):
            return None
        better = self.value is None or (value > self.value if self.mode == "max"
                                        else value < self.value)
        if not better:
            return None
        self.value, self.trial_id, self.result = float(value), trial_id, dict(result)
        keys = dict.fromkeys((self.metric, *self._SHOWN))
        out = {f"best_{k}": float(result[k]) for k in keys
               if isinstance(result.get(k), numbers.Real) and not isinstance(result[k], bool)}
        out["best_epoch"] = float(result_step(result))
        return out


class _Store:
    """Parent and child runs of one sweep in one tracking store; raises on any MLflow error."""

    def __init__(self, *, tracking_uri: str, run_dir: Location, sweep_name: str,
                 experiment: str | None, objective: tuple[str, str]) -> None:
        from mlflow import MlflowClient

        if tracking_uri.startswith(("http://", "https://")):
            _limit_http_retries()
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_dir = run_dir
        self.sweep = sweep_name
        self.experiment_name = experiment or sweep_name
        self.objective = objective
        self.commit = git_commit()
        self.experiment_id: str | None = None
        self.parent: _Run | None = None
        self.children: dict[str, _Run] = {}
        self.saved = self._load_map()
        self.best = _Best(*objective)
        self.parent_step = 0
        self.lossy = False  # a write was dropped: a run's history may have gaps
        self.created = 0
        self.deleted = 0
        self.points = 0
        self.uploaded = 0

    # ---- run map file: {tracking_uri: {experiment_id, parent_run_id, trials: {id: run}}}

    def _load_map(self) -> dict[str, Any]:
        try:
            data = json.loads((self.run_dir / RUNS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        entry = data.get(self.uri) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else {}

    def save_map(self) -> None:
        path = self.run_dir / RUNS_FILE
        try:
            data = json.loads(path.read_text())
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {}
        trials = {**self.saved.get("trials", {}),
                  **{t: r.run_id for t, r in self.children.items()}}
        data[self.uri] = {
            "experiment": self.experiment_name, "experiment_id": self.experiment_id,
            "parent_run_id": self.parent.run_id if self.parent else None,
            "trials": dict(sorted(trials.items()))}
        write_atomic(path, json.dumps(data, indent=1))

    # ---- runs

    def _experiment(self) -> str:
        if self.experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None and found.lifecycle_stage == "active":
                self.experiment_id = found.experiment_id
            else:
                location = None
                if self.uri.startswith("sqlite:///"):  # else MLflow writes to ./mlruns of cwd
                    db = Path(self.uri.removeprefix("sqlite:///")).resolve()
                    location = (db.parent / "mlartifacts" / self.experiment_name).as_uri()
                self.experiment_id = self.client.create_experiment(
                    self.experiment_name, artifact_location=location)
        return self.experiment_id

    def _reattach(self, run_id: str | None, filter_string: str) -> _Run | None:
        """The run by cached id if it still exists, else the oldest one the tags find."""
        run = None
        if run_id:
            try:
                run = self.client.get_run(run_id)
            except Exception as err:  # noqa: BLE001 - gone, or from another store
                if _is_transient(err):
                    raise
                run = None
            if run is not None and run.info.lifecycle_stage != "active":
                run = None
        if run is None:
            found = self.client.search_runs([self._experiment()], filter_string,
                                            max_results=1, order_by=["attributes.start_time ASC"])
            run = found[0] if found else None
        if run is None:
            return None
        return _Run(run.info.run_id, seeded=False, params=dict(run.data.params),
                    tags=dict(run.data.tags), status=run.info.status,
                    latest=dict(run.data.metrics))

    def seed(self, state: _Run) -> None:
        """Read back which (key, step) points a reattached run already holds."""
        if state.seeded:
            return
        for key in state.latest:
            state.logged.update((key, m.step) for m in
                                self.client.get_metric_history(state.run_id, key))
        state.seeded = True

    def ensure_parent(self, spec_yaml: str = "", sweep_params: Mapping[str, Any] | None = None,
                      host: str | None = None, reopen: bool = False) -> _Run:
        """The sweep's parent run: found by id or tags, else created; spec + params logged.

        ``reopen``: a resumed sweep marks a finished parent RUNNING again and continues its
        ``best_*`` series where it stopped.
        """
        if self.parent is not None:
            return self.parent
        run_dir = str(self.run_dir)
        state = self._reattach(self.saved.get("parent_run_id"),
                               f"tags.`hpsearch.role` = 'sweep' and tags.`hpsearch.sweep` = "
                               f"'{_quote(self.sweep)}' and tags.`hpsearch.run_dir` = "
                               f"'{_quote(run_dir)}'")
        if state is None:
            tags = {"hpsearch.role": "sweep", "hpsearch.sweep": self.sweep,
                    "hpsearch.run_dir": run_dir, "hpsearch.objective": ":".join(self.objective)}
            if self.commit:
                tags.update({"hpsearch.git_commit": self.commit,
                             "mlflow.source.git.commit": self.commit})
            run = self.client.create_run(self._experiment(), tags=tags, run_name=self.sweep)
            state = _Run(run.info.run_id, tags=tags)
            self.created += 1
        else:
            self.seed(state)
            if reopen:
                self.parent_step = max((s for _, s in state.logged), default=0)
                self.best.value = state.latest.get(f"best_{self.objective[0]}")
                if state.status != "RUNNING":
                    self.client.update_run(state.run_id, status="RUNNING")
                    state.status = "RUNNING"
        self.parent = state
        self.save_map()
        if host:
            self.set_tags(state, {"hpsearch.host": host})
        if sweep_params:
            self.add_params(state, flatten_params(sweep_params))
        if spec_yaml and "spec.yaml" not in self.artifact_names(state):
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "spec.yaml").write_text(spec_yaml)
                self.upload(state, Path(tmp) / "spec.yaml")
        return state

    def ensure_child(self, trial_id: str, config: Mapping[str, Any] | None,
                     trial_path: str | None = None) -> _Run:
        """The trial's nested run: found by id or tags under the parent, else created.

        A reattached run learns its logged points lazily (:meth:`seed`), on its first metric.
        """
        state = self.children.get(trial_id)
        if state is None or state.compacted:
            parent = self.ensure_parent()
            known = state.run_id if state else self.saved.get("trials", {}).get(trial_id)
            found = self._reattach(known, f"tags.`hpsearch.trial_id` = '{_quote(trial_id)}' "
                                          f"and tags.`mlflow.parentRunId` = '{parent.run_id}'")
            if found is None:
                tags = {"mlflow.parentRunId": parent.run_id, "hpsearch.role": "trial",
                        "hpsearch.trial_id": trial_id, "hpsearch.sweep": self.sweep,
                        "hpsearch.status": "running"}
                if self.commit:
                    tags.update({"hpsearch.git_commit": self.commit,
                                 "mlflow.source.git.commit": self.commit})
                run = self.client.create_run(self._experiment(), tags=tags, run_name=trial_id)
                found = _Run(run.info.run_id, tags=tags)
                self.created += 1
            if state is not None:
                found.trial_path, found.checkpoint = state.trial_path, state.checkpoint
            state = self.children[trial_id] = found
            self.save_map()
        if config:
            self.add_params(state, flatten_params(config))
        if trial_path and state.trial_path != trial_path:
            state.trial_path = trial_path
            self.set_tags(state, {"hpsearch.trial_dir": str(self.trial_folder(trial_path))})
        return state

    def trial_folder(self, trial_path: str) -> Location:
        """A trial's own folder: on remote storage the one in the sweep's folder, not the local
        copy (Tune's driver staging folder, or the one ``sync`` downloaded) results are read
        from."""
        if isinstance(self.run_dir, RemotePath):
            return self.run_dir / Path(trial_path).name
        return Path(trial_path)

    # ---- buffered writes

    def add_params(self, state: _Run, params: Mapping[str, str]) -> None:
        for key, value in params.items():
            if key not in state.params:  # params are immutable in MLflow: never re-send
                state.pending_params[key] = value

    def set_tags(self, state: _Run, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            value = str(value)[:_TAG_MAX]
            if state.tags.get(key) != value:
                state.pending_tags[key] = value

    def add_metrics(self, state: _Run, metrics: Mapping[str, float], step: int,
                    timestamp_ms: int) -> None:
        from mlflow.entities import Metric

        self.seed(state)
        for key, value in metrics.items():
            if (key, step) not in state.logged:
                state.logged.add((key, step))
                state.pending_metrics.append(Metric(key, value, timestamp_ms, step))

    def add_result(self, trial_id: str, result: Mapping[str, Any],
                   trial_path: str | None = None, metrics: bool = True) -> _Run:
        """Buffer one Tune result: the trial's metrics at step=epoch, node tags, best-so-far."""
        state = self.ensure_child(trial_id, result.get("config"), trial_path)
        step = result_step(result)
        stamp_ms = _stamp_ms(result)
        state.history[step] = {k: v for k, v in result.items() if k != "config"}
        if metrics:
            self.add_metrics(state, result_metrics(result), step, stamp_ms)
        tags = {k: result[k] for k in ("hostname", "node_ip", "device") if result.get(k)}
        self.set_tags(state, {f"hpsearch.{'node' if k == 'hostname' else k}": v
                              for k, v in tags.items()})
        self.parent_step += 1
        best = self.best.update(trial_id, result)
        if best is not None and self.parent is not None:
            self.add_metrics(self.parent, best, self.parent_step, stamp_ms)
            self.set_tags(self.parent, {"hpsearch.best_trial_id": trial_id,
                                        "hpsearch.best_run_id": state.run_id})
        return state

    def flush(self, state: _Run) -> None:
        """Send a run's buffered params, tags and metrics in as few ``log_batch`` calls as fit."""
        from mlflow.entities import Param, RunTag

        while state.has_pending():
            params = list(state.pending_params.items())[:_BATCH_PARAMS_TAGS]
            tags = list(state.pending_tags.items())[:_BATCH_PARAMS_TAGS]
            metrics = state.pending_metrics[:_BATCH_METRICS - len(params) - len(tags)]
            self.client.log_batch(state.run_id, metrics=metrics,
                                  params=[Param(k, v) for k, v in params],
                                  tags=[RunTag(k, v) for k, v in tags], synchronous=True)
            for k, _ in params:
                state.params[k] = state.pending_params.pop(k)
            for k, v in tags:
                if state.pending_tags.get(k) == v:
                    del state.pending_tags[k]
                state.tags[k] = v
            del state.pending_metrics[:len(metrics)]
            self.points += len(metrics)

    def runs(self) -> list[_Run]:
        return [r for r in (self.parent, *self.children.values()) if r is not None]

    def artifact_names(self, state: _Run, path: str | None = None) -> set[str]:
        return {f.path for f in self.client.list_artifacts(state.run_id, path)}

    def upload(self, state: _Run, local: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(state.run_id, str(local), artifact_path)
        self.uploaded += 1

    @staticmethod
    def complete(state: _Run, rows: list[dict[str, Any]]) -> bool:
        """Whether a finished run already holds every step of ``rows`` (its tracker said so)."""
        through = state.tags.get("hpsearch.synced_through", "")
        return (state.status in ("FINISHED", "FAILED") and through.isdigit()
                and int(through) >= max((result_step(r) for r in rows), default=0))

    def finish(self, trial_id: str, status: str, *, error: str | None = None,
               only_missing: bool = False) -> None:
        """Catch up the trial's points from its result.json, set final status tags, upload the
        learning-curve and confusion artifacts, end the run, then forget its bookkeeping."""
        state = self.children[trial_id]
        history = self._history(state)
        if not self.complete(state, history):
            for row in history:  # heals gaps left by an outage or an earlier session
                self.add_metrics(state, result_metrics(row), result_step(row), _stamp_ms(row))
        tags: dict[str, Any] = {"hpsearch.status": status}
        if status == "stopped_early":
            tags["hpsearch.stopped_epoch"] = result_step(history[-1]) if history else 0
        if status == "failed" and error:
            tags["hpsearch.error"] = error
        if status == "rejected" and history and history[-1].get("rejected_reason"):
            tags["hpsearch.rejected_reason"] = history[-1]["rejected_reason"]
        self.set_tags(state, tags)
        self.flush(state)
        if status not in _FINAL:
            return
        if history and not self.lossy:
            # After the flush: every step up to here is in MLflow, so a sync may skip this run.
            self.set_tags(state, {"hpsearch.synced_through": result_step(history[-1])})
            self.flush(state)
        if history:
            existing = self.artifact_names(state) if only_missing else set()
            with tempfile.TemporaryDirectory() as tmp:
                for local in self._trial_artifacts(trial_id, status, history, Path(tmp)):
                    if local.name not in existing:
                        self.upload(state, local)
        end = _MLFLOW_STATUS.get(status, "FINISHED")
        if state.status != end:
            self.end_run(state.run_id, end)
            state.status = end
        state.compact()

    def end_run(self, run_id: str, status: str) -> None:
        """Like ``MlflowClient.set_terminated`` minus its extra ``get_run`` and the
        "View run at" lines it prints to stdout: one pair per trial swamps Tune's output."""
        from mlflow.entities import RunStatus

        try:
            store = self.client._tracking_client.store
            update = store.update_run_info
        except AttributeError:  # a future MLflow: the public call, prints and all
            self.client.set_terminated(run_id, status=status)
            return
        update(run_id, run_status=RunStatus.from_string(status), end_time=_now_ms(),
               run_name=None)

    def _history(self, state: _Run) -> list[dict[str, Any]]:
        disk = read_results(Path(state.trial_path) / "result.json") if state.trial_path else []
        return by_step([*disk, *(state.history[s] for s in sorted(state.history))])

    @staticmethod
    def _trial_artifacts(trial_id: str, status: str, history: list[dict[str, Any]],
                         tmp: Path) -> list[Path]:
        files = []
        if any("train_loss" in r or "val_loss" in r for r in history):
            plot_curves(history, tmp / "curves.png", f"trial {trial_id} ({status})")
            files.append(tmp / "curves.png")
        matrix = next((r["test_confusion"] for r in reversed(history)
                       if isinstance(r.get("test_confusion"), list) and r["test_confusion"]),
                      None)
        if matrix is not None:
            write_confusion(matrix, tmp / "confusion.csv", tmp / "confusion.png")
            files += [tmp / "confusion.csv", tmp / "confusion.png"]
        return files

    def log_best(self, checkpoints: Mapping[str, Any] | None = None,
                 only_missing: bool = False) -> Path | None:
        """The best result's trial weights (``model.pt``) as parent artifact ``best/model.pt``,
        with ``best/best.json`` (trial, run, epoch, metrics).

        Prefers the checkpoint saved with the best result; falls back to the trial's latest,
        then to Tune's record of it. On remote storage only that one checkpoint is fetched.
        """
        best, parent = self.best, self.parent
        if best.trial_id is None or best.result is None or parent is None:
            return None
        if only_missing and "best/best.json" in self.artifact_names(parent, "best"):
            return None
        child = self.children.get(best.trial_id)
        with tempfile.TemporaryDirectory() as tmp:
            found = self._best_checkpoint(child.trial_path, best.result.get(
                "checkpoint_dir_name"), Path(tmp)) if child and child.trial_path else None
            if found is not None:
                weights = _weights_in(found[0], Path(tmp))
                if weights is not None:
                    return self._upload_best(weights, found[1])
            checkpoint = (checkpoints or {}).get(best.trial_id)
            if checkpoint is not None:
                with checkpoint.as_directory() as local:  # remote storage: a local copy
                    weights = _weights_in(Path(local), Path(tmp))
                    return self._upload_best(weights, checkpoint.path if weights else None)
            return self._upload_best(None, None)

    def _best_checkpoint(self, trial_path: str, name: str | None,
                         tmp: Path) -> tuple[Path, str] | None:
        """A local folder of the trial's checkpoint ``name``, else of its newest one, and where
        that checkpoint is; from remote storage only this one checkpoint is downloaded."""
        from trainables.tune_adapter import CHECKPOINT_FILE, COMPLETE_FILE

        wanted = (WEIGHTS_FILE, CHECKPOINT_FILE, COMPLETE_FILE)  # all fetched from S3
        trial = self.trial_folder(trial_path)
        candidates = [trial / name] if name else []
        candidates += sorted(trial.glob("checkpoint_*"), key=str, reverse=True)
        for ckpt in candidates:
            if not _has_weights(ckpt):
                continue
            if isinstance(ckpt, RemotePath):
                local = ckpt.download(tmp / ckpt.name, skip=lambda rel: rel not in wanted)
                return local, str(ckpt)
            return ckpt, str(ckpt)
        return None

    def _upload_best(self, weights: Path | None, source: str | None) -> Path | None:
        best, parent = self.best, self.parent
        if parent is None or best.result is None or best.trial_id is None:
            return None
        weights = weights if weights is not None and weights.is_file() else None
        if weights is not None:
            self.upload(parent, weights, "best")
        child = self.children.get(best.trial_id)
        info = {"trial_id": best.trial_id, "run_id": child.run_id if child else None,
                "metric": best.metric, "mode": best.mode, "value": best.value,
                "epoch": result_step(best.result),
                "checkpoint": best.result.get("checkpoint_dir_name"),
                "weights_from": source if weights else None,
                "metrics": result_metrics(best.result)}
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "best.json").write_text(json.dumps(info, indent=1))
            self.upload(parent, Path(tmp) / "best.json", "best")  # last: marks "done"
        return weights


def _stamp_ms(result: Mapping[str, Any]) -> int:
    stamp = result.get("timestamp")
    return int(stamp * 1000) if isinstance(stamp, numbers.Real) else _now_ms()


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _touch_marker(run_dir: Location, reason: str) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MARKER_FILE).write_text(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {reason}\n"
            f"MLflow may lack results of this sweep; `hpsearch sync {run_dir}` replays them.\n")
    except OSError:
        pass


# --------------------------------------------------------------------------- the callback


class MlflowTracker(Callback):
    """Tune callback: the sweep as a parent MLflow run with one nested run per trial.

    Args:
        sweep_name: The sweep's name (tag ``hpsearch.sweep``, parent run name).
        run_dir: Tune's experiment dir ``<storage>/<name>``: holds ``mlflow_runs.json`` and the
            ``mlflow_pending`` marker.
        tracking_uri: MLflow tracking URI; default :func:`resolve_tracking_uri`.
        experiment: MLflow experiment name; default the sweep name.
        spec_yaml: The sweep spec's text, logged as parent artifact ``spec.yaml``.
        sweep_params: Search and scheduler settings, logged as parent params.
        objective: ``(metric, "max" | "min")`` that ranks results for ``best_*`` and weights.
        flush_interval: Seconds the writer thread may hold metrics before sending a batch.
        retry_interval: Seconds between attempts while MLflow is failing.
        close_timeout: Seconds ``on_experiment_end`` waits for MLflow before giving up (the
            marker then says a ``sync`` is due).
    """

    def __init__(self, *, sweep_name: str, run_dir: str | Path, tracking_uri: str | None = None,
                 experiment: str | None = None, spec_yaml: str = "",
                 sweep_params: Mapping[str, Any] | None = None,
                 objective: tuple[str, str] = ("val_top1", "max"),
                 flush_interval: float = 1.0, retry_interval: float = 15.0,
                 close_timeout: float = 60.0) -> None:
        if objective[1] not in ("max", "min"):
            raise ValueError(f"objective mode must be 'max' or 'min', but got {objective[1]!r}")
        self.sweep_name = sweep_name
        self.run_dir = location(run_dir)
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.spec_yaml = spec_yaml
        self.sweep_params = dict(sweep_params or {})
        self.objective = (objective[0], objective[1])
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.close_timeout = close_timeout
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._store: _Store | None = None
        self._warned = False
        self._degraded = False
        self._lost = False  # something was dropped: only a sync can bring it back
        self._marker_preexisting = False
        self._closed = False
        self._progress = time.monotonic()  # when the writer last delivered an event

    # Tune pickles the run config (callbacks included) into tuner.pkl: leave the thread out.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("sweep_name", "run_dir", "tracking_uri", "experiment", "spec_yaml",
                "sweep_params", "objective", "flush_interval", "retry_interval", "close_timeout")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def pending(self) -> bool:
        """Whether MLflow may lack results (failed or unsent writes): ``sync`` is due."""
        try:
            return (self.run_dir / MARKER_FILE).exists()
        except OSError:  # remote storage unreachable right now: assume the worst
            return True

    # ---- Tune hooks: each only enqueues

    def setup(self, **info: Any) -> None:
        if self._closed:  # the same tracker passed to another fit()
            self._reset()
        self._start()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(_on_start, trial.trial_id, dict(trial.config), _trial_path(trial), _gpus(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._put(_on_result, trial.trial_id, dict(result), _trial_path(trial))

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        self._put(_on_checkpoint, trial.trial_id, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(_on_end, trial.trial_id, "TERMINATED", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(_on_end, trial.trial_id, "ERROR", trial.error_file)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(_on_recover, trial.trial_id, trial.error_file, trial.num_failures)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._put(_on_best, {t.trial_id: t.checkpoint for t in trials})
        self.close()

    # ---- public

    def log_best_weights(self, path: str | Path, artifact_path: str = "best") -> None:
        """Upload a file (e.g. chosen weights) to the parent run, in the background."""
        self._put(_on_artifact, Path(path), artifact_path)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far reached MLflow; False if it could not (yet)."""
        if self._thread is None or not self._thread.is_alive():
            return not self._degraded
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        done.wait(timeout)
        return done.is_set() and not self._degraded

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue (retrying up to ``timeout``), end the parent run, stop the thread."""
        if self._thread is None or self._closed:
            return not self._lost
        self._closed = True
        timeout = self.close_timeout if timeout is None else timeout
        self._queue.put((_CLOSE, time.monotonic() + timeout))
        # A writer that is behind but delivering (a long sweep on a slow store) is waited for;
        # one stuck in a call gets the timeout + 30 s (one in-flight call) from its last delivery.
        self._progress = max(self._progress, time.monotonic())
        while self._thread.is_alive() and time.monotonic() - self._progress < timeout + 30:
            self._thread.join(1.0)
        if self._thread.is_alive():
            _touch_marker(self.run_dir, "the MLflow writer made no progress for "
                          f"{timeout + 30:.0f} s at the end of the sweep")
            return False
        return not self._lost and not self._degraded

    # ---- writer thread

    def _put(self, *event: Any) -> None:
        self._start()
        self._queue.put(event)

    def _start(self) -> None:
        if self._thread is not None:
            return
        self._marker_preexisting = self.pending
        if self._marker_preexisting:
            logger.warning("MLflow may lack results of an earlier session of this sweep "
                           "(%s exists); `hpsearch sync %s` replays them",
                           self.run_dir / MARKER_FILE, self.run_dir)
        # Until close() confirms delivery: a driver killed mid-sweep leaves the marker behind.
        _touch_marker(self.run_dir, "sweep in progress")
        _quiet_retry_warnings()
        self._thread = threading.Thread(target=self._loop, name=_THREAD, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        backlog: deque[tuple[Any, ...]] = deque()
        waiters: list[threading.Event] = []
        deadline: float | None = None
        last_try = last_flush = 0.0
        attempts = 0
        while True:
            wait = 0.05 if deadline else (self.retry_interval if self._degraded
                                          else self.flush_interval)
            for event in self._take(wait):
                if event[0] is _FLUSH:
                    waiters.append(event[1])
                elif event[0] is _CLOSE:
                    deadline = event[1]
                else:
                    backlog.append(event)
            now = time.monotonic()
            if not self._degraded or deadline or now - last_try >= self.retry_interval:
                last_try = now
                # Metrics wait up to flush_interval, so one log_batch carries many results.
                force = bool(waiters) or deadline is not None \
                    or now - last_flush >= self.flush_interval
                attempts = self._drain(backlog, attempts, flush=force)
                if force and not self._degraded:
                    last_flush = now
            for done in waiters:
                done.set()
            waiters.clear()
            if deadline is not None:
                if not self._degraded:
                    self._finish()
                    return
                if time.monotonic() >= deadline:
                    self._give_up(backlog)
                    return
                time.sleep(min(self.retry_interval, max(0.0, deadline - time.monotonic()), 2.0))

    def _take(self, wait: float) -> list[tuple[Any, ...]]:
        """Every queued event, waiting up to ``wait`` seconds for the first."""
        try:
            events = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events

    def _drain(self, backlog: deque[tuple[Any, ...]], attempts: int, flush: bool) -> int:
        """Handle events in order (then send buffers if ``flush``); stop at a transient error.

        Returns how often the head event has failed in a row: after 20 it is dropped, so one
        poisoned event cannot hold back the rest forever.
        """
        was_degraded = self._degraded
        try:
            store = self._open()
            while backlog:
                try:
                    handler, *args = backlog[0]
                    handler(store, *args)
                except Exception as err:  # noqa: BLE001 - MLflow must never fail the sweep
                    if _is_transient(err) and attempts < 20:
                        self._failed(err, transient=True)
                        return attempts + 1
                    self._failed(err, transient=False)
                backlog.popleft()
                self._progress = time.monotonic()
                attempts = 0
            for run in store.runs() if flush else ():
                try:
                    store.flush(run)
                except Exception as err:  # noqa: BLE001
                    if _is_transient(err):
                        self._failed(err, transient=True)
                        return attempts
                    run.drop_pending()
                    self._failed(err, transient=False)
        except Exception as err:  # noqa: BLE001 - e.g. the store could not even be opened
            self._failed(err, transient=_is_transient(err))
            return attempts + 1
        self._degraded = False
        if was_degraded:
            logger.warning("MLflow reachable again: tracking caught up with the sweep")
        return attempts

    def _open(self) -> _Store:
        if self._store is None:
            store = _Store(tracking_uri=self.tracking_uri, run_dir=self.run_dir,
                           sweep_name=self.sweep_name, experiment=self.experiment,
                           objective=self.objective)
            store.ensure_parent(self.spec_yaml, self.sweep_params, socket.gethostname(),
                                reopen=True)
            self._store = store
        return self._store

    def _failed(self, err: BaseException, *, transient: bool) -> None:
        from mlflow.exceptions import MlflowException

        self._degraded = self._degraded or transient
        self._lost = self._lost or not transient
        if self._store is not None and not transient:
            self._store.lossy = True
        _touch_marker(self.run_dir, f"MLflow error: {type(err).__name__}: {err}"[:500])
        if not isinstance(err, (MlflowException, OSError)):  # a bug here, not an outage
            logger.warning("MLflow tracking error (event dropped)", exc_info=err)
            return
        if self._warned:
            logger.debug("MLflow error (%s): %s", "will retry" if transient else "dropped", err)
            return
        self._warned = True
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        hint = " (is this host in the server's --allowed-hosts?)" if "403" in first else ""
        logger.warning("MLflow logging to %s failed: %s%s. The sweep goes on; Ray keeps every "
                       "result in the trial dirs, and `hpsearch sync %s` catches MLflow up.",
                       self.tracking_uri, first, hint, self.run_dir)

    def _finish(self) -> None:
        store = self._store
        try:
            if store is not None and store.parent is not None:
                store.client.set_terminated(store.parent.run_id, status="FINISHED")
        except Exception as err:  # noqa: BLE001
            self._failed(err, transient=False)
        if not self._lost and not self._marker_preexisting:
            try:
                (self.run_dir / MARKER_FILE).unlink(missing_ok=True)
            except OSError as err:  # remote storage unreachable: the marker only asks a sync
                logger.warning("could not remove %s: %s", self.run_dir / MARKER_FILE, err)

    def _give_up(self, backlog: deque[tuple[Any, ...]]) -> None:
        self._lost = True
        logger.warning("MLflow still unreachable after %.0f s: %d event(s) not logged; "
                       "`hpsearch sync %s` replays them from the trial dirs.",
                       self.close_timeout, len(backlog), self.run_dir)
        _touch_marker(self.run_dir, f"{len(backlog)} event(s) not delivered")


# Writer-thread event handlers: each event on the queue is ``(handler, *args)``.


def _on_start(store: _Store, trial_id: str, config: dict[str, Any], trial_path: str | None,
              gpus: float) -> None:
    run = store.ensure_child(trial_id, config, trial_path)
    store.set_tags(run, {"hpsearch.status": "running"})
    if "hpsearch.device" not in run.tags:
        store.set_tags(run, {"hpsearch.device": "cuda" if gpus else "cpu"})
    if run.status != "RUNNING":  # a resumed or retried trial
        store.client.update_run(run.run_id, status="RUNNING")
        run.status = "RUNNING"


def _on_result(store: _Store, trial_id: str, result: dict[str, Any],
               trial_path: str | None) -> None:
    run = store.add_result(trial_id, result, trial_path)
    if len(run.pending_metrics) >= _BATCH_METRICS:
        store.flush(run)


def _on_checkpoint(store: _Store, trial_id: str, checkpoint: Any) -> None:
    if trial_id in store.children:
        store.children[trial_id].checkpoint = checkpoint


def _on_end(store: _Store, trial_id: str, tune_status: str, error_file: str | None) -> None:
    run = store.ensure_child(trial_id, None)
    error = last_line(error_file)
    store.finish(trial_id, trial_status(store._history(run), tune_status, error), error=error)


def _on_recover(store: _Store, trial_id: str, error_file: str | None, failures: int) -> None:
    run = store.ensure_child(trial_id, None)
    store.set_tags(run, {"hpsearch.status": "retrying", "hpsearch.failures": failures,
                         "hpsearch.error": last_line(error_file) or ""})


def _on_best(store: _Store, checkpoints: dict[str, Any]) -> None:
    for run in store.runs():
        store.flush(run)
    known = {t: r.checkpoint for t, r in store.children.items()}
    store.log_best({t: c or known.get(t) for t, c in checkpoints.items()})


def _on_artifact(store: _Store, path: Path, artifact_path: str | None) -> None:
    store.upload(store.ensure_parent(), path, artifact_path)


class _NotFromWriter(logging.Filter):
    """Drops urllib3's warning per HTTP retry when it comes from the writer thread: during an
    outage that is a line every few seconds, and the tracker already warned once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return threading.current_thread().name != _THREAD


def _quiet_retry_warnings() -> None:
    pool = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _NotFromWriter) for f in pool.filters):
        pool.addFilter(_NotFromWriter())


def _trial_path(trial: Any) -> str | None:
    """The trial's folder on the driver: the storage path's when that is local, else Tune's
    staging folder (its ``result.json`` is written there first, then uploaded)."""
    for attr in ("path", "local_path"):
        try:
            path = getattr(trial, attr, None)
        except RuntimeError:  # no trial dir name yet
            path = None
        if path and os.path.isdir(path):
            return str(path)
    return None


def _gpus(trial: Any) -> float:
    try:
        return float(trial.placement_group_factory.required_resources.get("GPU", 0))
    except Exception:  # noqa: BLE001 - resources unknown: say cpu
        return 0.0


# --------------------------------------------------------------------------- replay


def tune_states(run_dir: Path) -> dict[str, tuple[str | None, str | None]]:
    """trial_id -> (Tune status, trial dir name) from Tune's newest readable snapshot."""
    from search.reconcile import read_record

    record = read_record(run_dir)
    if record is None:
        return {}
    return {t.trial_id: (t.status, t.dirname) for t in record.trials.values()}


def sync(run_dir: str | Path, sweep_name: str, tracking_uri: str | None = None,
         experiment: str | None = None, spec_yaml: str = "", *,
         sweep_params: Mapping[str, Any] | None = None,
         objective: tuple[str, str] = ("val_top1", "max"), repair: bool | None = None,
         ) -> SyncStats:
    """Replay Ray's result files under ``run_dir`` into MLflow, adding only what is missing.

    Finds (or creates) the same parent and child runs the callback uses, logs every
    (metric, step) not yet in each run's history, sets final status tags, uploads missing
    artifacts and best weights. Idempotent. Removes the ``mlflow_pending`` marker on success.

    ``repair`` (default: when Tune's record says every trial has ended, i.e. no driver is
    running this sweep): trial runs that Ray's record does not have (a driver killed before
    Tune's snapshot) are deleted, and a run holding epochs past its trial's ``result.json`` is
    replaced by a replay of that file, so MLflow holds exactly Ray's record.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist.
        mlflow.exceptions.MlflowException: MLflow failed (nothing is lost: run it again).
    """
    run_dir = location(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir {run_dir} does not exist")
    # Remote storage: read a local copy (results, params, errors, Tune state; no checkpoints);
    # run ids, tags and the marker stay with the sweep's own folder.
    source = local_copy(run_dir) if isinstance(run_dir, RemotePath) else run_dir
    try:
        return _sync(run_dir, source, sweep_name, tracking_uri, experiment, spec_yaml,
                     sweep_params, objective, repair)
    finally:
        if source is not run_dir:
            shutil.rmtree(source, ignore_errors=True)


def _sync(run_dir: Location, source: Path, sweep_name: str, tracking_uri: str | None,
          experiment: str | None, spec_yaml: str, sweep_params: Mapping[str, Any] | None,
          objective: tuple[str, str], repair: bool | None) -> SyncStats:
    if not spec_yaml and (source / "spec.yaml").is_file():
        spec_yaml = (source / "spec.yaml").read_text()
    store = _Store(tracking_uri=resolve_tracking_uri(tracking_uri), run_dir=run_dir,
                   sweep_name=sweep_name, experiment=experiment, objective=objective)
    store.ensure_parent(spec_yaml, sweep_params)
    states = tune_states(source)
    trials = [t for t in read_trial_dirs(source, states) if t.trial_id is not None]
    if repair is None:
        repair = bool(states) and all(s in ("TERMINATED", "ERROR") for s, _ in states.values())
    if repair:
        _repair(store, states, {t.trial_id: max((result_step(r) for r in t.rows), default=None)
                                for t in trials})
    complete: set[str] = set()  # finished runs whose tracker logged every step: no replay
    for t in trials:
        if store.complete(store.ensure_child(t.trial_id, t.config, str(t.dir)), by_step(t.rows)):
            complete.add(t.trial_id)

    # Results in the order they happened, so best_* steps match the callback's.
    events = sorted(((r.get("timestamp", 0), i, t.trial_id, r) for t in trials
                     for i, r in enumerate(t.rows)), key=lambda e: (e[0], e[1]))
    store.parent_step, store.best = 0, _Best(*objective)
    for _, _, trial_id, row in events:
        store.add_result(trial_id, row, metrics=trial_id not in complete)
    for run in store.runs():
        store.flush(run)

    statuses = []
    for t in trials:
        statuses.append(trial_status(by_step(t.rows), states.get(t.trial_id, (None, None))[0],
                                     t.error))
        store.finish(t.trial_id, statuses[-1], error=t.error, only_missing=True)
    store.log_best(only_missing=True)
    parent = store.parent
    if parent is not None and statuses and all(s in _FINAL for s in statuses) \
            and parent.status == "RUNNING":
        store.client.set_terminated(parent.run_id, status="FINISHED")
    (run_dir / MARKER_FILE).unlink(missing_ok=True)
    return SyncStats(trials=len(trials), runs_created=store.created, runs_deleted=store.deleted,
                     points_logged=store.points, artifacts_logged=store.uploaded)


def _repair(store: _Store, states: Mapping[str, tuple[str | None, str | None]],
            last_epoch: Mapping[str, int | None]) -> None:
    """Delete the trial runs Ray's record lacks, and those holding epochs past the trial's
    ``result.json`` (a replay then recreates them), so MLflow ends with exactly Ray's record."""
    parent = store.ensure_parent()
    runs = store.client.search_runs(
        [store._experiment()], f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
        max_results=50000)
    metric = store.objective[0]
    for run in runs:
        trial_id = run.data.tags.get("hpsearch.trial_id")
        if trial_id is None:
            continue
        doomed = trial_id not in states or trial_id not in last_epoch
        if not doomed:  # every run: one left by an older version may be FINISHED yet too long
            key = metric if metric in run.data.metrics else next(iter(run.data.metrics), None)
            steps = [m.step for m in store.client.get_metric_history(run.info.run_id, key)] \
                if key else []
            through = last_epoch[trial_id]
            doomed = bool(steps) and (through is None or max(steps) > through)
        if doomed:
            store.client.delete_run(run.info.run_id)
            store.children.pop(trial_id, None)
            store.saved.get("trials", {}).pop(trial_id, None)
            store.deleted += 1
    store.save_map()

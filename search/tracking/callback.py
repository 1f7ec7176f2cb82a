"""The Tune callback: a sweep as a parent MLflow run with one nested run per trial.

Each hook only puts an event on the :class:`~search.tracking.writer.Writer`'s queue, so a slow
or dead tracking server never slows a trial or Tune's event loop. The event handlers below run
on the writer thread.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from hpsearch.search.storage import location
from hpsearch.search.sweepdir import MARKER_FILE, has_marker, last_line, touch_marker
from hpsearch.search.tracking.best import log_best
from hpsearch.search.tracking.finish import finish_trial, trial_history
from hpsearch.search.tracking.store import BATCH_METRICS, _Store, resolve_tracking_uri
from hpsearch.search.tracking.summary import log_summary
from hpsearch.search.tracking.values import trial_status
from hpsearch.search.tracking.writer import Writer
from hpsearch.trainables.vocab import DEFAULT_OBJECTIVE, Status, TuneStatus

__all__ = ["MlflowTracker"]

logger = logging.getLogger(__name__)

# The tag ``hpsearch.status`` while Tune retries a failed trial: no Status, as the trial is
# neither over nor reporting.
RETRYING = "retrying"


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
        dataset: :func:`~search.tracking.dataset.dataset_info` of the sweep's data: every
            run's dataset input, and the class names of the confusion matrices.
    """

    def __init__(self, *, sweep_name: str, run_dir: str | Path, tracking_uri: str | None = None,
                 experiment: str | None = None, spec_yaml: str = "",
                 sweep_params: Mapping[str, Any] | None = None,
                 objective: tuple[str, str] = DEFAULT_OBJECTIVE,
                 flush_interval: float = 1.0, retry_interval: float = 15.0,
                 close_timeout: float = 60.0, dataset: Mapping[str, Any] | None = None,
                 ) -> None:
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
        self.dataset = dict(dataset) if dataset else None
        self._reset()

    def _reset(self) -> None:
        self._writer: Writer | None = None
        self._store: _Store | None = None
        self._closed = False
        self._ran: set[str] = set()  # trials started by this process
        self._over: set[str] = set()  # ... and those whose end was queued (complete or error)
        # Set by the sweep: whether it ended itself (target, plateau, time limit). Tune then
        # ends the trials left without the trial-complete hook; their runs are ended here.
        self.ended_itself: Callable[[], bool] | None = None

    # Tune pickles the run config (callbacks included) into tuner.pkl: leave the thread out.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("sweep_name", "run_dir", "tracking_uri", "experiment", "spec_yaml",
                "sweep_params", "objective", "flush_interval", "retry_interval", "close_timeout",
                "dataset")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.setdefault("dataset", None)  # pickled by an older version
        self.__dict__.update(state)
        self._reset()

    @property
    def pending(self) -> bool:
        """Whether MLflow may lack results (failed or unsent writes): ``sync`` is due."""
        return has_marker(self.run_dir)

    # ---- Tune hooks: each only enqueues

    def setup(self, **info: Any) -> None:
        if self._closed:  # the same tracker passed to another fit()
            self._reset()
        self._start()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ran.add(trial.trial_id)
        self._put(_on_start, trial.trial_id, dict(trial.config), _trial_path(trial), _gpus(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._put(_on_result, trial.trial_id, dict(result), _trial_path(trial))

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        self._put(_on_checkpoint, trial.trial_id, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._over.add(trial.trial_id)
        self._put(_on_end, trial.trial_id, TuneStatus.TERMINATED, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._over.add(trial.trial_id)
        self._put(_on_end, trial.trial_id, TuneStatus.ERROR, trial.error_file)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(_on_recover, trial.trial_id, trial.error_file, trial.num_failures)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.ended_itself is not None and self.ended_itself():
            # each run of a trial the sweep's end cut: completed if it had reported its last
            # epoch (HyperBand may hold such a trial at its milestone), else stopped at the
            # epoch it reached (the report tells it from the scheduler's rungs)
            self._put(_on_cut, [t.trial_id for t in trials if t.trial_id in self._ran
                                and t.trial_id not in self._over
                                and t.status != TuneStatus.ERROR])
        self._put(_on_best, {t.trial_id: t.checkpoint for t in trials})
        self._put(_on_summary)
        self.close()

    # ---- public

    def log_best_weights(self, path: str | Path, artifact_path: str = "best") -> None:
        """Upload a file (e.g. chosen weights) to the parent run, in the background."""
        self._put(_on_artifact, Path(path), artifact_path)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far reached MLflow; False if it could not (yet)."""
        return True if self._writer is None else self._writer.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue (retrying up to ``timeout``), end the parent run, stop the thread."""
        if self._writer is None or self._closed:
            return self._writer is None or not self._writer.lost
        self._closed = True
        return self._writer.close(self.close_timeout if timeout is None else timeout)

    # ---- the writer

    def _put(self, *event: Any) -> None:
        self._start().put(event)

    def _start(self) -> Writer:
        if self._writer is not None:
            return self._writer
        preexisting = self.pending
        if preexisting:
            logger.warning("MLflow may lack results of an earlier session of this sweep "
                           "(%s exists); `hpsearch sync %s` replays them",
                           self.run_dir / MARKER_FILE, self.run_dir)
        # Until close() confirms delivery: a driver killed mid-sweep leaves the marker behind.
        touch_marker(self.run_dir, "sweep in progress")
        self._writer = Writer(run_dir=self.run_dir, tracking_uri=self.tracking_uri,
                              open_store=self._open, flush_interval=self.flush_interval,
                              retry_interval=self.retry_interval,
                              close_timeout=self.close_timeout, marker_preexisting=preexisting)
        self._writer.start()
        return self._writer

    def _open(self) -> _Store:
        """The store, opened (parent run found or created) on the writer's first delivery."""
        if self._store is None:
            store = _Store(tracking_uri=self.tracking_uri, run_dir=self.run_dir,
                           sweep_name=self.sweep_name, experiment=self.experiment,
                           objective=self.objective)
            store.use_dataset(self.dataset)
            store.ensure_parent(self.spec_yaml, self.sweep_params, socket.gethostname(),
                                reopen=True)
            self._store = store
        return self._store


# Writer-thread event handlers: each event on the queue is ``(handler, *args)``.


def _on_start(store: _Store, trial_id: str, config: dict[str, Any], trial_path: str | None,
              gpus: float) -> None:
    run = store.ensure_child(trial_id, config, trial_path)
    run.set_tags({"hpsearch.status": Status.RUNNING})
    if "hpsearch.device" not in run.tags:
        run.set_tags({"hpsearch.device": "cuda" if gpus else "cpu"})
    store.mark_running(run)  # a resumed or retried trial


def _on_result(store: _Store, trial_id: str, result: dict[str, Any],
               trial_path: str | None) -> None:
    run = store.add_result(trial_id, result, trial_path)
    if len(run.pending_metrics) >= BATCH_METRICS:
        store.flush(run)


def _on_checkpoint(store: _Store, trial_id: str, checkpoint: Any) -> None:
    if trial_id in store.children:
        store.children[trial_id].checkpoint = checkpoint


def _on_end(store: _Store, trial_id: str, tune_status: str, error_file: str | None) -> None:
    run = store.ensure_child(trial_id, None)
    error = last_line(error_file)
    finish_trial(store, trial_id, trial_status(trial_history(run), tune_status, error),
                 error=error)


def _on_cut(store: _Store, trial_ids: list[str]) -> None:
    for trial_id in trial_ids:
        _on_end(store, trial_id, TuneStatus.TERMINATED, None)


def _on_recover(store: _Store, trial_id: str, error_file: str | None, failures: int) -> None:
    run = store.ensure_child(trial_id, None)
    run.set_tags({"hpsearch.status": RETRYING, "hpsearch.failures": failures,
                  "hpsearch.error": last_line(error_file) or ""})


def _on_best(store: _Store, checkpoints: dict[str, Any]) -> None:
    for run in store.runs():
        store.flush(run)
    known = {t: r.checkpoint for t, r in store.children.items()}
    log_best(store, {t: c or known.get(t) for t, c in checkpoints.items()})


def _on_summary(store: _Store) -> None:
    log_summary(store)


def _on_artifact(store: _Store, path: Path, artifact_path: str | None) -> None:
    store.upload(store.ensure_parent(), path, artifact_path)


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


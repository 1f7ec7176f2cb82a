"""One sweep in one MLflow tracking store: a parent run, a nested run per trial, buffered writes.

Runs are keyed, not remembered: a trial's run carries the tag ``hpsearch.trial_id`` under a parent
tagged ``hpsearch.sweep`` + ``hpsearch.run_dir``, and the sweep folder's run map caches the ids
per tracking URI. A reattached run learns which (metric, step) points it holds before anything
is logged to it, so nothing is logged twice.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.search.spec.sections import resolve_tracking_uri  # re-exported
from hpsearch.search.storage import Location, RemotePath
from hpsearch.search.sweepdir import read_run_map, result_step, write_run_map
from hpsearch.search.tracking.commit import git_commit
from hpsearch.search.tracking.dataset import dataset_input, read_dataset
from hpsearch.search.tracking.lineage import SETTINGS_NOW_TAG, copy_tags, settings_now
from hpsearch.search.tracking.values import (
    RUN_FAILED,
    RUN_FINISHED,
    RUN_KILLED,
    RUN_RUNNING,
    TAG_MAX,
    flatten_params,
    now_ms,
    quote,
    resolved_config,
    result_metrics,
    stamp_ms,
)
from hpsearch.trainables.vocab import CONSTANT_METRICS, COPIED, ROLE_TAG, Role, Status

__all__ = ["BEST_PREFIX", "RUN_FAILED", "RUN_FINISHED", "RUN_KILLED", "RUN_RUNNING",
           "resolve_tracking_uri"]

# The parent's best-so-far metrics: ``sweep/best_val_top1`` ... at step = trials ended so far.
# The ``sweep/`` prefix puts them in their own section of MLflow's charts, apart from the
# trials' metrics.
BEST_PREFIX = "sweep/best_"
BATCH_METRICS = 1000  # MLflow's log_batch limits: 1000 entities, 100 params/tags per call
_BATCH_PARAMS_TAGS = 100
SEARCH_PAGE = 1000  # runs per search_runs call
_SPEC_ARTIFACT = "spec.yaml"
_ENDED_TAG = "hpsearch.trials_ended"  # the parent's step, kept for a resumed sweep


def is_transient(err: BaseException) -> bool:
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


def _sqlite_wal(client: Any) -> None:
    """Put a SQLite tracking store in write-ahead-log mode with ``synchronous=NORMAL``.

    MLflow's SQLite store commits several times per call, and by default each commit waits for
    the disk (a rollback journal, fsync'd): a trial's run took 24 ms of writes, 16 ms in WAL
    mode, and at thousands of small trials the writer could not keep up. A commit in WAL mode
    survives the driver being killed; a crash of the whole machine may lose the last commits
    (the database stays consistent), which ``hpsearch sync`` rewrites from the trials' folders.
    WAL is kept in the database file (readers such as ``mlflow ui`` use it too) and needs a
    local disk, not a network file system: where it cannot be set, the store stays as it was.
    """
    engine = getattr(client._tracking_client.store, "engine", None)
    if engine is None or engine.dialect.name != "sqlite" or engine in _WAL_ENGINES:
        return
    from sqlalchemy import event

    event.listen(engine, "connect", _wal_pragmas)
    _WAL_ENGINES.add(engine)
    engine.dispose()  # connections already pooled are made anew, with the pragmas


def _wal_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except Exception:  # noqa: BLE001 - locked, read-only or not possible here: as it was
        pass
    finally:
        cursor.close()


_WAL_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


@dataclass
class _Run:
    """One MLflow run and what this process knows it holds (so nothing is logged twice)."""

    run_id: str
    logged: set[tuple[str, int]] = field(default_factory=set)  # (key, step) already sent
    seeded: bool = True  # False: ``logged`` not yet read back from MLflow (a reattached run)
    params: dict[str, str] = field(default_factory=dict)  # already on the run
    tags: dict[str, str] = field(default_factory=dict)  # already on the run
    status: str = RUN_RUNNING
    latest: dict[str, float] = field(default_factory=dict)  # latest value per metric key
    pending_metrics: list[Any] = field(default_factory=list)
    pending_params: dict[str, str] = field(default_factory=dict)
    pending_tags: dict[str, str] = field(default_factory=dict)
    history: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> result
    trial_path: str | None = None
    checkpoint: Any = None  # latest ray.tune.Checkpoint, when known
    compacted: bool = False
    once: set[str] = field(default_factory=set)  # CONSTANT_METRICS already logged
    artifact_uri: str | None = None  # where its artifacts go, when known

    def add_params(self, params: Mapping[str, str]) -> None:
        for key, value in params.items():
            # params are immutable in MLflow: the first value stays, also while it waits to be
            # sent (PBT may hand the trial other settings before the writer sent its first)
            if key not in self.params and key not in self.pending_params:
                self.pending_params[key] = value

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Buffer the tags whose value differs from the run's; a newer value replaces a
        buffered one, also when it is the run's own again (seen: a resumed trial tagged
        running, then completed as the run already was, stayed running)."""
        for key, value in tags.items():
            value = str(value)[:TAG_MAX]
            if self.tags.get(key) == value:
                self.pending_tags.pop(key, None)
            else:
                self.pending_tags[key] = value

    def add_metrics(self, metrics: Mapping[str, float], step: int, timestamp_ms: int) -> None:
        """Buffer the points not yet logged (``logged`` must be seeded)."""
        from mlflow.entities import Metric

        for key, value in metrics.items():
            if key in self.once or (key, step) in self.logged:
                continue
            self.logged.add((key, step))
            if key in CONSTANT_METRICS:
                self.once.add(key)
            self.pending_metrics.append(Metric(key, value, timestamp_ms, step))

    def setting(self, key: str) -> str | None:
        """A param's text, logged or about to be."""
        return self.params.get(key, self.pending_params.get(key))

    def has_pending(self) -> bool:
        return bool(self.pending_metrics or self.pending_params or self.pending_tags)

    def drop_pending(self) -> None:
        self.pending_metrics, self.pending_params, self.pending_tags = [], {}, {}

    def seed(self, client: Any) -> None:
        """Read back which (key, step) points a reattached run already holds."""
        if self.seeded:
            return
        for key in self.latest:
            self.logged.update((key, m.step) for m in client.get_metric_history(self.run_id, key))
        self.once.update(k for k in self.latest if k in CONSTANT_METRICS)
        self.seeded = True

    def send(self, client: Any) -> int:
        """Send the buffered params, metrics and then tags in as few ``log_batch`` calls as
        fit; the number of metric points sent."""
        from mlflow.entities import Param, RunTag

        points = 0
        while self.has_pending():
            params = list(self.pending_params.items())[:_BATCH_PARAMS_TAGS]
            room = BATCH_METRICS - len(params)
            metrics = self.pending_metrics[:room]
            # Tags ride with the last metrics: MLflow's stores write a batch's tags after its
            # metrics, so a tag saying what a run holds (``finish.SYNCED_TAG``) never
            # lands before the points it speaks for.
            last = len(metrics) == len(self.pending_metrics)
            tags = list(self.pending_tags.items())[:min(_BATCH_PARAMS_TAGS,
                                                        room - len(metrics))] if last else []
            client.log_batch(self.run_id, metrics=metrics,
                             params=[Param(k, v) for k, v in params],
                             tags=[RunTag(k, v) for k, v in tags], synchronous=True)
            for k, _ in params:
                self.params[k] = self.pending_params.pop(k)
            for k, v in tags:
                if self.pending_tags.get(k) == v:
                    del self.pending_tags[k]
                self.tags[k] = v
            del self.pending_metrics[:len(metrics)]
            points += len(metrics)
        return points

    def compact(self) -> None:
        """Forget a finished run's bookkeeping (a long sweep has thousands); keep its id."""
        self.logged, self.params, self.tags, self.latest, self.history = set(), {}, {}, {}, {}
        self.once = set()
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
        if (result.get("status") == Status.REJECTED or not isinstance(value, numbers.Real)
                or isinstance(value, bool) or not math.isfinite(value)):
            return None
        better = self.value is None or (value > self.value if self.mode == "max"
                                        else value < self.value)
        if not better:
            return None
        self.value, self.trial_id, self.result = float(value), trial_id, dict(result)
        keys = dict.fromkeys((self.metric, *self._SHOWN))
        out = {f"{BEST_PREFIX}{k}": float(result[k]) for k in keys
               if isinstance(result.get(k), numbers.Real) and not isinstance(result[k], bool)}
        out[f"{BEST_PREFIX}epoch"] = float(result_step(result))
        return out


class _Store:
    """Parent and child runs of one sweep in one tracking store; raises on any MLflow error.

    Finishing a trial's run and logging the best weights: :mod:`search.tracking.finish`,
    :mod:`search.tracking.best`.
    """

    def __init__(self, *, tracking_uri: str, run_dir: Location, sweep_name: str,
                 experiment: str | None, objective: tuple[str, str]) -> None:
        from mlflow import MlflowClient

        if tracking_uri.startswith(("http://", "https://")):
            _limit_http_retries()
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        _sqlite_wal(self.client)
        self.run_dir = run_dir
        self.sweep = sweep_name
        self.experiment_name = experiment or sweep_name
        self.objective = objective
        self.commit = git_commit()
        self.experiment_id: str | None = None
        self.parent: _Run | None = None
        self.children: dict[str, _Run] = {}
        self.saved = read_run_map(run_dir, tracking_uri)  # what an earlier session mapped
        self.listed: dict[str, str] | None = None  # :meth:`_trial_runs`
        self.parent_created = False  # by this store: it has no trial runs but its own
        self.map_due = False  # the run map lacks runs this store found or created
        self.map_saved_at = self.map_save_s = 0.0  # when it was last written; how long it took
        self.best = _Best(*objective)
        self.best_due: dict[str, float] | None = None  # improved since last logged
        self.ended: set[str] = set()  # trials whose end counted towards the parent's step
        self.parent_step = 0  # trials ended (in this and earlier sessions)
        self.lossy = False  # a write was dropped: a run's history may have gaps
        self.dataset: dict[str, Any] | None = None  # :func:`.dataset.dataset_info`
        self.classes: tuple[str, ...] | None = None  # the dataset's class names, when known
        self.rungs: tuple[int, ...] | None = None  # the scheduler's, from the spec (when known)
        self.created = self.deleted = self.points = self.uploaded = 0

    def use_dataset(self, info: Mapping[str, Any] | None) -> None:
        """Log ``info`` (:func:`.dataset.dataset_info`) as every new run's dataset input and
        label the confusion matrices with its class names."""
        if info:
            self.dataset = dict(info)
            self.classes = tuple(info["classes"]) or None

    def save_map(self, soon: bool = False) -> None:
        """Write the run map. ``soon``: only when writing it took under a tenth of the time
        since the last write (else it is left due): it is rewritten whole, and at thousands of
        trials one write per new run held the MLflow writer back. A run the map lacks is
        still found by its tags."""
        self.map_due = True
        now = time.monotonic()
        if soon and now - self.map_saved_at < 10 * self.map_save_s:
            return
        trials = {**self.saved.get("trials", {}),
                  **{t: r.run_id for t, r in self.children.items()}}
        write_run_map(self.run_dir, self.uri, {
            "experiment": self.experiment_name, "experiment_id": self.experiment_id,
            "parent_run_id": self.parent.run_id if self.parent else None,
            "trials": dict(sorted(trials.items()))})
        self.map_due = False
        self.map_saved_at = time.monotonic()
        self.map_save_s = self.map_saved_at - now

    def save_map_if_due(self, soon: bool = False) -> None:
        """Write the run map if a new run is missing from the file (see :meth:`save_map`)."""
        if self.map_due:
            self.save_map(soon=soon)

    # ---- runs

    def experiment(self) -> str:
        if self.experiment_id is None:
            self.experiment_id = _open_experiment(self.client, self.experiment_name, self.uri)
        return self.experiment_id

    def _reattach(self, run_id: str | None, filter_string: str) -> _Run | None:
        return _find_run(self.client, self.experiment, run_id, filter_string)

    def _create(self, tags: dict[str, str], name: str) -> _Run:
        if self.commit:
            tags.update({"hpsearch.git_commit": self.commit,
                         "mlflow.source.git.commit": self.commit})
        run = self.client.create_run(self.experiment(), tags=tags, run_name=name)
        self.created += 1
        if self.dataset:
            self.client.log_inputs(run.info.run_id, [dataset_input(self.dataset)])
        return _Run(run.info.run_id, tags=tags, artifact_uri=run.info.artifact_uri)

    def seed(self, state: _Run) -> None:
        state.seed(self.client)

    def ensure_parent(self, spec_yaml: str = "", sweep_params: Mapping[str, Any] | None = None,
                      host: str | None = None, reopen: bool = False) -> _Run:
        """The sweep's parent run: found by id or tags, else created; spec + params logged.

        ``reopen``: a resumed sweep marks a finished parent RUNNING again and continues its
        ``best_*`` series where it stopped.
        """
        if self.parent is not None:
            return self.parent
        if spec_yaml:  # the sweep wrote it validated: its scheduler and epochs as they are
            from hpsearch.search.report.saved_spec import spec_facts, yaml_mapping

            self.rungs = spec_facts(None, yaml_mapping(spec_yaml, "spec")).get("rungs")
        run_dir = str(self.run_dir)
        state = self._reattach(self.saved.get("parent_run_id"),
                               f"tags.`{ROLE_TAG}` = '{Role.SWEEP}' and tags.`hpsearch.sweep` = "
                               f"'{quote(self.sweep)}' and tags.`hpsearch.run_dir` = "
                               f"'{quote(run_dir)}'")
        if state is None:
            state = self._create({ROLE_TAG: Role.SWEEP.value, "hpsearch.sweep": self.sweep,
                                  "hpsearch.run_dir": run_dir,
                                  "hpsearch.objective": ":".join(self.objective)}, self.sweep)
            self.parent_created = True
        else:
            self.seed(state)
            if self.dataset is None:  # sync: the dataset the sweep's tracker logged
                self.use_dataset(read_dataset(self.client.get_run(state.run_id)))
            if reopen:
                ended = state.tags.get(_ENDED_TAG, "")
                self.parent_step = int(ended) if ended.isdigit() else \
                    max((s for _, s in state.logged), default=0)
                self.best.value = state.latest.get(f"{BEST_PREFIX}{self.objective[0]}")
                self.mark_running(state)
        self.parent = state
        self.save_map()
        if host:
            state.set_tags({"hpsearch.host": host})
        if sweep_params:
            state.add_params(flatten_params(sweep_params))
        if spec_yaml and _SPEC_ARTIFACT not in self.artifact_names(state):
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / _SPEC_ARTIFACT).write_text(spec_yaml)
                self.upload(state, Path(tmp) / _SPEC_ARTIFACT)
        return state

    def ensure_child(self, trial_id: str, config: Mapping[str, Any] | None,
                     trial_path: str | None = None) -> _Run:
        """The trial's nested run: found by id or tags under the parent, else created.

        A reattached run learns its logged points lazily (:meth:`seed`), on its first metric.
        """
        state = self.children.get(trial_id)
        if state is None or state.compacted:
            parent = self.ensure_parent()
            known = state.run_id if state else (self.saved.get("trials", {}).get(trial_id)
                                                or self._trial_runs().get(trial_id))
            found = None if known is None else self._reattach(
                known, f"tags.`hpsearch.trial_id` = '{quote(trial_id)}' "
                       f"and tags.`mlflow.parentRunId` = '{parent.run_id}'")
            if found is None:
                found = self._create({"mlflow.parentRunId": parent.run_id,
                                      ROLE_TAG: Role.TRIAL.value, "hpsearch.trial_id": trial_id,
                                      "hpsearch.sweep": self.sweep,
                                      "hpsearch.status": Status.RUNNING.value}, trial_id)
            if state is not None:
                found.trial_path, found.checkpoint = state.trial_path, state.checkpoint
            state = self.children[trial_id] = found
            self.save_map(soon=True)
        if config:
            params = flatten_params(resolved_config(config))
            state.add_params(params)
            # a trial population-based training gave other settings: params keep the first
            state.set_tags(settings_now(params, state.setting, SETTINGS_NOW_TAG in {
                **state.tags, **state.pending_tags}))
        if trial_path and state.trial_path != trial_path:
            state.trial_path = trial_path
            state.set_tags({"hpsearch.trial_dir": str(self.trial_folder(trial_path))})
        return state

    def _trial_runs(self) -> dict[str, str]:
        """Trial id -> run id of the parent's trial runs (a trial's oldest), listed once: a
        trial in neither this, the run map nor :attr:`children` has no run yet, so a new trial
        costs no search (at thousands of runs a search per trial held the writer back)."""
        if self.listed is None:
            self.listed = {}
            if not self.parent_created and self.parent is not None:
                for run in all_runs(self.client, self.experiment(),
                                    f"tags.`mlflow.parentRunId` = '{self.parent.run_id}'",
                                    ["attributes.start_time ASC"]):
                    trial_id = run.data.tags.get("hpsearch.trial_id")
                    if trial_id:
                        self.listed.setdefault(trial_id, run.info.run_id)
        return self.listed

    def create_final(self, tags: Mapping[str, str], name: str) -> _Run:
        """A new run for the sweep's final model (``hpsearch finalize``), nested under the
        parent and tagged with :attr:`Role.FINAL`; like every run it gets the dataset input
        and the git commit. No ``hpsearch.trial_id`` tag: it is no trial of the sweep (``sync``
        leaves it alone)."""
        parent = self.ensure_parent()
        return self._create({"mlflow.parentRunId": parent.run_id, ROLE_TAG: Role.FINAL.value,
                             "hpsearch.sweep": self.sweep, **tags}, name)

    def trial_folder(self, trial_path: str) -> Location:
        """A trial's own folder: on remote storage the one in the sweep's folder, not the local
        copy (Tune's driver staging folder, or the one ``sync`` downloaded) results are read
        from."""
        if isinstance(self.run_dir, RemotePath):
            return self.run_dir / Path(trial_path).name
        return Path(trial_path)

    def mark_running(self, state: _Run) -> None:
        """A resumed or retried run is RUNNING again (a trial's named by its id again)."""
        if state.status != RUN_RUNNING:
            self.client.update_run(state.run_id, status=RUN_RUNNING,
                                   name=state.tags.get("hpsearch.trial_id"))
            state.status = RUN_RUNNING

    # ---- buffered writes

    def add_metrics(self, state: _Run, metrics: Mapping[str, float], step: int,
                    timestamp_ms: int) -> None:
        """Buffer what is not yet logged; ``lr`` only when a schedule or PBT changes it."""
        self.seed(state)
        if "lr" in metrics and state.setting("schedule") == "none" and not self.lr_mutates:
            metrics = {k: v for k, v in metrics.items() if k != "lr"}  # the param ``lr`` says
        state.add_metrics(metrics, step, timestamp_ms)

    @property
    def lr_mutates(self) -> bool:
        """Trials' learning rates change as they train (``scheduler: pbt``)."""
        return self.parent is not None and self.parent.setting("scheduler") == "pbt"

    def add_result(self, trial_id: str, result: Mapping[str, Any],
                   trial_path: str | None = None, metrics: bool = True) -> _Run:
        """Buffer one Tune result: the trial's metrics at step=epoch, node tags; remember the
        best so far (logged to the parent when a trial ends: :meth:`trial_ended`)."""
        state = self.ensure_child(trial_id, result.get("config"), trial_path)
        step = result_step(result)
        stamp = stamp_ms(result)
        state.history[step] = {k: v for k, v in result.items() if k != "config"}
        copied = isinstance(result.get(COPIED), Mapping)  # trained on from another's weights
        if copied:  # ... and settings: its model may be another, so its size is logged again
            state.once.difference_update(CONSTANT_METRICS)
        if metrics:
            self.add_metrics(state, result_metrics(result), step, stamp)
        tags = {k: result[k] for k in ("hostname", "node_ip", "device", "gpu_ids")
                if result.get(k)}
        state.set_tags({f"hpsearch.{'node' if k == 'hostname' else k}": v
                        for k, v in tags.items()})
        if copied:
            state.set_tags(copy_tags({**state.tags, **state.pending_tags}, result[COPIED]))
        best = self.best.update(trial_id, result)
        if best is not None:
            self.best_due = best
            if self.parent is not None:
                self.parent.set_tags({"hpsearch.best_trial_id": trial_id,
                                      "hpsearch.best_run_id": state.run_id})
        return state

    def trial_ended(self, trial_id: str, timestamp_ms: int) -> None:
        """Count a trial's end (once) and log the parent's ``sweep/best_*`` at step = trials
        ended so far, when the best improved since they were last logged."""
        if trial_id in self.ended:
            return
        self.ended.add(trial_id)
        self.parent_step += 1
        if self.parent is not None:
            self.parent.set_tags({_ENDED_TAG: self.parent_step})
        if self.best_due is not None and self.parent is not None:
            self.add_metrics(self.parent, self.best_due, self.parent_step, timestamp_ms)
            self.best_due = None

    def flush(self, state: _Run) -> None:
        """Send a run's buffered params, tags and metrics (:meth:`_Run.send`)."""
        self.points += state.send(self.client)

    def runs(self) -> list[_Run]:
        return [r for r in (self.parent, *self.children.values()) if r is not None]

    def artifact_names(self, state: _Run, path: str | None = None) -> set[str]:
        return {f.path for f in self._artifacts(state).list_artifacts(path)}

    def upload(self, state: _Run, local: Path, artifact_path: str | None = None) -> None:
        self._artifacts(state).log_artifact(str(local), artifact_path)
        self.uploaded += 1

    def _artifacts(self, state: _Run) -> Any:
        """The run's artifact repository, as ``MlflowClient.log_artifact`` finds it but from
        the artifact URI the run was created or found with: the client reads the whole run
        back for it (params, tags, metrics, inputs), and that read was a tenth of the driver's
        time in a sweep of thousands of tiny trials."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

        uri = state.artifact_uri or self.client.get_run(state.run_id).info.artifact_uri
        return get_artifact_repository(add_databricks_profile_info_to_artifact_uri(
            uri, self.uri), tracking_uri=self.uri)


def _find_run(client: Any, experiment: Callable[[], str], run_id: str | None,
              filter_string: str) -> _Run | None:
    """The run by cached id if it still exists, else the oldest one the tags find in the
    ``experiment()`` (opened only then)."""
    run = _get_run(client, run_id) if run_id else None
    if run is None:
        found = client.search_runs([experiment()], filter_string, max_results=1,
                                   order_by=["attributes.start_time ASC"])
        run = found[0] if found else None
    if run is None:
        return None
    return _Run(run.info.run_id, seeded=False, artifact_uri=run.info.artifact_uri,
                params=dict(run.data.params),
                tags=dict(run.data.tags), status=run.info.status, latest=dict(run.data.metrics))


def all_runs(client: Any, experiment_id: str, filter_string: str,
             order_by: list[str] | None = None) -> Iterator[Any]:
    """Every active run of the experiment the filter finds, a page at a time."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=SEARCH_PAGE,
                                  order_by=order_by, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _open_experiment(client: Any, name: str, uri: str) -> str:
    """The id of the active experiment ``name``, created when there is none."""
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "active":
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # else MLflow writes to ./mlruns of cwd
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        location = (db.parent / "mlartifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def _get_run(client: Any, run_id: str) -> Any:
    """The active run ``run_id``; None when it is deleted, gone or from another store."""
    try:
        run = client.get_run(run_id)
    except Exception as err:  # noqa: BLE001 - gone, or from another store
        if is_transient(err):
            raise
        return None
    return run if run.info.lifecycle_stage == "active" else None


def end_run(client: Any, run_id: str, status: str, name: str | None = None) -> None:
    """Like ``MlflowClient.set_terminated`` (and renamed to ``name``) minus its extra
    ``get_run`` and the "View run at" lines it prints to stdout: one pair per trial swamps
    Tune's output."""
    from mlflow.entities import RunStatus

    try:
        store = client._tracking_client.store
        update = store.update_run_info
    except AttributeError:  # a future MLflow: the public calls, prints and all
        client.set_terminated(run_id, status=status)
        if name:
            client.update_run(run_id, name=name)
        return
    update(run_id, run_status=RunStatus.from_string(status), end_time=now_ms(), run_name=name)

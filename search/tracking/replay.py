"""Replay a sweep's folder into MLflow, adding only what is missing (``hpsearch sync``), and
repair runs that disagree with Ray's record."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.search.storage import Location, RemotePath, local_copy, location
from hpsearch.search.sweepdir import (
    SPEC_FILE,
    TUNE_OVER,
    by_step,
    read_trial_dirs,
    remove_marker,
    result_step,
    tune_states,
)
from hpsearch.search.tracking.best import log_best
from hpsearch.search.tracking.finish import finish_trial, is_complete
from hpsearch.search.tracking.store import (
    RUN_FINISHED,
    RUN_RUNNING,
    _Best,
    _Store,
    all_runs,
    resolve_tracking_uri,
)
from hpsearch.search.tracking.summary import log_summary
from hpsearch.search.tracking.values import stamp_ms, trial_status
from hpsearch.trainables.vocab import COPIED, DEFAULT_OBJECTIVE

__all__ = ["SyncStats", "sync"]


@dataclass
class SyncStats:
    """What :func:`sync` did."""

    trials: int = 0
    runs_created: int = 0
    runs_deleted: int = 0
    points_logged: int = 0
    artifacts_logged: int = 0


def sync(run_dir: str | Path, sweep_name: str, tracking_uri: str | None = None,
         experiment: str | None = None, spec_yaml: str = "", *,
         sweep_params: Mapping[str, Any] | None = None,
         objective: tuple[str, str] = DEFAULT_OBJECTIVE, repair: bool | None = None,
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
    if not spec_yaml and (source / SPEC_FILE).is_file():
        spec_yaml = (source / SPEC_FILE).read_text()
    store = _Store(tracking_uri=resolve_tracking_uri(tracking_uri), run_dir=run_dir,
                   sweep_name=sweep_name, experiment=experiment, objective=objective)
    store.ensure_parent(spec_yaml, sweep_params)
    states = tune_states(source)
    trials = [t for t in read_trial_dirs(source, states) if t.trial_id is not None]
    if repair is None:
        repair = bool(states) and all(s in TUNE_OVER for s, _ in states.values())
    if repair:
        _repair(store, states, {t.trial_id: max((result_step(r) for r in t.rows), default=None)
                                for t in trials})
    complete: set[str] = set()  # finished runs whose tracker logged every step: no replay
    for t in trials:
        # params are the settings a trial started with (its first result's; params.json holds
        # its latest, which population-based training may have changed)
        first = next((r["config"] for r in t.rows if isinstance(r.get("config"), dict)), None)
        run = store.ensure_child(t.trial_id, first or t.config, str(t.dir))
        # A trial that went on from another's model (PBT) is replayed, whatever its run says:
        # before 2026-12-05 its size was logged once, the first model's
        if is_complete(run, by_step(t.rows)) and not any(COPIED in r for r in t.rows):
            complete.add(t.trial_id)

    statuses = {t.trial_id: trial_status(by_step(t.rows), states.get(t.trial_id, (None, None))[0],
                                         t.error) for t in trials}
    # Results in the order they happened, each trial's end after its last, so the parent's
    # sweep/best_* steps (trials ended so far) match the callback's.
    events = sorted(((r.get("timestamp", 0), i, t.trial_id, r, i == len(t.rows) - 1)
                     for t in trials for i, r in enumerate(t.rows)), key=lambda e: (e[0], e[1]))
    store.parent_step, store.best, store.best_due, store.ended = 0, _Best(*objective), None, set()
    for _, _, trial_id, row, last in events:
        store.add_result(trial_id, row, metrics=trial_id not in complete)
        if last and statuses[trial_id].final:
            store.trial_ended(trial_id, stamp_ms(row))
    for run in store.runs():
        store.flush(run)

    for t in trials:
        finish_trial(store, t.trial_id, statuses[t.trial_id], error=t.error, only_missing=True)
    store.save_map_if_due()
    log_best(store, only_missing=True)
    log_summary(store, only_changed=True)
    parent = store.parent
    if parent is not None and statuses and all(s.final for s in statuses.values()) \
            and parent.status == RUN_RUNNING:
        store.client.set_terminated(parent.run_id, status=RUN_FINISHED)
    remove_marker(run_dir)
    return SyncStats(trials=len(trials), runs_created=store.created, runs_deleted=store.deleted,
                     points_logged=store.points, artifacts_logged=store.uploaded)


def _repair(store: _Store, states: Mapping[str, tuple[str | None, str | None]],
            last_epoch: Mapping[str, int | None]) -> None:
    """Delete the trial runs Ray's record lacks, and those holding epochs past the trial's
    ``result.json`` (a replay then recreates them), so MLflow ends with exactly Ray's record."""
    parent = store.ensure_parent()
    runs = list(all_runs(store.client, store.experiment(),
                         f"tags.`mlflow.parentRunId` = '{parent.run_id}'"))
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

"""Driver-side MLflow tracking of a sweep: one parent run, one nested run per trial, replayable.

:class:`MlflowTracker` is a Tune callback. It only puts events on a queue; one background thread
turns them into batched MLflow calls, so a slow or dead tracking server never slows a trial or
the Tune event loop, and an MLflow error never fails the sweep (one warning, then a
``mlflow_pending`` marker in the run dir). Ray keeps every result in each trial's ``result.json``
anyway, and :func:`sync` replays those files into MLflow, adding only what is missing.

Runs are keyed, not remembered: a trial's run carries the tag ``hpsearch.trial_id`` under a parent
tagged ``hpsearch.sweep`` + ``hpsearch.run_dir``, and ``<run_dir>/mlflow_runs.json`` caches the
ids per tracking URI. A resumed sweep, a retried trial or a second ``sync`` reattaches to the
same runs and skips every (metric, step) already logged, so nothing is duplicated.

Rooms: :mod:`.store` (the MLflow side), :mod:`.finish` (a trial's run ended), :mod:`.best`
(the best weights), :mod:`.writer` (the background thread), :mod:`.callback` (the Tune hooks),
:mod:`.replay` (``sync``: replay and repair), :mod:`.plots` (a trial's figures),
:mod:`.values` (results as MLflow values), :mod:`.commit` (the git commit), :mod:`.dataset`
(the data as every run's dataset input), :mod:`.summary` (the parent's leaderboard
description and ``report.html``). The sweep's folder,
its file names and Tune's trial folders are :mod:`search.sweepdir`'s; the names callers import
from here are re-exported.
"""

from __future__ import annotations

from hpsearch.search.figures import draw_confusion
from hpsearch.search.sweepdir import (
    MARKER_FILE,
    RUNS_FILE,
    TrialFiles,
    by_step,
    last_line,
    read_results,
    read_trial_dirs,
    result_step,
    tune_states,
)
from hpsearch.search.tracking.commit import git_commit
from hpsearch.search.tracking.plots import plot_curves, write_confusion
from hpsearch.search.tracking.replay import SyncStats, sync
from hpsearch.search.tracking.store import resolve_tracking_uri
from hpsearch.search.tracking.values import flatten_params, result_metrics, trial_status

__all__ = ["MARKER_FILE", "RUNS_FILE", "MlflowTracker", "SyncStats", "TrialFiles", "by_step",
           "draw_confusion", "flatten_params", "git_commit", "last_line", "plot_curves",
           "read_results", "read_trial_dirs", "resolve_tracking_uri", "result_metrics",
           "result_step", "sync", "trial_status", "tune_states", "write_confusion"]


def __getattr__(name: str) -> object:
    """``MlflowTracker`` on first use: it is a Tune callback, and importing ``ray.tune`` takes a
    second that ``report``, ``sync`` and ``ui`` (which read a sweep's files) need not pay."""
    if name != "MlflowTracker":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from hpsearch.search.tracking.callback import MlflowTracker

    return MlflowTracker

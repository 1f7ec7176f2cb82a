"""One sweep as the report sees it: :class:`SweepData`, a trials frame and a history frame with
the same columns whichever source they were read from."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from hpsearch.search.report.formats import missing
from hpsearch.trainables.vocab import (
    CONSTANT_METRICS,
    DEFAULT_OBJECTIVE,
    FINAL_METRICS,
    HISTORY_METRICS,
    METRICS,
    Status,
    ended_with_sweep,
)

if TYPE_CHECKING:
    from hpsearch.search.spec import SweepSpec

__all__ = ["INT_FINALS", "SweepData", "best_columns", "fixed_columns", "hashable",
           "metric_columns", "own_metrics", "per_epoch", "ranked", "score_column", "varies"]

INT_FINALS = ("params", "macs")  # final metrics that are counts
_TEXT_COLUMNS = ("trial_id", "status", "node", "gpus", "rejected_reason", "error")
_STEP_COLUMNS = ("trial_id", "epoch", "timestamp")  # the history's keys, besides its metrics
# Every name the built-in image classifier reports. Any other metric in a trial's results is its
# trainable's own (a plugin's): read from the results themselves, it needs no plugin code.
_CLASSIFIER_METRICS = frozenset((*METRICS, *HISTORY_METRICS, *FINAL_METRICS, *CONSTANT_METRICS))


@dataclass
class SweepData:
    """One sweep's trials, as read from Ray's files or from MLflow (the same columns either way).

    Attributes:
        name: The sweep's name (``results/<name>/`` is where its report goes).
        spec: The sweep spec, when it could be read (``hpsearch.json`` or MLflow's
            ``spec.yaml``).
        trials: One row per trial, best first: ``trial_id``, ``status``, every config key,
            ``best_<metric>`` per epoch metric scored, ``best_epoch``, the test scores,
            ``params``, ``macs``, each of :attr:`own_metrics` but the objective (its value
            after the last epoch the trial ran), ``epochs_run``, ``stopped_epoch``,
            ``wall_seconds``,
            ``started``/``ended`` (Unix seconds), ``node``, ``gpus`` (the GPU ids Ray gave the
            trial, empty on CPU), ``rejected_reason``, ``error``.
        history: One row per trial and epoch: ``trial_id``, ``epoch``, ``timestamp``,
            :data:`~trainables.vocab.HISTORY_METRICS` and :attr:`own_metrics`.
        objective: ``(metric, "max" | "min")`` that ranks trials (a multi-objective sweep: its
            first metric).
        confusion: The test confusion matrix ``[true][pred]`` of the best trial that has one.
        confusion_trial: Which trial that matrix belongs to.
        confusion_classes: Its rows' class names, where the trial recorded them.
        meta: Where the data came from and how to reproduce it: ``source``, ``git_commit``,
            ``created``, ``spec_yaml``, ``run_dir``, ``tracking_uri``, ``experiment``,
            ``cpu_per_trial``, ``gpu_per_trial``, ``max_epochs``, ``rungs`` (the epochs after which
            the scheduler may stop a trial, :meth:`~search.spec.Scheduler.rungs`; None: not
            known), ``split_sizes`` (images per split of the trial whose confusion matrix is
            shown: ``train``, ``val``, ``test``).
        final: The sweep's final model, when ``hpsearch finalize`` made one: its record
            (:data:`~search.sweepdir.FINAL_FILE`), shown apart from the search's scores.
        own_metrics: What the trials reported every epoch that the image classifier does not
            (a plugin trainable's own metrics, :func:`own_metrics`), read from the history.
        lineage: Population-based training's copies, one row per copy of another trial's
            weights a trial trained on (:data:`~search.report.lineage.LINEAGE_COLUMNS`);
            empty for other sweeps.
    """

    name: str
    spec: SweepSpec | None
    trials: pd.DataFrame
    history: pd.DataFrame
    objective: tuple[str, str] = DEFAULT_OBJECTIVE
    confusion: list[list[float]] | None = None
    confusion_trial: str | None = None
    confusion_classes: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    own_metrics: tuple[str, ...] = ()
    lineage: pd.DataFrame | None = None

    @classmethod
    def from_rows(cls, name: str, rows: Sequence[Mapping[str, Any]], *,
                  spec: SweepSpec | None = None,
                  objective: tuple[str, str] = DEFAULT_OBJECTIVE,
                  history: pd.DataFrame | None = None,
                  meta: dict[str, Any] | None = None) -> SweepData:
        """Trials given as one mapping each (settings plus any of the trials columns): missing
        columns are added empty, settings placed after ``status`` (searched ones first), lists
        made tuples, and the rows ranked best first. The history's columns that are no
        classifier metric are the trainable's :attr:`own_metrics`."""
        metric, mode = objective
        own = own_metrics(history.columns) if history is not None else ()
        frame = pd.DataFrame.from_records(
            [{k: hashable(v) for k, v in r.items()} for r in rows])
        order = fixed_columns(metric, own)
        for column in order:
            if column not in frame.columns:
                frame[column] = None if column in _TEXT_COLUMNS else math.nan
        settings = [c for c in frame.columns if c not in order]
        searched = [k for k in (spec.space if spec is not None else ()) if k in settings]
        settings = searched + sorted(c for c in settings if c not in searched)
        frame = frame[order[:2] + settings + order[2:]]
        for key in INT_FINALS + ("stopped_epoch", "epochs_run"):
            frame[key] = frame[key].astype("Int64")
        frame = ranked(frame, metric, mode)
        columns = [*_STEP_COLUMNS, *HISTORY_METRICS, *own]
        hist = pd.DataFrame(columns=columns) if history is None or history.empty \
            else history.reindex(columns=columns)
        rank = {t: i for i, t in enumerate(frame["trial_id"])}
        hist = hist.sort_values(["trial_id", "epoch"], key=lambda s: s.map(rank)
                                if s.name == "trial_id" else s, kind="stable")
        return cls(name=name, spec=spec, trials=frame, history=hist.reset_index(drop=True),
                   objective=objective, meta=dict(meta or {}), own_metrics=own)

    @property
    def score_column(self) -> str:
        """The trials column that ranks them (``best_val_top1`` for the default objective)."""
        return score_column(self.objective[0])

    @property
    def history_metrics(self) -> tuple[str, ...]:
        """The metrics trials report every epoch: the classifier's, then their own."""
        return HISTORY_METRICS + self.own_metrics

    @property
    def metric_columns(self) -> list[str]:
        """:func:`metric_columns` of this sweep."""
        return metric_columns(self.objective[0], self.own_metrics)

    def has_values(self, column: str) -> bool:
        """Some trial has a value in this trials column (a table shows it only then)."""
        return column in self.trials.columns and bool(self.trials[column].notna().any())

    @property
    def config_keys(self) -> list[str]:
        """The trial settings present as columns, searched ones first."""
        fixed = set(fixed_columns(self.objective[0], self.own_metrics))
        return [c for c in self.trials.columns if c not in fixed]

    @property
    def completed(self) -> pd.DataFrame:
        """The trials that ran every epoch: the ones compared at full fidelity."""
        return self.trials[self.trials["status"] == Status.COMPLETED]

    @property
    def rung_epochs(self) -> tuple[int, ...]:
        """The scheduler's rungs at which it stopped some trial, first to last, when the
        objective is scored every epoch: each a fidelity at which every trial that got that far
        compares. The rungs are ``meta["rungs"]`` (ASHA's, from the spec); where unknown, every
        epoch at which a trial was stopped early counts as one."""
        if self.objective[0] not in self.history_metrics:
            return ()
        rungs = self.meta.get("rungs")
        stopped = self.trials.loc[self.trials["status"] == Status.STOPPED_EARLY, "stopped_epoch"]
        return tuple(sorted({int(e) for e in stopped.dropna()
                             if not ended_with_sweep(e, rungs)}))

    def at_epoch(self, epoch: int) -> pd.Series:
        """Each trial's objective at ``epoch`` (trial id -> value), for those that reached it."""
        h = self.history[self.history["epoch"] == epoch]
        return h.set_index("trial_id")[self.objective[0]].dropna()

    @property
    def searched(self) -> list[str]:
        """The settings the sweep searched: the spec's space, else those that vary."""
        keys = self.config_keys
        if self.spec is not None:
            return [k for k in self.spec.space if k in keys]
        return [k for k in keys if varies(self.trials[k])]


def own_metrics(names: Iterable[str]) -> tuple[str, ...]:
    """The metric names among ``names`` that the image classifier does not report: a plugin
    trainable's own, sorted (so Ray's files and MLflow list them alike)."""
    return tuple(sorted({n for n in names if _own(n)}))


def _own(name: str) -> bool:
    return name not in _CLASSIFIER_METRICS and name not in _STEP_COLUMNS


def per_epoch(values: Mapping[str, float]) -> dict[str, float]:
    """The metrics of one epoch's result that the history keeps: the classifier's per-epoch
    ones and any the trainable reported of its own (not the final scores or counts)."""
    return {k: v for k, v in values.items() if k in HISTORY_METRICS or _own(k)}


def hashable(value: Any) -> Any:
    """Lists (e.g. ``channels``) as tuples, so they group, compare and index."""
    if isinstance(value, list | tuple):
        return tuple(hashable(v) for v in value)
    return value


def score_column(metric: str) -> str:
    """The trials column of a metric: ``best_<metric>`` for one reported every epoch (all but
    the final scores and counts, :data:`~trainables.vocab.FINAL_METRICS`)."""
    return metric if metric in FINAL_METRICS else f"best_{metric}"


def best_columns(metric: str) -> list[str]:
    """The ``best_*`` columns: val accuracy, val loss and the objective's."""
    keys = ["val_top1", "val_loss"] + ([metric] if metric not in FINAL_METRICS else [])
    return [f"best_{k}" for k in dict.fromkeys(keys)]


def metric_columns(metric: str, own: Sequence[str] = ()) -> list[str]:
    """The trials columns that hold a score or count, in order: ``best_*`` and ``best_epoch``,
    the final scores, params, MACs, and each of the trainable's ``own`` metrics but the
    objective (its value after the last epoch)."""
    return [*best_columns(metric), "best_epoch", *FINAL_METRICS, *(m for m in own if m != metric)]


def fixed_columns(metric: str, own: Sequence[str] = ()) -> list[str]:
    """Every trials column that is not a setting, in order; ``own``: the trainable's own
    metrics."""
    return (["trial_id", "status", *metric_columns(metric, own)]
            + ["epochs_run", "stopped_epoch", "wall_seconds", "started", "ended", "node",
               "gpus", "rejected_reason", "error"])


def varies(column: pd.Series) -> bool:
    """More than one distinct value (a missing one counts as a value)."""
    return column.map(lambda v: None if missing(v) else v).nunique(dropna=False) > 1


def ranked(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Completed trials first (scores at full fidelity), then the other scored ones, then the
    unscored; each group best first by the objective, ties by val loss (val accuracy when that
    is the objective), then trial id."""
    score = score_column(metric)
    tie, tie_up = ("best_val_top1", False) if score == "best_val_loss" else ("best_val_loss", True)
    group = frame[score].isna() * 2 + (frame["status"] != Status.COMPLETED)
    order = frame.assign(_group=group.clip(upper=2)).sort_values(
        ["_group", score, tie, "trial_id"], ascending=[True, mode == "min", tie_up, True],
        na_position="last", kind="stable")
    return order.drop(columns="_group").reset_index(drop=True)

"""One sweep as the report sees it: :class:`SweepData`, a trials frame and a history frame with
the same columns whichever source they were read from."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from hpsearch.search.report.formats import missing
from hpsearch.trainables.plugins import metric_modes
from hpsearch.trainables.vocab import (
    DEFAULT_OBJECTIVE,
    FINAL_METRICS,
    HISTORY_METRICS,
    METRICS,
    Status,
)

if TYPE_CHECKING:
    from hpsearch.search.spec import SweepSpec

__all__ = ["INT_FINALS", "SweepData", "best_columns", "fixed_columns", "hashable",
           "history_metrics", "ranked", "score_column", "varies"]

INT_FINALS = ("params", "macs")  # final metrics that are counts
_TEXT_COLUMNS = ("trial_id", "status", "node", "gpus", "rejected_reason", "error")


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
            ``started``/``ended`` (Unix seconds), ``node``, ``gpus`` (the GPU ids Ray gave the
            trial, empty on CPU), ``rejected_reason``, ``error``.
        history: One row per trial and epoch: ``trial_id``, ``epoch``, ``timestamp`` and
            :data:`~trainables.vocab.HISTORY_METRICS`.
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

    @classmethod
    def from_rows(cls, name: str, rows: Sequence[Mapping[str, Any]], *,
                  spec: SweepSpec | None = None,
                  objective: tuple[str, str] = DEFAULT_OBJECTIVE,
                  history: pd.DataFrame | None = None,
                  meta: dict[str, Any] | None = None) -> SweepData:
        """Trials given as one mapping each (settings plus any of the trials columns): missing
        columns are added empty, settings placed after ``status`` (searched ones first), lists
        made tuples, and the rows ranked best first."""
        metric, mode = objective
        frame = pd.DataFrame.from_records(
            [{k: hashable(v) for k, v in r.items()} for r in rows])
        order = fixed_columns(metric)
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
        columns = ["trial_id", "epoch", "timestamp", *history_metrics()]
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
        return score_column(self.objective[0])

    @property
    def config_keys(self) -> list[str]:
        """The trial settings present as columns, searched ones first."""
        fixed = set(fixed_columns(self.objective[0]))
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
        if self.objective[0] not in HISTORY_METRICS:
            return ()
        rungs = self.meta.get("rungs")
        stopped = self.trials.loc[self.trials["status"] == Status.STOPPED_EARLY, "stopped_epoch"]
        return tuple(sorted({int(e) for e in stopped.dropna()
                             if rungs is None or int(e) in rungs}))

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


def history_metrics() -> tuple[str, ...]:
    """The metrics trials report every epoch: the classifier's, then those of the plugin
    trainables imported (a spec's ``plugins``, imported when the spec is read)."""
    return HISTORY_METRICS + tuple(m for m in metric_modes() if m not in METRICS)


def hashable(value: Any) -> Any:
    """Lists (e.g. ``channels``) as tuples, so they group, compare and index."""
    if isinstance(value, list | tuple):
        return tuple(hashable(v) for v in value)
    return value


def score_column(metric: str) -> str:
    """The trials column of a metric: ``best_<metric>`` for one reported every epoch."""
    return f"best_{metric}" if metric in history_metrics() else metric


def best_columns(metric: str) -> list[str]:
    """The ``best_*`` columns: val accuracy, val loss and the objective's."""
    keys = ["val_top1", "val_loss"] + ([metric] if metric in history_metrics() else [])
    return [f"best_{k}" for k in dict.fromkeys(keys)]


def fixed_columns(metric: str) -> list[str]:
    """Every trials column that is not a setting, in order."""
    best = best_columns(metric)
    score = score_column(metric)  # one no list knows (a plugin's, unread): a column still
    finals = [*FINAL_METRICS, *([score] if score not in (*best, *FINAL_METRICS) else [])]
    return (["trial_id", "status"] + best + ["best_epoch"] + finals
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

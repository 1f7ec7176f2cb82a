"""The project's vocabulary: each name defined here once and imported everywhere else.

- :class:`Status`: how a trial stands or ended, the same word in ``result.json``, MLflow's
  ``hpsearch.status`` tag, the progress line, the summary and the report.
- :data:`METRICS`: every metric a trial reports that can be optimised, with its direction;
  :data:`HISTORY_METRICS` (every epoch) and :data:`FINAL_METRICS` (once, after the last).
- :class:`TuneStatus`: Ray Tune's own trial statuses, as its experiment snapshot spells them.
- :class:`SweepState`: how a whole sweep stands (``hpsearch list``/``status``/``stop``).
- :class:`Role`: what an MLflow run of a sweep is (its tag :data:`ROLE_TAG`): the sweep's parent
  run, a trial's nested run, or the final model ``hpsearch finalize`` retrained.

It lives in trainables/ (which imports nothing of search/) because trials report these words;
search/ imports it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = ["CONSTANT_METRICS", "COPIED", "DEFAULT_OBJECTIVE", "ENDED_WITH_SWEEP", "FINAL_METRICS",
           "HISTORY_METRICS", "METRICS", "NOT_STARTED", "OWN_ENDS", "ROLE_TAG", "STATUS_ORDER",
           "Role", "Status", "StopMode", "SweepState", "TuneStatus", "ended_with_sweep",
           "stopped_label", "trial_status"]


class Status(StrEnum):
    """A trial's status. Values are the words users see; members compare equal to them."""

    RUNNING = "running"  # reported with every epoch but the last
    COMPLETED = "completed"  # trained every epoch
    STOPPED_EARLY = "stopped_early"  # the scheduler (ASHA) ended it before its last epoch
    DIVERGED = "diverged"  # loss not finite: ended with its last metrics
    REJECTED = "rejected"  # over a cost constraint: never trained
    FAILED = "failed"  # raised, and kept raising past resources.max_failures
    UNKNOWN = "unknown"  # no record says

    @property
    def final(self) -> bool:
        """The trial is over."""
        return self in _FINAL

    @property
    def pickable(self) -> bool:
        """A model a user may pick as the best: it trained and ended sanely."""
        return self in (Status.COMPLETED, Status.STOPPED_EARLY)

    @property
    def label(self) -> str:
        """The word for a count (``3 stopped early``)."""
        return self.value.replace("_", " ")


# How a trial ended when the sweep's end cut it (its target or plateau reached, its time limit
# up): one that had started was "ended with the sweep" (the report's "ended at epoch N"), one
# still waiting "not started". Words of the progress line, the summary and the report's counts,
# not statuses a trial reports.
ENDED_WITH_SWEEP = "ended with the sweep"
NOT_STARTED = "not started"


def ended_with_sweep(stopped_epoch: Any, rungs: Any) -> bool:
    """Whether a trial stopped early after ``stopped_epoch`` was still training when the sweep
    ended (time limit, target, a stop) rather than stopped by its scheduler: the epoch is none
    of the scheduler's ``rungs`` (False when they are not known), or it had not finished an
    epoch (no scheduler stops a trial before its first). The report's labels and the MLflow
    run's name and description both follow it."""
    return int(stopped_epoch) == 0 or (rungs is not None and int(stopped_epoch) not in rungs)


def stopped_label(stopped_epoch: int, rungs: Any) -> str:
    """A trial stopped early, in words: ``stopped at epoch 3`` (its scheduler), ``ended at
    epoch 11`` (still training when the sweep ended), ``ended before epoch 1``."""
    epoch = int(stopped_epoch)
    if epoch == 0:
        return "ended before epoch 1"
    return f"ended at epoch {epoch}" if ended_with_sweep(epoch, rungs) \
        else f"stopped at epoch {epoch}"


# The statuses a trial reports as it ends itself: its own word says how it ended, whatever
# Tune did with it afterwards (HyperBand may hold a completed trial at its last milestone).
OWN_ENDS = frozenset({Status.COMPLETED, Status.DIVERGED, Status.REJECTED})
_FINAL = frozenset({Status.COMPLETED, Status.STOPPED_EARLY, Status.DIVERGED, Status.REJECTED,
                    Status.FAILED})
# Tables and counts list statuses in this order: best outcome first.
STATUS_ORDER = (Status.COMPLETED, Status.STOPPED_EARLY, Status.DIVERGED, Status.REJECTED,
                Status.FAILED, Status.RUNNING, Status.UNKNOWN)


class TuneStatus(StrEnum):
    """Ray Tune's trial statuses (``Trial.status``, and in ``experiment_state-*.json``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


class SweepState(StrEnum):
    """How a sweep stands, as any machine that sees its storage derives it."""

    RUNNING = "running"  # its driver writes a fresh heartbeat
    FINISHED = "finished"  # every trial ended
    INTERRUPTED = "interrupted"  # its driver died (stale heartbeat) or failed: resume it
    STOPPED = "stopped"  # ended by `hpsearch stop`: resume it

    @property
    def resumable(self) -> bool:
        """``hpsearch resume`` continues it."""
        return self in (SweepState.INTERRUPTED, SweepState.STOPPED)


class Role(StrEnum):
    """What an MLflow run of a sweep is: the value of its tag :data:`ROLE_TAG`."""

    SWEEP = "sweep"  # the sweep's parent run
    TRIAL = "trial"  # one trial, nested under the parent
    FINAL = "final"  # the best trial retrained on train+val (``hpsearch finalize``), nested too


ROLE_TAG = "hpsearch.role"


class StopMode(StrEnum):
    """How ``hpsearch stop`` asks a sweep to stop."""

    GRACEFUL = "graceful"  # running trials finish their current epoch first
    NOW = "now"  # at once: the epoch in progress is lost, every finished one kept


def trial_status(last_reported: str | None, tune_status: str | None,
                 error: str | None = None) -> Status:
    """A trial's :class:`Status` from its own last reported ``status`` and Tune's.

    The trial's own word wins when it ended the trial (a retried trial that completed is
    completed); otherwise Tune's: ERROR -> failed, TERMINATED while still "running" -> stopped
    early by the scheduler; PENDING/RUNNING/PAUSED -> running.
    """
    if last_reported in OWN_ENDS:
        return Status(last_reported)
    if tune_status == TuneStatus.ERROR or (tune_status is None and error):
        return Status.FAILED
    if tune_status == TuneStatus.TERMINATED:
        return Status.STOPPED_EARLY
    if tune_status in (TuneStatus.RUNNING, TuneStatus.PENDING, TuneStatus.PAUSED):
        return Status.RUNNING
    return Status.UNKNOWN


# What each accuracy the report and MLflow show means: one definition for both.
SCORE_DEFINITIONS: dict[str, str] = {
    "best_val_top1": "val top-1 accuracy at the trial's best epoch (the highest over the epochs "
                     "it ran); ranks the trials; in MLflow the highest point of the run's "
                     "val_top1 chart",
    "val_top1": "val top-1 accuracy after the last epoch the trial ran; the val_top1 that "
                "MLflow's runs table shows (a metric's latest value)",
    "test_top1": "top-1 accuracy on the test set of the model after its last epoch, measured "
                 "once and only when the trial ran every epoch; MLflow's test_top1",
}

# Every metric a trial reports that can be optimised, with its natural direction.
METRICS: dict[str, str] = {
    "val_top1": "max", "val_top3": "max", "val_loss": "min",
    "train_top1": "max", "train_top3": "max", "train_loss": "min",
    "test_top1": "max", "test_top3": "max", "test_loss": "min",
    "test_f1": "max", "test_precision": "max", "test_recall": "max",
    "params": "min", "macs": "min", "images_per_second": "max", "epoch_seconds": "min",
}
DEFAULT_OBJECTIVE = ("val_top1", "max")
# Reported every epoch (besides epoch, status and Ray's bookkeeping).
HISTORY_METRICS = ("train_loss", "train_top1", "train_top3", "val_loss", "val_top1", "val_top3",
                   "lr", "images_per_second", "epoch_seconds", "time_total_s")
# Reported once per trial: test scores after the last epoch; the model's cost.
FINAL_METRICS = ("test_loss", "test_top1", "test_top3", "test_precision", "test_recall",
                 "test_f1", "params", "macs")
# Reported with every epoch but the same in each one of a trial: MLflow logs them once, and
# again at the epoch a trial goes on from a copy of another's model (population-based training).
CONSTANT_METRICS = ("params", "macs", "train_samples", "val_samples")

# The result key of the first epoch a trial trains on weights copied from another trial
# (population-based training): ``{"from": trial id, "epoch": the copy's epoch, "changes":
# {setting: [the other trial's value, this trial's]}}``.
COPIED = "copied_from"

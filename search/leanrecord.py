"""Tune's in-memory record of each trial kept small, for sweeps of thousands of trials.

Tune keeps every trial of a run in the driver until it ends, and for each numeric value of a
result (hpsearch's metrics and the flattened config: about 30) it keeps min, max, mean, last
and the mean of the last 5 and 10 values, the last two from two ``deque`` objects per value.
Those deques alone were about 60 KB per trial, a third of the driver's growth per trial, and
they come back in every experiment snapshot. hpsearch reads none of the running means (the
progress line and report use min/max and ``result.json``), so each trial is given none:
``last-5-avg`` / ``last-10-avg`` are left out of ``trial.metric_analysis``; min, max, avg and
last stay.

Once a trial is over, its record shrinks again (a 3-epoch trial of the quickstart: 75 KB of
Python objects and cached snapshot text, 32 KB after):

- ``metric_analysis`` keeps the objective's metrics only (what the progress line reads);
- each of its checkpoints keeps, of the result it was reported with (a full copy per epoch,
  beside ``last_result``, and pickled into every snapshot), only the epoch, Tune's iteration
  and the objective's metrics: what a resume reads (the epoch it continues from) and what
  Tune would rank checkpoints by;
- ``last_result`` keeps what the driver reads of a finished trial: the objective's metrics,
  the epoch, Tune's iteration and ``done``, the trial's own status and id (the progress line,
  ``hpsearch status``, the summary, PBT's donor choice), and its config as the trial's own
  object rather than the deserialised copy in each result (the summary's best config).

``result.json`` and MLflow hold every metric of every epoch. The callback runs after every
other one (the runner lists it last), and Tune has given the scheduler and searcher the whole
result before any callback hears of the end.

A trial that errored is left whole: a resume retries it from its record.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ray.tune import Callback

__all__ = ["LeanTrialRecord"]

_CHECKPOINT_KEEPS = ("epoch", "training_iteration")  # + the objective's metrics
_LAST_KEEPS = (*_CHECKPOINT_KEEPS, "done", "status", "trial_id")  # + the objective, config


class LeanTrialRecord(Callback):
    """Each trial's ``metric_analysis`` without Tune's last-n running means; a finished
    trial's record cut to what is read after it ends.

    Args:
        objective: The metrics the sweep optimises (kept for a finished trial).
    """

    def __init__(self, objective: Iterable[str] = ()) -> None:
        self._keep = frozenset(objective)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        meta = getattr(trial, "run_metadata", None)
        if meta is None or not getattr(meta, "_n_steps", None):
            return  # already lean, or Tune's record moved (then nothing is saved, nothing lost)
        meta._n_steps = ()  # read by update_metric for every value of every result
        meta.metric_n_steps = {}
        for stats in meta.metric_analysis.values():  # a restored trial's, from its snapshot
            for key in [k for k in stats if k.startswith("last-")]:
                del stats[key]

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        meta = getattr(trial, "run_metadata", None)
        if meta is None or not isinstance(getattr(meta, "metric_analysis", None), dict):
            return  # Tune's record moved: leave it whole
        # assigning, not mutating: Tune's setattr drops the record's cached snapshot text
        meta.metric_analysis = {k: v for k, v in meta.metric_analysis.items() if k in self._keep}
        keep = self._keep.union(_CHECKPOINT_KEEPS)
        manager = getattr(meta, "checkpoint_manager", None)
        kept = [*(getattr(manager, "_checkpoint_results", None) or ()),
                getattr(manager, "latest_checkpoint_result", None)]  # PBT may set it apart
        for result in kept:
            if isinstance(getattr(result, "metrics", None), dict):
                result.metrics = {k: v for k, v in result.metrics.items() if k in keep}
        last = getattr(meta, "last_result", None)
        if isinstance(last, dict) and last:
            keep_last = self._keep.union(_LAST_KEEPS)
            lean = {k: v for k, v in last.items() if k in keep_last}
            if "config" in last:
                lean["config"] = trial.config
            meta.last_result = lean

"""Tune's in-memory record of each trial kept small, for sweeps of thousands of trials.

Tune keeps every trial of a run in the driver until it ends, and for each numeric value of a
result (hpsearch's metrics and the flattened config: about 30) it keeps min, max, mean, last
and the mean of the last 5 and 10 values, the last two from two ``deque`` objects per value.
Those deques alone were about 60 KB per trial, a third of the driver's growth per trial, and
they come back in every experiment snapshot. hpsearch reads none of the running means (the
progress line and report use min/max and ``result.json``), so each trial is given none:
``last-5-avg`` / ``last-10-avg`` are left out of ``trial.metric_analysis``; min, max, avg and
last stay.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

__all__ = ["LeanTrialRecord"]


class LeanTrialRecord(Callback):
    """Each trial's ``metric_analysis`` without Tune's last-n running means."""

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        meta = getattr(trial, "run_metadata", None)
        if meta is None or not getattr(meta, "_n_steps", None):
            return  # already lean, or Tune's record moved (then nothing is saved, nothing lost)
        meta._n_steps = ()  # read by update_metric for every value of every result
        meta.metric_n_steps = {}
        for stats in meta.metric_analysis.values():  # a restored trial's, from its snapshot
            for key in [k for k in stats if k.startswith("last-")]:
                del stats[key]

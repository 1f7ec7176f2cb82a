"""Study-level stopping: a sweep that ends itself on a target or on a plateau.

* ``budget.target: {val_top1: 0.93}``: the sweep ends as soon as one trial reports every target
  metric at least that good (in each metric's direction, :data:`trainables.vocab.METRICS`), at
  any epoch.
* ``budget.plateau: N``: the sweep ends when the best objective has not improved in N finished
  trials in a row (completed or stopped early; a trial's score is its best epoch).

Tune asks :class:`SweepStopper` after every result and stops every trial once it says so; the
trials keep their per-epoch checkpoints, and the summary says why the sweep ended. A resumed
sweep counts afresh.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback, Stopper

from hpsearch.search.spec import SweepSpec
from hpsearch.trainables.vocab import METRICS

__all__ = ["FinishedTrials", "SweepStopper", "study_stopping"]


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


class SweepStopper(Stopper):
    """Ends the whole sweep on a target or a plateau; :attr:`reason` says which, once it has.

    Args:
        metric, mode: The objective the plateau is watched on.
        target: Metric -> value every one of which a single result must reach.
        plateau: Finished trials in a row without a better best that end the sweep.
    """

    def __init__(self, metric: str, mode: str, *, target: dict[str, float] | None = None,
                 plateau: int | None = None) -> None:
        self.metric, self.mode = metric, mode
        self.target, self.plateau = dict(target or {}), plateau
        self.reason: str | None = None
        self._trial_best: dict[str, float] = {}
        self._best: float | None = None
        self._since_better = 0

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            old = self._trial_best.get(trial_id)
            if old is None or _better(value, old, self.mode):
                self._trial_best[trial_id] = float(value)
        if self.target and self.reason is None and all(
                isinstance(result.get(m), int | float) and math.isfinite(result[m])
                and not _better(goal, result[m], METRICS[m]) for m, goal in self.target.items()):
            reached = ", ".join(f"{m} {result[m]:.4f} (target {goal:g})"
                                for m, goal in self.target.items())
            self.reason = (f"target reached by trial {result.get('trial_id', trial_id)} at "
                           f"epoch {result.get('epoch', '?')}: {reached}")
        return False  # one trial is never stopped here; stop_all ends them all

    def stop_all(self) -> bool:
        return self.reason is not None

    def trial_finished(self, trial_id: str) -> None:
        """A trial ended (completed or stopped early): the plateau count moves on."""
        value = self._trial_best.get(trial_id)
        if self.plateau is None or value is None or self.reason is not None:
            return  # a failed or rejected trial has no score to compare
        if self._best is None or _better(value, self._best, self.mode):
            self._best, self._since_better = value, 0
            return
        self._since_better += 1
        if self._since_better >= self.plateau:
            self.reason = (f"plateau: the best {self.metric} ({self._best:.4f}) has not "
                           f"improved in {self.plateau} finished trials")


class FinishedTrials(Callback):
    """Tells the stopper when a trial ends (Tune's stoppers see results, not endings)."""

    def __init__(self, stopper: SweepStopper) -> None:
        self.stopper = stopper

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        self.stopper.trial_finished(trial.trial_id)


def study_stopping(spec: SweepSpec) -> tuple[SweepStopper | None, list[Callback]]:
    """The sweep's stopper and the callback it needs; (None, []) without target or plateau."""
    budget = spec.budget
    if not budget.target and budget.plateau is None:
        return None, []
    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    stopper = SweepStopper(metric, mode, target=budget.target, plateau=budget.plateau)
    return stopper, [FinishedTrials(stopper)]

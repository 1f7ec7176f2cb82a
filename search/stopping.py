"""Study-level stopping: a sweep that ends itself on a target, a plateau or Optuna's Terminator.

* ``budget.target: {val_top1: 0.93}``: the sweep ends as soon as one trial reports every target
  metric at least that good (in each metric's direction, :data:`trainables.vocab.METRICS`), at
  any epoch.
* ``budget.plateau: N``: the sweep ends when the best objective has not improved in N finished
  trials in a row (completed or stopped early; a trial's score is its best epoch).
* ``budget.terminator: 0.002``: Optuna's Terminator ends the sweep once its regret bound (a
  Gaussian process fitted to the completed trials bounds how much better than the best the
  space could still be) falls below 0.002, the objective's noise in its units: trials then
  gain less than the noise. hpsearch trials report no cross-validation folds, so the noise is
  given, not estimated (Optuna's ``StaticErrorEvaluator``; its fold-free heuristic,
  ``MedianErrorEvaluator``, puts the threshold at 1% of the early bounds, which on a smooth
  two-setting objective never fired within 100 trials of TPE or random). The trials that ran
  every epoch are told, with their configs and last-epoch objective as the searcher tells its
  study, to a study of the rule's own; it judges after each, from ``TERMINATOR_MIN_TRIALS`` on.

Tune asks :class:`SweepStopper` after every result and stops every trial once it says so; the
trials keep their per-epoch checkpoints, and the summary says why the sweep ended. A resumed
sweep counts afresh.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from ray.tune import Callback, Stopper

from hpsearch.search.spec import TERMINATOR_MIN_TRIALS, SweepSpec
from hpsearch.trainables.vocab import METRICS, Status

if TYPE_CHECKING:
    import optuna

__all__ = ["FinishedTrials", "SweepStopper", "TerminatorRule", "study_stopping"]


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


class TerminatorRule:
    """Optuna's Terminator over the sweep's completed trials (see the module docstring).

    Args:
        spec: The sweep: its space (the study's distributions), objective and seed.
        error: The objective's noise: the sweep ends once the regret bound is below it.
    """

    def __init__(self, spec: SweepSpec, error: float) -> None:
        import optuna
        from optuna.terminator import RegretBoundEvaluator, StaticErrorEvaluator, Terminator

        self.metric, self.error = spec.metric, error
        self.spec = spec
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study" line of its own
        self.study = optuna.create_study(direction="maximize" if spec.mode == "max"
                                         else "minimize")
        optuna.logging.set_verbosity(verbosity)
        with warnings.catch_warnings():  # deprecated since Optuna 4.9 (to OptunaHub in 6.0)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.bound = _Recorded(RegretBoundEvaluator(seed=spec.search.seed))
            self.terminator = Terminator(self.bound, StaticErrorEvaluator(error),
                                         min_n_trials=TERMINATOR_MIN_TRIALS)

    def tell(self, config: dict[str, Any], value: float) -> str | None:
        """Add one completed trial; why the sweep should end now, or None."""
        import optuna

        from hpsearch.search.space import optuna_params

        params, distributions = optuna_params(self.spec, config)
        self.study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions, value=value))
        if not self.terminator.should_terminate(self.study):
            return None
        done = len(self.study.trials)
        return (f"Optuna's Terminator: after {done} completed trials the best {self.metric} "
                f"({self.study.best_value:.4f}) could gain at most {self.bound.last:.4g} "
                f"(regret bound), less than its noise {self.error:g}")


class _Recorded:
    """An improvement evaluator that keeps its last value, for the reason line."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.last = inner, math.nan

    def evaluate(self, trials: list[optuna.trial.FrozenTrial], study_direction: Any) -> float:
        self.last = float(self.inner.evaluate(trials, study_direction))
        return self.last


class SweepStopper(Stopper):
    """Ends the whole sweep on a target, a plateau or Optuna's Terminator; :attr:`reason`
    says which, once it has.

    Args:
        metric, mode: The objective the plateau is watched on.
        target: Metric -> value every one of which a single result must reach.
        plateau: Finished trials in a row without a better best that end the sweep.
        terminator: Optuna's Terminator, told every trial that ran all its epochs.
    """

    def __init__(self, metric: str, mode: str, *, target: dict[str, float] | None = None,
                 plateau: int | None = None, terminator: TerminatorRule | None = None) -> None:
        self.metric, self.mode = metric, mode
        self.target, self.plateau, self.terminator = dict(target or {}), plateau, terminator
        self.reason: str | None = None
        self._trial_best: dict[str, float] = {}
        self._trial_last: dict[str, tuple[Any, Any]] = {}  # (status, objective) last reported
        self._best: float | None = None
        self._since_better = 0

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = result.get(self.metric)
        self._trial_last[trial_id] = (result.get("status"), value)
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

    def trial_finished(self, trial_id: str, config: dict[str, Any] | None = None) -> None:
        """A trial ended (completed or stopped early): the plateau count moves on, and the
        Terminator is told the trial's config and last objective if it ran every epoch."""
        status, last = self._trial_last.get(trial_id, (None, None))
        if self.terminator is not None and self.reason is None and config is not None \
                and status == Status.COMPLETED and isinstance(last, int | float) \
                and math.isfinite(last):
            self.reason = self.terminator.tell(config, float(last))
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
        self.stopper.trial_finished(trial.trial_id, dict(trial.config))


def study_stopping(spec: SweepSpec) -> tuple[SweepStopper | None, list[Callback]]:
    """The sweep's stopper and the callback it needs; (None, []) without a stopping rule."""
    budget = spec.budget
    if not budget.target and budget.plateau is None and budget.terminator is None:
        return None, []
    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    terminator = None if budget.terminator is None else TerminatorRule(spec, budget.terminator)
    stopper = SweepStopper(metric, mode, target=budget.target, plateau=budget.plateau,
                           terminator=terminator)
    return stopper, [FinishedTrials(stopper)]

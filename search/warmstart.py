"""Warm starts: the finished trials of earlier sweeps, given to a new sweep's Optuna sampler.

``search.warm_start: [earlier]`` reads each named sweep from the same storage (its own folder,
as ``report`` does) and adds its trials to the new study before the first suggestion, as Optuna
would have seen them: a completed trial as ``COMPLETE`` with its last-epoch objective (what
:class:`search.algorithms.TruthfulOptunaSearch` tells Optuna), a trial ASHA stopped as
``PRUNED`` with its per-epoch values. Failed, diverged and rejected trials are left out.

The earlier sweep must be compatible: the same searched settings with the same kinds of
distribution, the same objective, dataset and epochs per trial. Anything else is one line that
names the difference, before Ray starts. Values the new space no longer allows (a narrowed
range, a dropped choice) are skipped and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.search.spec import SweepSpec
from hpsearch.search.spec.errors import did_you_mean
from hpsearch.search.sweepdir import META_FILE, run_dir_for, sweep_names
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import Status

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["WarmStart", "warm_start"]

_WHERE = "search.warm_start"


@dataclass(frozen=True)
class WarmStart:
    """The trials a new study starts with, and how many were left out (and why)."""

    trials: list[FrozenTrial]
    skipped: dict[str, int]

    def summary(self, names: list[str]) -> str:
        """One line for the sweep's start: what the sampler was given."""
        left = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return (f"warm start from {', '.join(names)}: {len(self.trials)} earlier trials given "
                f"to the sampler" + (f" (left out: {left})" if left else ""))


def warm_start(spec: SweepSpec) -> WarmStart:
    """The earlier sweeps' trials as Optuna trials of ``spec``'s space.

    Raises:
        UserError: A named sweep does not exist or is not compatible (one line, naming it).
    """
    from hpsearch.search.report.load import from_ray_dir

    trials: list[FrozenTrial] = []
    skipped: dict[str, int] = {}
    for name in spec.search.warm_start or []:
        run_dir = run_dir_for(name, spec.storage)
        if name == spec.name:
            raise UserError(f"{_WHERE}: '{name}' is this sweep; continue it with `hpsearch "
                            f"resume {name}`, or warm-start from an earlier one")
        if not (run_dir / META_FILE).is_file():
            known = [n for n in sweep_names(run_dir.parent) if n != spec.name]
            raise UserError(f"{_WHERE}: no sweep '{name}' in {run_dir.parent}"
                            f"{did_you_mean(name, known)}; sweeps there: "
                            f"{', '.join(known) or 'none'}")
        data = from_ray_dir(run_dir)
        if data.spec is None:
            raise UserError(f"{_WHERE}: sweep '{name}' has no readable spec in {META_FILE}")
        difference = incompatibility(data.spec, spec)
        if difference:
            raise UserError(f"{_WHERE}: sweep '{name}' is not compatible with this one: "
                            f"{difference}")
        for trial in _optuna_trials(data, spec, skipped):
            trials.append(trial)
    return WarmStart(trials, skipped)


def incompatibility(earlier: SweepSpec, spec: SweepSpec) -> str | None:
    """What makes ``earlier``'s trials meaningless to ``spec``'s sampler, or None."""
    only_there = [k for k in earlier.space if k not in spec.space]
    only_here = [k for k in spec.space if k not in earlier.space]
    if only_there or only_here:
        parts = ([f"{', '.join(only_there)} searched only there"] if only_there else []) + \
                ([f"{', '.join(only_here)} searched only here"] if only_here else [])
        return "; ".join(parts)
    for key, entry in spec.space.items():
        there = earlier.space[key]
        if there.type != entry.type:
            return f"{key} is {there.type} there, {entry.type} here"
    if (earlier.metrics, earlier.modes) != (spec.metrics, spec.modes):
        return (f"the objective is {_objective(earlier)} there, {_objective(spec)} here")
    if earlier.budget.max_epochs != spec.budget.max_epochs:
        return (f"trials ran {earlier.budget.max_epochs} epochs there, "
                f"{spec.budget.max_epochs} here, so their scores do not compare")
    data_there, data_here = (s.trial_defaults().get("dataset") for s in (earlier, spec))
    if data_there != data_here:
        return f"the dataset is {data_there} there, {data_here} here"
    return None


def _objective(spec: SweepSpec) -> str:
    return ", ".join(f"{m} ({d})" for m, d in zip(spec.metrics, spec.modes, strict=True))


def _optuna_trials(data: Any, spec: SweepSpec, skipped: dict[str, int]) -> list[FrozenTrial]:
    import optuna
    from optuna.trial import TrialState

    from hpsearch.search.space import optuna_params

    trials = []
    history = data.history
    for row in data.trials.to_dict("records"):
        status = row.get("status")
        if status not in (Status.COMPLETED, Status.STOPPED_EARLY):
            skipped[str(status)] = skipped.get(str(status), 0) + 1
            continue
        epochs = history[history["trial_id"] == row["trial_id"]].sort_values("epoch")
        params, dists = optuna_params(spec, row)
        if not all(_allows(dists[key], value) for key, value in params.items()):
            skipped["outside this space"] = skipped.get("outside this space", 0) + 1
            continue
        if status == Status.COMPLETED:
            values = [_last(epochs, row, m) for m in spec.metrics]
            if not all(math.isfinite(v) for v in values):
                skipped["without a score"] = skipped.get("without a score", 0) + 1
                continue
            trials.append(optuna.trial.create_trial(
                state=TrialState.COMPLETE, params=params, distributions=dists,
                values=values))
        elif len(spec.metrics) == 1 and spec.metric in epochs:
            steps = {int(e): float(v) for e, v in zip(epochs["epoch"], epochs[spec.metric],
                                                      strict=True) if math.isfinite(v)}
            trials.append(optuna.trial.create_trial(
                state=TrialState.PRUNED, params=params, distributions=dists,
                intermediate_values=steps))
    return trials


def _allows(dist: Any, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _last(epochs: Any, row: dict[str, Any], metric: str) -> float:
    """The trial's objective as Optuna was told it: its last epoch's value (test metrics,
    reported once, from the trial's final values)."""
    if metric in epochs and len(epochs) and math.isfinite(epochs[metric].iloc[-1]):
        return float(epochs[metric].iloc[-1])
    value = row.get(metric, math.nan)
    return float(value) if value is not None else math.nan

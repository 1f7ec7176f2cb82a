"""The completed trials as a finished Optuna study, so Optuna ranks the settings (PED-ANOVA,
its default importance evaluator) and draws them (:mod:`search.report.plots`). Each setting's
distribution is the spec entry's own (:func:`search.space.optuna_distribution`), spanned to the
values the trials had."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from hpsearch.search.report.data import SweepData, varies
from hpsearch.search.report.formats import missing, setting_title
from hpsearch.search.space import encode_value, optuna_distribution

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["IMPORTANCE_METHOD", "MIN_IMPORTANCE_TRIALS", "evaluator", "importance_study",
           "param_importances", "scored_study"]

MIN_IMPORTANCE_TRIALS = 10  # completed trials; fewer and the ranking is noise
_SKIPPED = "hyperparameter importance (PED-ANOVA) skipped"
_STEADY_TRIALS = 50  # Optuna advises >= 5 trials in PED-ANOVA's top 10%
IMPORTANCE_METHOD = ("PED-ANOVA (Optuna's default importance evaluator): how far each "
                     "setting's values in the top 10% of completed trials are from its values "
                     "in all of them")


def evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """The evaluator that ranks the settings: Optuna's default, named in the report."""
    import optuna

    return optuna.importance.PedAnovaImportanceEvaluator()


def scored_study(data: SweepData, keys: Sequence[str], trials: pd.DataFrame, *,
                 titled: bool = False) -> optuna.Study:
    """``trials`` (scored ones) as a finished study over the settings ``keys``; a trial that
    lacks a setting (a conditional one) has no such param. ``titled``: params named as the
    tables name them ("Learning rate", not ``lr``), for plots."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    score = data.score_column
    distributions = {k: _distribution(data.spec.space.get(k) if data.spec is not None else None,
                                      [v for v in trials[k] if not missing(v)]) for k in keys}
    study = optuna.create_study(direction="maximize" if data.objective[1] == "max"
                                else "minimize")
    name = setting_title if titled else str
    for _, t in trials.iterrows():
        present = [k for k in keys if not missing(t[k])]
        study.add_trial(optuna.trial.create_trial(
            params={name(k): _param(distributions[k], t[k]) for k in present},
            distributions={name(k): distributions[k] for k in present}, value=float(t[score])))
    return study


def importance_study(data: SweepData, *, titled: bool = False,
                     ) -> tuple[optuna.Study, list[str]] | str:
    """The study PED-ANOVA ranks and the settings it ranks: completed trials (one fidelity),
    settings varied and present in every one of them; or, as one line, why there is none (too
    few trials or settings)."""
    score = data.score_column
    trials = data.completed[data.completed[score].notna()]
    keys = [k for k in data.searched
            if trials[k].map(lambda v: not missing(v)).all() and varies(trials[k])]
    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return (f"{_SKIPPED}: {len(trials)} completed trial(s), at least "
                f"{MIN_IMPORTANCE_TRIALS} needed")
    if len(keys) < 2:
        return (f"{_SKIPPED}: {len(keys)} setting(s) varied across the completed trials, at "
                "least 2 needed")
    if trials[score].nunique() < 2:
        return f"{_SKIPPED}: every completed trial has the same score"
    return scored_study(data, keys, trials, titled=titled), keys


def param_importances(data: SweepData) -> tuple[dict[str, float] | None, str]:
    """PED-ANOVA importances (Optuna's default) of the searched settings for the objective.

    Returns:
        ``(importances, note)``: the note names the method and how many trials it saw; None
        and the reason when there are fewer than 2 varied settings or fewer than
        :data:`MIN_IMPORTANCE_TRIALS` completed trials.
    """
    import optuna

    found = importance_study(data)
    if isinstance(found, str):
        return None, found
    study, _ = found
    try:
        ranked = optuna.importance.get_param_importances(study, evaluator=evaluator())
    except RuntimeError as err:  # e.g. no variance to split
        return None, f"{_SKIPPED}: {err}"
    n = len(study.trials)
    caution = f"; rough below {_STEADY_TRIALS} trials" if n < _STEADY_TRIALS else ""
    return {k: float(v) for k, v in ranked.items()}, (
        f"{IMPORTANCE_METHOD}; {n} completed trials{caution}")


def _distribution(entry: Any, values: list[Any]) -> BaseDistribution:
    """One setting over the values the trials had: its spec entry's distribution spanned to
    them; without an entry, inferred from them (log when they span a decade or more); else the
    values present as categories."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ints = numbers and all(isinstance(v, int) for v in values)
    if entry is None and numbers:
        log = min(values) > 0 and max(values) / min(values) >= 10
        if ints:
            return IntDistribution(min(values), max(values), log=log)
        return FloatDistribution(float(min(values)), float(max(values)), log=log)
    dist = optuna_distribution(entry) if entry is not None else None
    # spanned, not stepped: the trials' values rank as they are, on or off the spec's grid
    if isinstance(dist, FloatDistribution):
        return FloatDistribution(min(dist.low, *values), max(dist.high, *values), log=dist.log)
    if isinstance(dist, IntDistribution) and ints:
        return IntDistribution(min(dist.low, *values), max(dist.high, *values), log=dist.log)
    return CategoricalDistribution(list(dict.fromkeys(encode_value(v) for v in values)))


def _param(distribution: BaseDistribution, value: Any) -> Any:
    from optuna.distributions import CategoricalDistribution

    return encode_value(value) if isinstance(distribution, CategoricalDistribution) else value

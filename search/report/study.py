"""The scored trials as a finished Optuna study, so Optuna ranks the settings (fANOVA) and draws
them (:mod:`search.report.plots`). Each setting's distribution is the spec entry's own
(:func:`search.space.optuna_distribution`), spanned to the values the trials had."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from hpsearch.search.report.data import SweepData, varies
from hpsearch.search.report.formats import missing
from hpsearch.search.space import encode_value, optuna_distribution

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["IMPORTANCE_SEED", "importance_study", "param_importances", "scored_study"]

IMPORTANCE_SEED = 0  # fANOVA's random forest: the same importances every time
_MIN_IMPORTANCE_TRIALS = 4


def scored_study(data: SweepData, keys: Sequence[str], trials: pd.DataFrame) -> optuna.Study:
    """``trials`` (scored ones) as a finished study over the settings ``keys``; a trial that
    lacks a setting (a conditional one) has no such param."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    score = data.score_column
    distributions = {k: _distribution(data.spec.space.get(k) if data.spec is not None else None,
                                      [v for v in trials[k] if not missing(v)]) for k in keys}
    study = optuna.create_study(direction="maximize" if data.objective[1] == "max"
                                else "minimize")
    for _, t in trials.iterrows():
        present = [k for k in keys if not missing(t[k])]
        study.add_trial(optuna.trial.create_trial(
            params={k: _param(distributions[k], t[k]) for k in present},
            distributions={k: distributions[k] for k in present}, value=float(t[score])))
    return study


def importance_study(data: SweepData) -> tuple[optuna.Study, list[str]] | str:
    """The study fANOVA ranks and the settings it ranks: those varied and present in every
    scored trial; or, as one line, why there is none (too few trials or settings)."""
    score = data.score_column
    trials = data.trials[data.trials[score].notna()]
    keys = [k for k in data.searched
            if trials[k].map(lambda v: not missing(v)).all() and varies(trials[k])]
    if len(trials) < _MIN_IMPORTANCE_TRIALS:
        return (f"hyperparameter importance skipped: {len(trials)} scored trial(s), "
                f"at least {_MIN_IMPORTANCE_TRIALS} needed")
    if len(keys) < 2:
        return (f"hyperparameter importance skipped: {len(keys)} setting(s) varied across "
                f"every scored trial, at least 2 needed")
    if trials[score].nunique() < 2:
        return "hyperparameter importance skipped: every scored trial has the same score"
    return scored_study(data, keys, trials), keys


def param_importances(data: SweepData) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances (Optuna) of the searched settings for the objective score.

    Returns:
        ``(importances, note)``: None and the reason when there are fewer than 2 varied
        settings or fewer than 4 scored trials.
    """
    import optuna

    found = importance_study(data)
    if isinstance(found, str):
        return None, found
    study, keys = found
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
    try:
        ranked = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except RuntimeError as err:  # e.g. fANOVA finds no variance to split
        return None, f"hyperparameter importance skipped: {err}"
    return {k: float(v) for k, v in ranked.items()}, (
        f"fANOVA over {len(study.trials)} scored trials (settings present in every one of them)")


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

"""``spec.space`` compiled for the searchers: an Optuna define-by-run function, the full grid,
or the one-factor-at-a-time list; and each entry as an Optuna distribution, the one mapping the
searcher and the report share. No torch or Ray import, and Optuna only where a trial exists.

Every function returns flat dicts of TrialConfig keys holding only the *searched* settings;
the runner merges them over :meth:`~search.spec.SweepSpec.trial_defaults`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hpsearch.search.spec import (
    Choice,
    Grid,
    IntRange,
    LogUniform,
    SweepSpec,
    Uniform,
    space_order,
)
from hpsearch.trainables.config import TrialConfig

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = [
    "decode_value",
    "define_by_run",
    "encode_point",
    "encode_value",
    "grid_configs",
    "ofat_configs",
    "ofat_labels",
    "optuna_distribution",
    "optuna_params",
    "space_size",
]

_OPTUNA_SCALARS = (type(None), bool, int, float, str)


def encode_value(value: Any) -> Any:
    """A choice as Optuna stores it: scalars unchanged, anything else (lists) as JSON text."""
    return value if isinstance(value, _OPTUNA_SCALARS) else json.dumps(value)


def decode_value(entry: Choice | Grid, encoded: Any) -> Any:
    """The choice of ``entry`` that Optuna stored as ``encoded``."""
    for value in entry.values:
        if encode_value(value) == encoded:
            return value
    raise KeyError(f"{encoded!r} is not a value of this entry")


def optuna_params(spec: SweepSpec, config: Mapping[str, Any],
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings of ``config`` that ``spec.space`` searches and that are active for it, as
    an Optuna trial holds them: their values (choices as :func:`encode_value`) and
    distributions, in the order :class:`DefineByRun` suggests them."""
    params: dict[str, Any] = {}
    dists: dict[str, Any] = {}
    for key in space_order(spec.space):
        entry = spec.space[key]
        if not entry.is_active(config):
            continue
        value = config[key]
        value = list(value) if isinstance(value, tuple) else value
        params[key] = encode_value(value) if hasattr(entry, "values") else value
        dists[key] = optuna_distribution(entry)
    return params, dists


class DefineByRun:
    """A define-by-run function for OptunaSearch: suggests every active entry and returns the
    sampled settings with real Python values (list choices decoded from their JSON text).
    A class rather than a closure, so Tune can pickle the searcher into its snapshots."""

    def __init__(self, spec: SweepSpec) -> None:
        self.entries = [(key, spec.space[key]) for key in space_order(spec.space)]

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for key, entry in self.entries:
            if entry.is_active(config):
                config[key] = _suggest(trial, key, entry)
        return config


def define_by_run(spec: SweepSpec) -> Callable[[optuna.Trial], dict[str, Any]]:
    """The picklable define-by-run function of ``spec.space`` (see :class:`DefineByRun`)."""
    return DefineByRun(spec)


def optuna_distribution(entry: Uniform | LogUniform | IntRange | Choice | Grid,
                        ) -> BaseDistribution:
    """The Optuna distribution a spec entry samples from; choices as :func:`encode_value`
    stores them. Imports Optuna: call it where a trial or study exists."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(entry, Uniform):
        return FloatDistribution(entry.low, entry.high, step=entry.q)
    if isinstance(entry, LogUniform):
        return FloatDistribution(entry.low, entry.high, log=True)
    if isinstance(entry, IntRange):
        return IntDistribution(entry.low, entry.high, step=entry.step, log=entry.log)
    return CategoricalDistribution([encode_value(v) for v in entry.values])


def _suggest(trial: optuna.Trial, key: str, entry: Any) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    dist = optuna_distribution(entry)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return decode_value(entry, trial.suggest_categorical(key, list(dist.choices)))


def encode_point(spec: SweepSpec, point: Mapping[str, Any]) -> dict[str, Any]:
    """A start point as Optuna's param values (for ``study.enqueue_trial``)."""
    return {k: encode_value(v) if isinstance(spec.space.get(k), Choice | Grid) else v
            for k, v in point.items()}


def grid_configs(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the space's values (the last entry varies fastest); a conditional
    setting is left out where its condition fails, and duplicates are dropped."""
    configs: list[dict[str, Any]] = [{}]
    for key in space_order(spec.space):
        entry, values = spec.space[key], _finite(key, spec.space[key])
        configs = [new for c in configs
                   for new in ([{**c, key: v} for v in values] if entry.is_active(c) else [c])]
    unique: dict[str, dict[str, Any]] = {}
    for config in configs:
        ordered = {k: config[k] for k in spec.space if k in config}  # YAML order
        unique.setdefault(json.dumps(ordered, sort_keys=True), ordered)
    return list(unique.values())


def ofat_configs(spec: SweepSpec) -> list[dict[str, Any]]:
    """The baseline, then each space value that differs from the baseline's, one at a time."""
    base = dict(spec.baseline or {})
    return [base] + [{**base, key: value} for key, value in _variations(spec)]


def ofat_labels(spec: SweepSpec) -> list[tuple[str, Any]]:
    """Parallel to :func:`ofat_configs`: ``("baseline", None)`` then ``(setting, value)``."""
    return [("baseline", None)] + _variations(spec)


def _variations(spec: SweepSpec) -> list[tuple[str, Any]]:
    base = dict(spec.baseline or {})
    defaults = TrialConfig().to_dict()
    out = []
    for key, entry in spec.space.items():
        reference = base.get(key, defaults[key])
        out += [(key, v) for v in _finite(key, entry) if v != reference]
    return out


def space_size(spec: SweepSpec) -> int | None:
    """How many distinct configs the space holds (OFAT: trials), or None if continuous."""
    if spec.design == "ofat":
        return len(_variations(spec)) + 1
    if any(e.finite_values() is None for e in spec.space.values()):
        return None
    entries = [(k, spec.space[k]) for k in space_order(spec.space)]
    controllers = {c for e in spec.space.values() for c in e.conditions()}
    return _count(entries, controllers, {})


def _count(entries: Sequence[tuple[str, Any]], controllers: set[str],
           chosen: dict[str, Any]) -> int:
    """Configs from ``entries`` on, branching only on settings that conditions look at."""
    if not entries:
        return 1
    (key, entry), rest = entries[0], entries[1:]
    if not entry.is_active(chosen):
        return _count(rest, controllers, chosen)
    values = entry.finite_values()
    if key in controllers:
        return sum(_count(rest, controllers, {**chosen, key: v}) for v in values)
    return len(values) * _count(rest, controllers, chosen)


def _finite(key: str, entry: Any) -> Sequence[Any]:
    values = entry.finite_values()
    if values is None:  # parse_spec rejects this for grid search and OFAT
        raise ValueError(f"space.{key}: needs finite values, but got {entry.type}")
    return values

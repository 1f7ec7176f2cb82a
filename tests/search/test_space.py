"""Contract tests for the compiled search space, generated over every distribution type and
driven by a real Optuna study; plus grid and one-factor-at-a-time lists computed by hand."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import optuna
import pytest

from hpsearch.search.space import (
    define_by_run,
    encode_point,
    grid_configs,
    ofat_configs,
    ofat_labels,
    optuna_distribution,
    space_size,
)
from hpsearch.search.spec import Choice, Grid, IntRange, LogUniform, SweepSpec, Uniform, parse_spec
from hpsearch.trainables.config import TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
N_SAMPLES = 150

# id -> (setting, entry as written in YAML). At least one of every distribution type.
ENTRIES: dict[str, tuple[str, Any]] = {
    "uniform": ("momentum", {"type": "uniform", "low": 0.5, "high": 0.99}),
    "uniform_q": ("weight_decay", {"type": "uniform", "low": 0, "high": 0.001, "q": 0.0001}),
    "loguniform": ("lr", {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-1}),
    "int": ("fc_depth", {"type": "int", "low": 1, "high": 3}),
    "int_step": ("fc_width", {"type": "int", "low": 32, "high": 256, "step": 32}),
    "int_log": ("batch_size", {"type": "int", "low": 16, "high": 256, "log": True}),
    "choice": ("batch_size", {"type": "choice", "values": [32, 64, 128]}),
    "choice_lists": ("channels", {"type": "choice", "values": [[16, 32], [32, 64, 128]]}),
    "choice_shorthand": ("optimizer", ["sgd", "adam", "rmsprop"]),
    "choice_bool": ("batchnorm", [True, False]),
    "choice_values_only": ("augment", {"values": [[], ["hflip"], ["hflip", "crop"]]}),
    "grid": ("activation", {"type": "grid", "values": ["relu", "gelu"]}),
}


def _spec(space: dict[str, Any], **sections: Any) -> SweepSpec:
    data = {"name": "t", "fixed": {"dataset": "mnist"}, "space": space,
            "budget": {"trials": 5, "max_epochs": 2}, **sections}
    return parse_spec(data)


def _samples(spec: SweepSpec, n: int = N_SAMPLES, seed: int = 0,
             sampler: optuna.samplers.BaseSampler | None = None) -> list[dict[str, Any]]:
    """Configs from define_by_run, driven by study.ask(); each checked against the trial."""
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=seed))
    sample = define_by_run(spec)
    out = []
    for _ in range(n):
        trial = study.ask()
        config = sample(trial)
        # Ray merges {**trial.params, **config}: every param must come back decoded.
        assert set(config) == set(trial.params)
        study.tell(trial, 0.0)
        out.append(config)
    return out


def _within(entry: Any, value: Any) -> bool:
    """The contract: a sampled value lies in its distribution, with the right Python type."""
    if isinstance(entry, Choice | Grid):
        return value in entry.values
    if isinstance(entry, IntRange):
        return (type(value) is int and entry.low <= value <= entry.high
                and (value - entry.low) % entry.step == 0)
    assert isinstance(entry, Uniform | LogUniform)
    if type(value) is not float or not entry.low <= value <= entry.high:
        return False
    if isinstance(entry, Uniform) and entry.q is not None:
        k = (value - entry.low) / entry.q
        return math.isclose(k, round(k), abs_tol=1e-6)
    return True


@pytest.mark.parametrize(("key", "raw"), ENTRIES.values(), ids=ENTRIES.keys())
def test_samples_lie_in_their_distribution(key: str, raw: Any) -> None:
    spec = _spec({key: raw})
    entry = spec.space[key]
    values = [c[key] for c in _samples(spec)]
    assert all(_within(entry, v) for v in values), values
    if entry.finite_values() is not None and len(entry.finite_values()) <= 12:
        assert {json.dumps(v) for v in values} == {json.dumps(v) for v in
                                                  entry.finite_values()}  # all reachable
    for v in values[:10]:
        TrialConfig(**spec.trial_defaults(), **{key: v})  # a real trial accepts it


@pytest.mark.parametrize(("key", "raw"), ENTRIES.values(), ids=ENTRIES.keys())
def test_a_start_point_round_trips_through_optuna(key: str, raw: Any) -> None:
    spec = _spec({key: raw})
    entry = spec.space[key]
    point = {key: (entry.finite_values() or [entry.high])[-1]}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(encode_point(spec, point))
    assert define_by_run(spec)(study.ask()) == point


@pytest.mark.parametrize(("key", "raw"), ENTRIES.values(), ids=ENTRIES.keys())
def test_a_trial_is_sampled_from_the_entry_optuna_distribution(key: str, raw: Any) -> None:
    spec = _spec({key: raw})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    define_by_run(spec)(study.ask())
    assert study.trials[0].distributions == {key: optuna_distribution(spec.space[key])}


def test_log_distribution_covers_its_decades() -> None:
    spec = _spec({"lr": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-1}})
    decades = {math.floor(math.log10(c["lr"])) for c in _samples(spec, n=300)}
    assert decades == {-5, -4, -3, -2}  # a uniform sampler would almost never go below 1e-3


def test_list_choices_are_json_for_optuna_and_lists_for_trials() -> None:
    spec = _spec({"channels": {"type": "choice", "values": [[16, 32], [32, 64, 128]]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    config = define_by_run(spec)(trial)
    assert isinstance(trial.params["channels"], str)
    assert json.loads(trial.params["channels"]) == config["channels"]
    assert isinstance(config["channels"], list)


def test_conditional_entry_only_when_its_condition_holds() -> None:
    spec = _spec({"momentum": {"type": "uniform", "low": 0.5, "high": 0.99,
                               "when": {"optimizer": "sgd"}},
                  "optimizer": ["sgd", "adam"]})
    configs = _samples(spec)
    assert all(("momentum" in c) == (c["optimizer"] == "sgd") for c in configs)
    assert {c["optimizer"] for c in configs} == {"sgd", "adam"}


def test_chained_and_any_of_conditions_listed_before_their_controller() -> None:
    spec = _spec({
        "gamma": {"type": "uniform", "low": 0.1, "high": 0.9,
                  "when": {"schedule": ["step", "exponential"]}},
        "step_size": {"type": "int", "low": 1, "high": 3, "when": {"schedule": "step"}},
        "pct_start": {"values": [0.2, 0.3], "when": {"step_size": 2}},
        "schedule": ["none", "step", "exponential"],
    })
    configs = _samples(spec, n=300)
    for c in configs:
        assert ("gamma" in c) == (c["schedule"] in ("step", "exponential"))
        assert ("step_size" in c) == (c["schedule"] == "step")
        assert ("pct_start" in c) == (c.get("step_size") == 2)
    assert any("pct_start" in c for c in configs)


def test_define_by_run_works_with_tpe() -> None:
    spec = parse_spec({"name": "t", "space": dict(ENTRIES.values()) | {
        "momentum": {"type": "uniform", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}}},
        "budget": {"trials": 5, "max_epochs": 2}})
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=3)
    for config in _samples(spec, n=12, sampler=sampler):
        assert all(_within(spec.space[k], v) for k, v in config.items())


# ------------------------------------------------------------------ grid

def test_grid_is_the_product_without_conditional_duplicates() -> None:
    space = {
        "optimizer": ["sgd", "adam", "adamw"],
        "momentum": {"values": [0.8, 0.9], "when": {"optimizer": "sgd"}},
        "lr": {"type": "grid", "values": [0.1, 0.01]},
        "fc_depth": {"type": "int", "low": 1, "high": 2},
    }
    spec = _spec(space, search={"algorithm": "grid"})
    configs = grid_configs(spec)
    # By hand: 3 * 2 * 2 * 2 = 24 in the full product; adam and adamw have no momentum, so
    # their 2 momentum values collapse: 24 - 2 * (2 * 2 * 2) / 2 = 16.
    assert len(configs) == 16 == space_size(spec)
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 16
    assert all(("momentum" in c) == (c["optimizer"] == "sgd") for c in configs)
    assert configs[0] == {"optimizer": "sgd", "momentum": 0.8, "lr": 0.1, "fc_depth": 1}
    assert configs[1] == {"optimizer": "sgd", "momentum": 0.8, "lr": 0.1, "fc_depth": 2}
    assert configs == grid_configs(spec)  # deterministic
    assert list(configs[0]) == list(space)  # YAML order


def test_grid_without_conditions_is_the_cartesian_product() -> None:
    space = {"batch_size": [32, 64, 128], "channels": [[16, 32], [32, 64]],
             "batchnorm": [True, False]}
    spec = _spec(space, search={"algorithm": "grid"})
    expected = [dict(zip(space, combo, strict=True)) for combo in
                itertools.product(*space.values())]
    assert grid_configs(spec) == expected
    assert space_size(spec) == 12


def test_space_size_is_none_for_continuous_spaces() -> None:
    assert space_size(_spec({"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}})) is None
    assert space_size(_spec({"lr": [0.1, 0.01], "momentum": {
        "values": [0.8, 0.9], "when": {"optimizer": "sgd"}}, "optimizer": ["sgd", "adam"]})) == 6


# ------------------------------------------------------------------ one factor at a time

def test_ofat_is_the_baseline_plus_one_change_at_a_time() -> None:
    baseline = {"activation": "relu", "optimizer": "sgd", "lr": 0.05, "batch_size": 64}
    space = {"activation": ["relu", "gelu", "tanh"], "optimizer": {"values": ["sgd", "adam"]},
             "lr": [0.01, 0.1], "batch_size": [32, 64, 128], "dropout": [0.0, 0.2]}
    spec = _spec(space, design="ofat", baseline=baseline)
    configs, labels = ofat_configs(spec), ofat_labels(spec)
    defaults = TrialConfig().to_dict()
    # baseline + (len - 1) per entry holding the baseline's value + len for the others (lr).
    reference = {k: baseline.get(k, defaults[k]) for k in space}
    expected = 1 + sum(len(v) - (reference[k] in v) for k, v in space.items())
    assert len(configs) == len(labels) == expected == 9 == space_size(spec)
    assert configs[0] == baseline and labels[0] == ("baseline", None)
    for config, (key, value) in zip(configs[1:], labels[1:], strict=True):
        changed = {k for k in config.keys() | baseline.keys()
                   if config.get(k, defaults[k]) != baseline.get(k, defaults[k])}
        assert changed == {key} and config[key] == value
    assert [k for k, _ in labels[1:]] == ["activation"] * 2 + ["optimizer"] + ["lr"] * 2 \
        + ["batch_size"] * 2 + ["dropout"]

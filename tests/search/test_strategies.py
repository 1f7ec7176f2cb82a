"""Search strategies a user picks in the spec: Optuna's samplers, study-level stopping (target,
plateau, Optuna's Terminator) and warm starts from an earlier sweep. Fast: no Ray cluster, real
Optuna."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpsearch.search.algorithms import build_sampler, build_searcher
from hpsearch.search.spec import SAMPLERS, TERMINATOR_MIN_TRIALS, parse_spec
from hpsearch.search.stopping import SweepStopper, TerminatorRule, study_stopping
from hpsearch.search.warmstart import incompatibility, warm_start
from hpsearch.trainables.errors import UserError

GOLDEN = Path(__file__).parent / "golden" / "sweeps"
SPEC: dict[str, Any] = {
    "name": "s",
    "fixed": {"dataset": "mnist", "data_dir": "/nowhere"},
    "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
              "optimizer": ["adam", "sgd"],
              "momentum": {"type": "uniform", "low": 0.5, "high": 0.99,
                           "when": {"optimizer": "sgd"}},
              "channels": [[4, 8], [8, 16]]},
    "search": {"algorithm": "optuna", "seed": 3},
    "budget": {"trials": 12, "max_epochs": 2},
}


def _spec(**sections: Any) -> Any:
    data = copy.deepcopy(SPEC)
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_spec(data)


def _ask_tell(spec: Any, n: int, searcher: Any = None, start: int = 0) -> list[dict[str, Any]]:
    """Trials ``start``..``n-1`` through hpsearch's own searcher (a new one for ``spec``
    unless given), each scored by a known function of its lr."""
    searcher = searcher if searcher is not None else build_searcher(spec)
    configs = []
    for i in range(start, n):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        score = 1.0 - abs(__import__("math").log10(config["lr"]) + 2.5) / 3
        searcher.on_trial_complete(f"t{i}", {"val_top1": score, "status": "completed"})
    return configs


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_searches_a_conditional_space_reproducibly(sampler: str) -> None:
    spec = _spec(search={"sampler": sampler})
    samplers = optuna.samplers
    assert isinstance(build_sampler(spec), {
        "tpe": samplers.TPESampler, "gp": samplers.GPSampler, "cmaes": samplers.CmaEsSampler,
        "nsgaii": samplers.NSGAIISampler, "random": samplers.RandomSampler,
        "qmc": samplers.QMCSampler}[sampler])
    first, again = _ask_tell(spec, 8), _ask_tell(spec, 8)
    assert first == again  # same seed, same trials
    for config in first:
        assert 1e-4 <= config["lr"] <= 1e-1 and config["channels"] in ([4, 8], [8, 16])
        assert ("momentum" in config) == (config["optimizer"] == "sgd")  # conditions hold


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_goes_on_after_tune_saves_and_restores_it(sampler: str,
                                                                tmp_path: Path) -> None:
    """Tune pickles the searcher at the start (``tuner.pkl``) and saves it at each snapshot; a
    resumed sweep's searcher proposes what the uninterrupted one would have."""
    from ray import cloudpickle

    spec = _spec(search={"sampler": sampler})
    whole = _ask_tell(spec, 8)
    searcher = build_searcher(spec)
    cloudpickle.dumps(searcher)  # as Tuner() does
    first = _ask_tell(spec, 4, searcher)
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = build_searcher(spec)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert first + _ask_tell(spec, 8, restored, start=4) == whole


def test_algorithm_random_is_the_random_sampler() -> None:
    assert isinstance(build_sampler(_spec(search={"algorithm": "random"})),
                      optuna.samplers.RandomSampler)
    assert isinstance(build_sampler(_spec()), optuna.samplers.TPESampler)  # the default


@pytest.mark.parametrize(("sections", "where", "says"), [
    ({"search": {"sampler": "bayes"}}, "search.sampler", "allowed: tpe, gp, cmaes"),
    ({"search": {"algorithm": "random", "sampler": "gp"}}, "search.sampler",
     "needs algorithm: optuna"),
    ({"objective": {"metrics": [{"name": "val_top1"}, {"name": "params"}]},
      "scheduler": {"name": "none"}, "search": {"sampler": "cmaes"}}, "search.sampler",
     "CMA-ES optimises one objective"),
    ({"budget": {"target": {"val_topp1": 0.9}}}, "budget.target.val_topp1",
     "did you mean 'val_top1'"),
    ({"budget": {"target": {}}}, "budget.target", "needs at least one metric"),
    ({"budget": {"plateau": 0}}, "budget.plateau", "greater than or equal to 1"),
    ({"search": {"algorithm": "grid", "warm_start": ["a"]}, "space": {"lr": [0.1, 0.01]}},
     "search.warm_start", "warm starts are for optuna and random"),
    ({"budget": {"terminator": 0}}, "budget.terminator", "greater than 0"),
    ({"budget": {"terminator": 0.01}, "search": {"algorithm": "grid"},
      "space": {"lr": [0.1, 0.01]}}, "budget.terminator",
     "needs search.algorithm optuna or random (got grid); use budget.plateau"),
    ({"budget": {"terminator": 0.01, "trials": 50}, "scheduler": {"name": "none"},
      "objective": {"metrics": [{"name": "val_top1"}, {"name": "params"}]}},
     "budget.terminator", "judges one objective"),
    ({"budget": {"terminator": 0.01, "trials": 20}}, "budget.terminator",
     "judges from 20 completed trials on, so it needs budget.trials above 20 (got 20)"),
])
def test_strategy_settings_are_checked_in_one_line(sections: dict[str, Any], where: str,
                                                   says: str) -> None:
    with pytest.raises(UserError) as err:
        _spec(**sections)
    assert f"{where}: " in str(err.value) and says in str(err.value)


# --------------------------------------------------------------------------- stopping

def test_the_target_ends_the_sweep_with_its_reason() -> None:
    stopper, callbacks = study_stopping(_spec(budget={"target": {"val_top1": 0.9,
                                                                  "val_loss": 0.5}}))
    assert callbacks and not stopper.stop_all()
    assert stopper("a", {"trial_id": "a", "epoch": 1, "val_top1": 0.95, "val_loss": 0.6}) is False
    assert not stopper.stop_all()  # val_loss is not there yet: every target must hold
    stopper("b", {"trial_id": "b", "epoch": 2, "val_top1": 0.90, "val_loss": 0.4})
    assert stopper.stop_all()
    assert stopper.reason == ("target reached by trial b at epoch 2: val_top1 0.9000 (target "
                              "0.9), val_loss 0.4000 (target 0.5)")


def test_a_plateau_counts_finished_trials_without_a_better_best() -> None:
    stopper = SweepStopper("val_loss", "min", plateau=2)
    for trial, losses in [("a", [0.9, 0.5]), ("b", [0.8, 0.6]), ("c", [0.4]), ("d", [0.45]),
                          ("e", [float("nan")]), ("f", [0.41])]:
        for epoch, loss in enumerate(losses, 1):
            stopper(trial, {"epoch": epoch, "val_loss": loss})
        stopper.trial_finished(trial)
        if trial == "d":  # c improved the best (0.4), d did not: 1 of 2
            assert not stopper.stop_all()
    # e has no score (failed): not counted; f is the second trial in a row without improvement
    assert stopper.stop_all()
    assert stopper.reason == ("plateau: the best val_loss (0.4000) has not improved in 2 "
                              "finished trials")


def _told(spec: Any, stopper: SweepStopper, values: list[float],
          status: str = "completed") -> int:
    """Trials through the stopper as Tune runs them (configs from hpsearch's searcher, real
    Optuna); how many were told before the sweep should end (all of them if it should not)."""
    searcher = build_searcher(spec)
    for i, value in enumerate(values):
        config = {**spec.trial_defaults(), **searcher.suggest(f"t{i}")}
        stopper(f"t{i}", {"epoch": 2, "status": status, "val_top1": value})
        stopper.trial_finished(f"t{i}", config)
        if stopper.stop_all():
            return i + 1
    return len(values)


def test_optunas_terminator_ends_the_sweep_when_the_best_cannot_gain_more_than_the_noise(
        ) -> None:
    # A conditional space (momentum only with sgd, list choices): the study takes it as is.
    spec = _spec(budget={"trials": 40, "terminator": 0.05}, search={"algorithm": "random"})
    stopper, callbacks = study_stopping(spec)
    assert isinstance(stopper.terminator, TerminatorRule) and callbacks
    # val_top1 between 0.90 and 0.92: nothing left to gain beyond a noise of 0.05 ...
    flat = [0.9 + 0.02 * ((i * 7) % 10) / 10 for i in range(40)]
    # ... but the Terminator judges only from its 20th completed trial on
    assert _told(spec, stopper, flat) == TERMINATOR_MIN_TRIALS
    assert stopper.reason.startswith(f"Optuna's Terminator: after {TERMINATOR_MIN_TRIALS} "
                                     f"completed trials the best val_top1 (0.9180) could gain "
                                     f"at most ")
    assert stopper.reason.endswith("(regret bound), less than its noise 0.05")
    bound = float(stopper.reason.split("at most ")[1].split()[0])
    assert 0 <= bound < 0.05


def test_the_terminator_goes_on_while_the_scores_spread_wider_than_the_noise() -> None:
    spec = _spec(budget={"trials": 40, "terminator": 0.001})
    stopper, _ = study_stopping(spec)
    spread = [0.5 + 0.4 * ((i * 7) % 10) / 10 for i in range(23)]  # 0.5 .. 0.86, no pattern
    assert _told(spec, stopper, spread) == 23 and not stopper.stop_all()


def test_the_terminator_is_told_only_trials_that_ran_every_epoch() -> None:
    spec = _spec(budget={"trials": 40, "terminator": 0.05})
    stopper, _ = study_stopping(spec)
    _told(spec, stopper, [0.9] * 25, status="stopped_early")  # ASHA's: lower fidelity
    assert len(stopper.terminator.study.trials) == 0 and not stopper.stop_all()


def test_no_target_and_no_plateau_adds_nothing() -> None:
    assert study_stopping(_spec()) == (None, [])


# --------------------------------------------------------------------------- warm starts

def _golden_spec(**changes: Any) -> Any:
    spec = json.loads((GOLDEN / "golden_search" / "hpsearch.json").read_text())["spec"]
    spec = {**spec, "name": "next", "storage": str(GOLDEN),
            "search": {"algorithm": "optuna", "seed": 1, "warm_start": ["golden_search"]}}
    for key, value in changes.items():
        spec[key] = value
    return parse_spec(spec)


def test_a_warm_start_gives_the_sampler_the_earlier_sweeps_trials() -> None:
    warm = warm_start(_golden_spec())
    states = sorted(t.state.name for t in warm.trials)
    # golden_search: 4 completed, 2 stopped early by ASHA, 4 rejected by the cost limit
    assert states == ["COMPLETE"] * 4 + ["PRUNED"] * 2
    assert warm.skipped == {"rejected": 4}
    assert all(t.params["channels"] in ("[4, 8]", "[8, 16]", "[64, 128]") for t in warm.trials)
    assert all(0 <= t.value <= 1 for t in warm.trials if t.state.name == "COMPLETE")
    assert warm.summary(["golden_search"]) == ("warm start from golden_search: 6 earlier trials "
                                               "given to the sampler (left out: 4 rejected)")
    # and the study really starts from them
    searcher = build_searcher(_golden_spec())
    assert len(searcher._ot_study.trials) == 6


def test_values_outside_a_narrowed_space_are_left_out() -> None:
    spec = _golden_spec()
    space = {**spec.to_dict()["space"], "lr": {"type": "loguniform", "low": 1e-3, "high": 0.3}}
    warm = warm_start(_golden_spec(space=space))
    assert warm.skipped.get("outside this space", 0) >= 1
    assert len(warm.trials) + warm.skipped["outside this space"] == 6


@pytest.mark.parametrize(("change", "says"), [
    ({"space": {"lr": {"type": "uniform", "low": 1e-4, "high": 0.3}}},
     "optimizer, dropout, channels searched only there"),
    ("lr-uniform", "lr is loguniform there, uniform here"),
    ({"objective": {"metric": "val_loss"}}, "the objective is val_top1 (max) there, val_loss "
                                            "(min) here"),
    ({"budget": {"trials": 4, "max_epochs": 3}},
     "trials ran 2 epochs there, 3 here, so their scores do not compare"),
])
def test_an_incompatible_earlier_sweep_is_one_line_naming_the_difference(
        change: Any, says: str) -> None:
    if change == "lr-uniform":
        space = {**_golden_spec().to_dict()["space"],
                 "lr": {"type": "uniform", "low": 1e-4, "high": 0.3}}
        change = {"space": space}
    with pytest.raises(UserError) as err:
        warm_start(_golden_spec(**change))
    assert str(err.value) == (f"search.warm_start: sweep 'golden_search' is not compatible "
                              f"with this one: {says}")


def test_an_unknown_earlier_sweep_lists_the_known_ones() -> None:
    spec = _golden_spec(search={"algorithm": "optuna", "warm_start": ["golden_serch"]})
    with pytest.raises(UserError) as err:
        warm_start(spec)
    assert "no sweep 'golden_serch'" in str(err.value)
    assert "did you mean 'golden_search'" in str(err.value)
    assert "sweeps there: golden_ofat, golden_search" in str(err.value)


def test_incompatibility_is_none_for_the_same_space() -> None:
    spec = _golden_spec()
    assert incompatibility(spec, spec) is None

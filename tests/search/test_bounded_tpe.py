"""TPE bounded to a window of trials past ``TPE_WINDOW`` (``search.algorithms.BoundedTPE``):
the same suggestions as Optuna's TPE below the window, and above it those of Optuna's TPE on
the best and newest trials."""

from __future__ import annotations

import random
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpsearch.search.algorithms import BoundedTPE, tpe_window

_MODELLED = (TrialState.COMPLETE, TrialState.PRUNED)

SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True),
         "optimizer": CategoricalDistribution(["sgd", "adamw"])}


def _finished(n: int, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    rng = random.Random(seed)
    trials = []
    for _ in range(n):
        params = {"lr": 10 ** rng.uniform(-4, -1), "optimizer": rng.choice(["sgd", "adamw"])}
        if rng.random() < 0.2:  # some stopped early by the scheduler
            trials.append(optuna.trial.create_trial(
                params=params, distributions=SPACE, state=optuna.trial.TrialState.PRUNED,
                intermediate_values={1: rng.random()}))
        else:
            trials.append(optuna.trial.create_trial(params=params, distributions=SPACE,
                                                    value=rng.random()))
    return trials


def _study(sampler: optuna.samplers.BaseSampler,
           trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.add_trials(trials)
    return study


def _asks(study: optuna.Study, n: int = 3) -> list[dict]:
    return [study.ask(SPACE).params for _ in range(n)]


def test_below_the_window_it_is_optunas_tpe() -> None:
    trials = _finished(80)
    assert _asks(_study(BoundedTPE(seed=3, window=100), trials)) == \
        _asks(_study(optuna.samplers.TPESampler(seed=3), trials))


def test_the_window_holds_the_best_and_the_newest_in_trial_order() -> None:
    study = _study(optuna.samplers.RandomSampler(), _finished(300))
    trials = study.get_trials()
    window = tpe_window(trials, study.direction, 100)
    assert len(window) == 100
    numbers = [t.number for t in window]
    assert numbers == sorted(numbers)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = sorted(complete, key=lambda t: t.value, reverse=True)[:10]  # TPE's good group of 100
    assert {t.number for t in best} <= set(numbers)
    assert set(range(300 - 80, 300)) <= set(numbers)  # the newest fill the rest


def test_above_the_window_it_is_optunas_tpe_on_the_window() -> None:
    trials = _finished(300)
    bounded = _study(BoundedTPE(seed=3, window=100), trials)
    window = tpe_window(bounded.get_trials(), bounded.direction, 100)
    assert _asks(bounded, 1) == _asks(_study(optuna.samplers.TPESampler(seed=3), window), 1)


def test_the_window_kept_up_as_trials_finish_is_the_window_of_all_of_them() -> None:
    """BoundedTPE looks at each finished trial once, as it is told (not at every trial per
    suggestion); what it models is still ``tpe_window`` of the whole study, with the running
    trials TPE's constant liar counts. Trials that reach the study without a tell (added, as
    a warm start adds them) are found by one scan."""
    import pickle

    sampler = BoundedTPE(seed=3, window=100)
    study = _study(sampler, _finished(150, seed=1))
    rng = random.Random(5)
    running = [study.ask(SPACE) for _ in range(3)]  # told later: a sweep has several at once
    for step in range(250):
        if step in (40, 170):
            study.add_trials(_finished(30, seed=step))
        trial = study.ask(SPACE)
        seen = [t.number for t in sampler._view(study, trial)._get_trials()]
        modelled = [t for t in study.get_trials() if t.state in _MODELLED]
        live = [t.number for t in study.get_trials() if t.state == TrialState.RUNNING]
        expected = tpe_window(modelled, study.direction, 100)
        assert seen == sorted([*(t.number for t in expected), *live]), step
        running.append(trial)
        told, roll = running.pop(rng.randrange(len(running))), rng.random()
        if roll < 0.15:
            study.tell(told, state=TrialState.PRUNED)
        elif roll < 0.2:
            study.tell(told, state=TrialState.FAIL)
        else:
            study.tell(told, rng.random())
    assert pickle.loads(pickle.dumps(sampler))._good == []  # no trials in a searcher checkpoint


class _CountingStorage(optuna.storages.InMemoryStorage):
    """Optuna's in-memory storage, counting the calls that list every trial of a study."""

    listed: list[tuple | None] = []

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> Any:
        self.listed.append(None if states is None else tuple(states))
        return super().get_all_trials(study_id, deepcopy, states)


def test_a_suggestion_past_the_window_does_not_list_every_trial() -> None:
    """Per suggestion, the only scan of the study is Optuna's own look for enqueued trials:
    the time per suggestion stays bounded as the sweep grows."""
    storage = _CountingStorage()
    study = optuna.create_study(direction="maximize", sampler=BoundedTPE(seed=0, window=100),
                                storage=storage)
    study.add_trials(_finished(300))
    for _ in range(3):
        study.tell(study.ask(SPACE), 0.5)
    storage.listed.clear()
    for _ in range(5):
        study.tell(study.ask(SPACE), 0.5)
    assert storage.listed == [(TrialState.WAITING,)] * 5


def test_a_bounded_tpe_sweep_searches_as_well_as_optunas_tpe() -> None:
    """On a toy objective (optimum at lr = 1e-2), the last 100 of 400 suggestions with a
    window of 250 land about as close to the optimum as Optuna's TPE's (random search: 0.83
    away on average)."""
    import math

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return -abs(math.log10(lr) + 2)

    def late_mean(sampler: optuna.samplers.BaseSampler) -> float:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=400)
        return sum(t.value for t in study.trials[-100:]) / 100

    bounded, plain = late_mean(BoundedTPE(seed=0, window=250)), late_mean(
        optuna.samplers.TPESampler(seed=0))
    assert bounded > -0.3
    assert bounded > plain - 0.1

"""What to try next (searchers) and when to stop (schedulers): registries over Ray Tune's own.

* ``optuna``: Ray's ``OptunaSearch`` with the sampler ``search.sampler`` names (TPE by
  default; GP, CMA-ES, NSGA-II, random, QMC): seedable, start points, warm starts from earlier
  sweeps (:mod:`search.warmstart`), multi-objective, and told the truth about early stopping:
  a trial ASHA stopped is ``PRUNED`` in Optuna (with its per-epoch intermediate values), not
  ``COMPLETE`` with a low-epoch score; a crashed one is ``FAIL``; one rejected by a cost
  constraint is infeasible (Optuna's ``Trial.set_constraint``).
* ``random``: the same, with Optuna's ``RandomSampler`` (conditional spaces work alike).
* ``grid`` (and ``design: ofat``): a fixed list of configs handed out in order.
* ``asha`` / ``hyperband`` / ``none``: Tune's ``ASHAScheduler`` or ``HyperBandScheduler`` on
  the ``epoch`` attribute / FIFO. With the Optuna searcher, ``hyperband`` is the BOHB-style
  model-based multi-fidelity search (TPE learns from every rung: pruned trials carry their
  per-epoch values).
* ``pbt``: Tune's ``PopulationBasedTraining``, synchronous, with its first population from
  :mod:`search.population` in place of a searcher (Ray's PBT takes none).
"""

from __future__ import annotations

import heapq
import itertools
import pickle
import threading
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    TrialScheduler,
)
from ray.tune.search import SearchAlgorithm, Searcher
from ray.tune.search.optuna import OptunaSearch

from hpsearch.search.population import (
    PopulationGenerator,
    build_pbt,
    first_population,
    give_folder,
)
from hpsearch.search.space import define_by_run, encode_point, grid_configs, ofat_configs
from hpsearch.search.spec import SweepSpec
from hpsearch.search.warmstart import warm_start
from hpsearch.trainables.registry import Registry

__all__ = ["SCHEDULERS", "SEARCHERS", "TPE_WINDOW", "BoundedTPE", "ListSearcher",
           "PicklableNSGAII", "ResumableHyperBand", "TruthfulOptunaSearch", "build_sampler",
           "build_scheduler", "build_searcher", "planned_trials", "tpe_window"]

SEARCHERS: Registry = Registry("search algorithm", ("optuna", "grid", "random"),
                               "hpsearch.search.algorithms")
SCHEDULERS: Registry = Registry("scheduler", ("asha", "hyperband", "pbt", "none"),
                                "hpsearch.search.algorithms")

class TruthfulOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna how each trial really ended (see module docstring).

    Args:
        constrained: The sweep has cost limits: every finished trial carries Optuna's
            constraint value (``> 0``: rejected as infeasible), which its samplers respect.
        **kwargs: Passed to ``OptunaSearch``.
    """

    def __init__(self, *, constrained: bool = False, warm: list[Any] | None = None,
                 **kwargs: Any) -> None:
        self._warm = list(warm or [])  # before super(): it sets the study up
        super().__init__(**kwargs)
        self.constrained = constrained

    def _setup_study(self, mode: str | list[str]) -> None:
        super()._setup_study(mode)
        if self._warm:  # earlier sweeps' trials (search.warmstart), once, before any suggest
            self._ot_study.add_trials(self._warm)
            self._warm = []

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        status = (result or {}).get("status")
        ot_trial = self._ot_trials[trial_id]
        state, values = TrialState.COMPLETE, None
        if error or result is None:
            state = TrialState.FAIL
        elif status == "running":  # stopped by the scheduler before its last epoch
            state = TrialState.PRUNED
            # Tune withholds from the searcher the result on which the scheduler stopped the
            # trial; give Optuna that last intermediate value, which TPE ranks pruned trials by.
            if not isinstance(self.metric, list) and self.metric in result:
                step = int(result.get("training_iteration", result.get("epoch", 0)))
                ot_trial.report(float(result[self.metric]), step)
        else:
            if self.constrained:
                ot_trial.set_constraint("cost_limits", 1.0 if status == "rejected" else 0.0)
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [float(result[m]) for m in metrics]
        try:
            if state == TrialState.COMPLETE:
                self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
            else:
                self._ot_study.tell(ot_trial, state=state)
        except Exception as exc:  # noqa: BLE001 - a NaN score must not stop the sweep
            optuna.logging.get_logger(__name__).warning("optuna tell failed: %s", exc)
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        self._completed_trials.add(trial_id)
        # The study holds the told trial; Ray's OptunaSearch would keep its live handle (and a
        # cached copy of it) for the whole sweep, in memory and in every searcher snapshot.
        del self._ot_trials[trial_id]


class ListSearcher(Searcher):
    """Hands out a fixed list of configs in order (grid search, one-factor-at-a-time)."""

    def __init__(self, configs: list[dict[str, Any]], metric: str | None = None,
                 mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self._configs = configs
        self._next = 0
        self._given: dict[str, int] = {}

    def set_search_properties(self, metric: str | None, mode: str | None,
                              config: dict[str, Any], **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id in self._given:
            return dict(self._configs[self._given[trial_id]])
        if self._next >= len(self._configs):
            return Searcher.FINISHED
        self._given[trial_id] = self._next
        self._next += 1
        return dict(self._configs[self._given[trial_id]])

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        return None

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"configs": self._configs, "next": self._next, "given": self._given}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        self._configs, self._next, self._given = saved["configs"], saved["next"], saved["given"]


def _objective(spec: SweepSpec) -> tuple[str | list[str], str | list[str]]:
    if spec.is_multi_objective:
        return list(spec.metrics), list(spec.modes)
    return spec.metric, spec.mode


def _optuna_searcher(spec: SweepSpec, sampler: optuna.samplers.BaseSampler) -> Searcher:
    metric, mode = _objective(spec)
    points = [encode_point(spec, p) for p in (spec.search.start_points or [])]
    warm = warm_start(spec).trials if spec.search.warm_start else None
    return TruthfulOptunaSearch(space=define_by_run(spec), metric=metric, mode=mode,
                                sampler=sampler, points_to_evaluate=points or None,
                                constrained=bool(spec.max_params or spec.max_macs), warm=warm)


class PicklableNSGAII(optuna.samplers.NSGAIISampler):
    """Optuna 5's NSGA-II sampler holds a thread lock, which does not pickle, and Tune pickles
    the searcher with its sampler (``tuner.pkl`` at the start, the searcher's snapshots after):
    every NSGA-II sweep died in ``Tuner()``. The lock is left out of the pickle and made anew
    when the sampler is unpickled."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


# Finished trials TPE models at most (see BoundedTPE): past about 1,000, Optuna's TPE spends
# more on each suggestion than a small trial takes to run (157 ms at 5,000 trials of six
# settings, 35 ms at 1,000, on the 2-core machine of the README's figures).
TPE_WINDOW = 1000


class BoundedTPE(optuna.samplers.TPESampler):
    """Optuna's TPE, modelling at most ``window`` finished trials once a sweep has more.

    TPE splits the finished trials into a "good" group, the best ``default_gamma(n)`` (at most
    25), and the rest, and models each; every suggestion costs time in proportion to the
    trials. The window (:func:`tpe_window`) holds the best 25, so the good group is the same
    as with every trial, and the newest of the rest (TPE's default weights count the oldest
    least already). On a toy objective, 400 trials with a window of 250 ended as close to the
    optimum as Optuna's TPE (``tests/search/test_bounded_tpe.py``). A window under 250 has a
    smaller good group than the whole sweep would, and searches worse. Below the window, and
    for multi-objective studies, it is Optuna's TPE unchanged.

    The window is kept up as trials are told (:meth:`after_trial`): a suggestion looks at the
    trials told since the last one, not at every trial of the study (Optuna's TPE counts them
    before each sampling, and its constant liar lists the running ones). Only Optuna's own
    ``ask`` still scans the study, for enqueued trials.
    """

    def __init__(self, *, window: int = TPE_WINDOW, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window = window
        self._reset()

    def _reset(self, study: Any = None) -> None:
        # The window, kept up as trials finish: every finished trial is looked at once (one
        # scan of the study when the cache is cold), not every trial per suggestion.
        self._of = None if study is None else (id(study._storage), study._study_id)
        self._good: list[Any] = []  # the best complete trials so far, best first
        self._newest: list[tuple[int, Any]] = []  # heap of the newest finished (number, trial)
        self._count = 0  # finished trials (complete or pruned) looked at
        self._told: list[int] = []  # ids of trials told since the last suggestion
        self._running: set[int] = set()  # ids of the trials asked and not told
        self._asked = -1  # number of the trial suggested last
        self._seen: tuple[Any, Any] | None = None  # (study and trial number, its view)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # a searcher checkpoint needs no cache: rebuilt on use
        state.update(_of=None, _good=[], _newest=[], _count=0, _told=[], _running=set(),
                     _asked=-1, _seen=None)
        return state

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState,
                    values: Any) -> None:
        super().after_trial(study, trial, state, values)
        if self._of == (id(study._storage), study._study_id):
            self._told.append(trial._trial_id)  # looked up once told (its state set)

    # Every look at the study goes through the window: Optuna's TPE counts the finished trials
    # (a scan of every trial) before it samples, for the search space and for each setting.
    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return super().infer_relative_search_space(self._view(study, trial), trial)

    def _sample_relative(self, study: optuna.Study, trial: Any,
                         search_space: dict[str, Any]) -> dict[str, Any]:
        return super()._sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str,
                           param_distribution: Any) -> Any:
        return super().sample_independent(self._view(study, trial), trial, param_name,
                                          param_distribution)

    def _sample(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> Any:
        return super()._sample(self._view(study, trial), trial, search_space)

    def _view(self, study: Any, trial: Any) -> Any:
        """:meth:`_modelled`, once per trial: Optuna asks for the search space, then samples
        (once, or once per setting)."""
        study = study._study if isinstance(study, _StudyWindow) else study
        key = (id(study._storage), study._study_id, trial.number)
        if self._seen is None or self._seen[0] != key:
            self._seen = (key, self._modelled(study, trial.number, trial._trial_id))
        return self._seen[1]

    def _modelled(self, study: optuna.Study, number: int, trial_id: int) -> Any:
        """The study itself below the window, else the study as seen through the window (with
        the running trials, which TPE's constant liar counts), for the trial ``number``.

        Trials told since the last suggestion (:meth:`after_trial`) join the window; when the
        cache is cold (a new or restored sampler, another study) or trials reached the study
        otherwise (``add_trials``: the asked trial's number jumped), every finished trial is
        looked at once."""
        if study._is_multi_objective():
            return study
        if self._of != (id(study._storage), study._study_id) or number != self._asked + 1:
            self._reset(study)
            trials = study._get_trials(deepcopy=False, use_cache=False)
            self._absorb(study, [t for t in trials if t.state in _MODELLED])
            self._running = {t._trial_id for t in trials if t.state == TrialState.RUNNING}
        else:
            self._running.add(trial_id)
            told, self._told = self._told, []
            trials = [study._storage.get_trial(i) for i in told]
            self._told = [t._trial_id for t in trials if not t.state.is_finished()]
            self._running.difference_update(t._trial_id for t in trials if t.state.is_finished())
            self._absorb(study, [t for t in trials if t.state in _MODELLED])
        self._asked = number
        if self._count <= self.window:
            return study
        window = _with_newest(self._good, [t for _, t in sorted(self._newest)], self.window)
        if self._constant_liar:
            running = (study._storage.get_trial(i) for i in self._running)
            window = sorted([*window, *(t for t in running if t.state == TrialState.RUNNING)],
                            key=lambda t: t.number)
        return _StudyWindow(study, window)

    def _absorb(self, study: optuna.Study, finished: list[Any]) -> None:
        for t in finished:
            heapq.heappush(self._newest, (t.number, t))
            if len(self._newest) > self.window:
                heapq.heappop(self._newest)
        self._count += len(finished)
        self._good = _best_complete([*self._good, *finished], study.direction,
                                    _good_size(self.window))


_MODELLED = (TrialState.COMPLETE, TrialState.PRUNED)


def tpe_window(trials: list[Any], direction: optuna.study.StudyDirection,
               size: int) -> list[Any]:
    """The ``size`` trials :class:`BoundedTPE` models, in trial order: the best complete ones
    (as many as TPE's good group of ``size`` trials: 25, as of every trial, from 250) and the
    newest of the others."""
    return _with_newest(_best_complete(trials, direction, _good_size(size)), trials, size)


def _good_size(size: int) -> int:
    from optuna.samplers._tpe.sampler import default_gamma

    return default_gamma(size)


def _best_complete(trials: list[Any], direction: optuna.study.StudyDirection,
                   count: int) -> list[Any]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda t: t.value, reverse=direction == optuna.study.StudyDirection.MAXIMIZE)
    return complete[:count]


def _with_newest(best: list[Any], trials: list[Any], size: int) -> list[Any]:
    """``best`` and the newest others of ``trials`` (in trial order), ``size`` in all."""
    chosen = {t.number for t in best}
    newest = itertools.islice((t for t in reversed(trials) if t.number not in chosen),
                              max(0, size - len(best)))
    return sorted([*best, *newest], key=lambda t: t.number)


class _StudyWindow:
    """A study whose finished trials are ``trials``, for TPE's model; the rest is the study's."""

    def __init__(self, study: optuna.Study, trials: list[Any]) -> None:
        self._study, self._trials = study, trials

    def _get_trials(self, deepcopy: bool = False, states: Any = None,
                    use_cache: bool = False) -> list[Any]:
        return [t for t in self._trials if states is None or t.state in states]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def build_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``search.sampler`` names (TPE by default), seeded by ``search.seed``.

    Cost limits reach every sampler that reads Optuna's trial constraints (TPE, GP, NSGA-II)
    through ``Trial.set_constraint`` (see :class:`TruthfulOptunaSearch`); CMA-ES, QMC and
    random sampling ignore them, so rejected configs are only ranked last there.
    """
    seed, samplers = spec.search.seed, optuna.samplers
    name = spec.search.sampler_name
    if name == "tpe":
        return BoundedTPE(seed=seed)
    if name == "gp":  # Gaussian-process BO: for small budgets; conditional keys go random
        return samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":  # continuous keys by CMA-ES, the rest (choices, conditions) random
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsgaii":  # population = a fifth of the budget, 4..50
        size = min(50, max(4, (spec.budget.trials or 20) // 5))
        return PicklableNSGAII(seed=seed, population_size=size)
    if name == "qmc":  # scrambled Sobol points: an even cover of the space
        with warnings.catch_warnings():  # "experimental" since Optuna 3.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return samplers.QMCSampler(seed=seed, scramble=True,
                                       warn_independent_sampling=False)
    return samplers.RandomSampler(seed=seed)


SEARCHERS.register("optuna")(lambda spec: _optuna_searcher(spec, build_sampler(spec)))
SEARCHERS.register("random")(lambda spec: _optuna_searcher(spec, build_sampler(spec)))
SEARCHERS.register("grid")(lambda spec: ListSearcher(
    ofat_configs(spec) if spec.design == "ofat" else grid_configs(spec)))

# ASHA's rungs follow from these three settings: search.spec.Scheduler.rungs computes them (the
# report's fair-fidelity columns), tested against this scheduler's own milestones.
SCHEDULERS.register("asha")(lambda spec: ASHAScheduler(
    time_attr="epoch", metric=spec.metric, mode=spec.mode, max_t=spec.budget.max_epochs,
    grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor))
class ResumableHyperBand(HyperBandScheduler):
    """Ray's synchronous HyperBand, able to go on in a resumed sweep.

    Tune does not save its scheduler: a resumed sweep starts from the empty one pickled at the
    start and hands it every restored trial through ``on_trial_add``, finished ones too. Ray's
    HyperBand places each in a bracket as a live trial at epoch 0. A finished trial never
    reports again, so its bracket never reaches its milestone and the trials paused there wait
    for ever (seen: a resumed TPE+HyperBand sweep idle, two trials PAUSED, none running). Here a
    finished trial (terminated, or errored and not retried) takes no place in a bracket, and a
    trial under way enters its bracket at the epoch it reached. The brackets of a resumed sweep
    are so rebuilt from the trials still under way, in the order Tune restores them.

    And a finished bracket's paused trials are stopped once nothing else can run. Ray's
    HyperBand stops them when the bracket's last trial *reports* its last milestone; when that
    trial leaves instead (completes, errors, or is stopped on the way), Ray skips the finished
    bracket and its paused trials wait for ever: no trial running, none pending, the driver
    spinning (seen: a TPE+HyperBand sweep of 60 trials idle at 58 done, two trials PAUSED at
    their last epoch).
    """

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if trial.status in (Trial.TERMINATED, Trial.ERROR):
            return
        super().on_trial_add(tune_controller, trial)
        give_folder(trial)
        last = trial.last_result or {}
        if last.get(self._time_attr) and self._metric in last:
            bracket, _ = self._trial_info[trial]
            bracket.update_trial_stats(trial, last)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        if trial in self._trial_info:  # a restored finished trial has no bracket
            super().on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trial = super().choose_trial_to_run(tune_controller)
        if trial is None:  # asked at every step of Tune's loop, outside any other callback
            for band in self._hyperbands:
                for bracket in band:
                    if bracket is not None and bracket.finished():
                        bracket.cleanup_full(tune_controller)  # stops its PAUSED trials
        return trial


SCHEDULERS.register("hyperband")(lambda spec: ResumableHyperBand(
    time_attr="epoch", metric=spec.metric, mode=spec.mode, max_t=spec.budget.max_epochs,
    reduction_factor=spec.scheduler.reduction_factor))
SCHEDULERS.register("none")(lambda spec: FIFOScheduler())
SCHEDULERS.register("pbt")(lambda spec: build_pbt(spec))


def build_searcher(spec: SweepSpec) -> Searcher | SearchAlgorithm:
    """The searcher named by ``spec.search.algorithm`` (``design: ofat`` lists its configs);
    under ``scheduler: pbt``, the generator of its first population."""
    if spec.scheduler.name == "pbt":
        return PopulationGenerator(first_population(spec, planned_trials(spec)))
    name = "grid" if spec.design == "ofat" else spec.search.algorithm
    return SEARCHERS.get(name, "search.algorithm")(spec)


def build_scheduler(spec: SweepSpec) -> TrialScheduler:
    """The trial scheduler named by ``spec.scheduler.name``."""
    return SCHEDULERS.get(spec.scheduler.name, "scheduler.name")(spec)


def planned_trials(spec: SweepSpec) -> int:
    """How many trials the sweep runs: the budget, or the size of a grid / OFAT design."""
    if spec.design == "ofat":
        return len(ofat_configs(spec))
    if spec.search.algorithm == "grid":
        size = len(grid_configs(spec))
        return min(spec.budget.trials, size) if spec.budget.trials else size
    return spec.budget.trials

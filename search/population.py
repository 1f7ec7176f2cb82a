"""Population-based training (``scheduler: pbt``) on Ray Tune: the first population, the
mutations, and Ray's ``PopulationBasedTraining`` run synchronously.

Ray's PBT takes no search algorithm (it refuses a ``Searcher``), so the first population is
drawn here, at random with Optuna's ``RandomSampler`` (``when`` conditions hold, start points
first) or from the grid, and handed out by :class:`PopulationGenerator`. Every
``perturbation_interval`` epochs the whole population meets (Ray's synchronous mode), the
bottom ``quantile_fraction`` continue from a copy of the top trials' checkpoints with the
settings :func:`mutations` names perturbed (x0.8 / x1.2, or the next value of a choice) or, with
``resample_probability``, drawn afresh; :class:`KeepInSpace` then keeps each within its space
entry. A trial's epochs therefore stay in order, and every copy is of the same epoch. The
trainable learns of a copy from the checkpoint it is given (:mod:`trainables.tune_adapter`).
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.search import BasicVariantGenerator

from hpsearch.search.space import define_by_run, grid_configs
from hpsearch.search.spec import Choice, Grid, IntRange, LogUniform, SweepSpec, Uniform
from hpsearch.search.spec.pbt import mutated_keys
from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.vocab import Status

__all__ = ["KeepInSpace", "PopulationGenerator", "SynchronousPBT", "build_pbt",
           "first_population", "mutations"]


class PopulationGenerator(BasicVariantGenerator):
    """Tune's basic variant generator handing out a fixed list of configs, one per trial.

    Ray's PBT accepts no ``Searcher``, and Tune's ``points_to_evaluate`` cannot carry
    list-valued settings (``channels``, ``augment``): each trial made from the fixed settings
    gets its member's settings here. The list and the count given out are part of the
    generator's state, so a resumed sweep goes on with the next member.
    """

    def __init__(self, members: list[dict[str, Any]]) -> None:
        super().__init__()
        self._members = [dict(m) for m in members]
        self._given = 0

    def next_trial(self) -> Any:
        trial = super().next_trial()
        if trial is not None and self._given < len(self._members):
            member = self._members[self._given]
            self._given += 1
            trial.set_config({**trial.config, **member})
            trial.evaluated_params = dict(member)
        return trial


def first_population(spec: SweepSpec, size: int) -> list[dict[str, Any]]:
    """``size`` members: the grid's first configs, or the start points then random draws
    (seeded by ``search.seed``). A mutated setting whose ``when`` condition fails holds
    TrialConfig's default, since Ray's PBT mutates a setting every config has."""
    if spec.search.algorithm == "grid":
        members = grid_configs(spec)[:size]
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.search.seed))
        draw = define_by_run(spec)
        members = [dict(p) for p in spec.search.start_points[:size]]
        members += [draw(study.ask()) for _ in range(size - len(members))]
    defaults = TrialConfig().to_dict()
    return [{**{k: defaults[k] for k in mutated_keys(spec.space)}, **m} for m in members]


def mutations(spec: SweepSpec) -> dict[str, Any]:
    """Ray's ``hyperparam_mutations`` of the settings PBT mutates: a continuous entry as its
    distribution, a choice as its list of values."""
    out: dict[str, Any] = {}
    for key in mutated_keys(spec.space):
        entry = spec.space[key]
        if isinstance(entry, Choice | Grid):
            out[key] = list(entry.values)
        elif isinstance(entry, LogUniform):
            out[key] = tune.loguniform(entry.low, entry.high)
        elif isinstance(entry, Uniform):
            out[key] = tune.quniform(entry.low, entry.high, entry.q) if entry.q \
                else tune.uniform(entry.low, entry.high)
        elif isinstance(entry, IntRange):
            out[key] = tune.lograndint(entry.low, entry.high + 1) if entry.log \
                else tune.qrandint(entry.low, entry.high, entry.step)
    return out


class KeepInSpace:
    """PBT's custom explore step, after Ray's: a perturbed value is clipped into its space
    entry (x1.2 may leave it), a setting whose ``when`` condition fails keeps TrialConfig's
    default (it is unused), and ``affine_scale_min <= affine_scale_max`` is kept."""

    def __init__(self, spec: SweepSpec) -> None:
        self.entries = {k: spec.space[k] for k in mutated_keys(spec.space)}
        defaults = TrialConfig().to_dict()
        self.defaults = {k: defaults[k] for k in self.entries}

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, entry in self.entries.items():
            if not entry.is_active(config):
                config[key] = self.defaults[key]
            elif isinstance(entry, Uniform | LogUniform | IntRange):
                value = min(max(config[key], entry.low), entry.high)
                config[key] = int(round(value)) if isinstance(entry, IntRange) else float(value)
        low, high = config.get("affine_scale_min"), config.get("affine_scale_max")
        if low is not None and high is not None and low > high:
            config["affine_scale_min"], config["affine_scale_max"] = high, low
        return config


def give_folder(trial: Any) -> None:
    """Give a trial its folder as Tune adds it, under a scheduler that keeps more trials live
    than the slots hold (HyperBand's and PBT's caps: paused trials hold no slot).

    Tune names and makes a trial's folder when it first requests an actor for it. With more
    trials waiting than it places at once, its loop may instead hand a waiting trial that never
    had an actor a cached one, and the reset then finds no folder: the trial fails and Tune's
    own error handling raises, which ends the sweep ("Should not access
    `trial_driver_staging_path` without setting `trial_dir_name`"; seen in a TPE+HyperBand run of
    bench/search_quality.py). A restored trial keeps the folder it has.
    """
    if not trial.relative_logdir:
        trial.init_local_path()


class SynchronousPBT(PopulationBasedTraining):
    """Ray's PBT in synchronous mode, with three changes.

    A trial's last result (``status`` other than running: completed, diverged, rejected) is
    no perturbation point: nothing would train on the copy. And a resumed sweep's scheduler,
    which Tune does not save, starts from where each restored trial stands (its epochs and
    last perturbation) instead of epoch 0, so the next meeting point is the population's next,
    not one it has passed (at which Ray's synchronous mode would wait forever).

    And a trial's checkpoint in Tune's record is kept at its last result's epoch. A driver
    killed after a trial saved an epoch's checkpoint but before Tune recorded it leaves the
    epoch in the trial's folder only; resumed, the trial reports that epoch again, without a
    checkpoint, so Tune's stays an epoch behind. PBT hands a paused trial's ``trial.checkpoint``
    to the trials that copy it: that older checkpoint would make each of them train an epoch
    again. The trial's own checkpoint of that epoch, from its folder, is made Tune's latest.

    Only as the trial reports, never when it is restored: a restored trial resumes from the
    checkpoint Tune's snapshot names, to which :func:`search.reconcile.rollback` cut its
    ``result.json``. The snapshot can hold a last result ahead of that checkpoint (Tune records
    a result before the save that registers its checkpoint); a trial moved on to that epoch
    would report only the epochs after it, and those in between would be in no result (seen:
    a ``result.json`` that began at epoch 2). It reports them again instead, and a restored
    trial is no one's donor before it has reported (PBT ranks only trials with a score).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(synch=True, **kwargs)
        self._restored_sync: float | None = None

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        give_folder(trial)
        done = int((trial.last_result or {}).get("epoch") or 0)
        if done <= 0:
            return
        state = self._trial_state[trial]
        interval = int(self._perturbation_interval)
        state.last_train_time = done
        state.last_perturbation_time = done - done % interval
        after = state.last_perturbation_time + interval
        self._restored_sync = after if self._restored_sync is None \
            else min(self._restored_sync, after)
        self._next_perturbation_sync = self._restored_sync

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if result.get("status", Status.RUNNING) != Status.RUNNING:
            return TrialScheduler.CONTINUE
        if result.get("checkpoint_dir_name", "") is None and result.get("epoch"):
            # an epoch trained before a driver died and reported again without a checkpoint
            # (trainables.tune_adapter): its checkpoint is in the trial's folder
            _catch_up_checkpoint(trial, int(result["epoch"]), result)
        return super().on_trial_result(tune_controller, trial, result)


def _catch_up_checkpoint(trial: Any, epoch: int, result: dict[str, Any]) -> None:
    """Make the trial's own checkpoint of ``epoch`` (its last result's) Tune's latest, when
    Tune's record stops at an earlier one and the trial's folder holds it."""
    from hpsearch.trainables.tune_adapter import TrialFolder  # torch: on the driver only here
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    if latest is not None and int((latest.metrics or {}).get("epoch") or 0) >= epoch:
        return
    folder = TrialFolder(trial.storage.storage_filesystem, trial.storage.trial_fs_path)
    for path in reversed(folder.checkpoints()):
        state = folder.state(path)
        if state is not None and state.get("trial_id") == trial.trial_id \
                and int(state["epoch"]) == epoch:
            manager._latest_checkpoint_result = _TrainingResult(
                checkpoint=Checkpoint(path, filesystem=folder.fs), metrics=dict(result))
            return


def build_pbt(spec: SweepSpec) -> SynchronousPBT:
    """The PBT scheduler of a spec (resolved ``scheduler`` settings)."""
    logging.getLogger("ray.tune.schedulers.pbt").setLevel(logging.WARNING)  # per-copy banners
    sched = spec.scheduler
    return SynchronousPBT(
        time_attr="epoch", metric=spec.metric, mode=spec.mode,
        perturbation_interval=sched.perturbation_interval, hyperparam_mutations=mutations(spec),
        quantile_fraction=sched.quantile_fraction,
        resample_probability=sched.resample_probability, custom_explore_fn=KeepInSpace(spec),
        log_config=False)

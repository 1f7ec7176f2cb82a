"""Population-based training without Ray's loop: the spec's rules, the first population, the
mutations kept in the space, the trial's copy of another's checkpoint, MLflow's lineage tags
and the report's lineage frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from hpsearch.search.spec import apply_overrides, parse_spec
from hpsearch.trainables.config import parse_trial_config
from hpsearch.trainables.errors import UserError

PBT: dict[str, Any] = {
    "name": "pbt",
    "fixed": {"dataset": "mnist", "model": "cnn"},
    "space": {
        "lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-1},
        "optimizer": ["sgd", "adam"],
        "momentum": {"type": "uniform", "low": 0.5, "high": 0.95, "when": {"optimizer": "sgd"}},
        "crop_padding": {"type": "int", "low": 0, "high": 4},
        "batch_size": [32, 64],
    },
    "search": {"seed": 7},
    "scheduler": {"name": "pbt"},
    "budget": {"trials": 6, "max_epochs": 4},
}


def _problems(changes: dict[str, Any]) -> list[str]:
    with pytest.raises(UserError) as err:
        parse_spec(apply_overrides(PBT, changes))
    return str(err.value).splitlines()


def test_a_pbt_spec_resolves_its_defaults() -> None:
    spec = parse_spec(PBT)
    assert spec.search.algorithm == "random"  # no search algorithm: a random population
    s = spec.scheduler
    assert (s.perturbation_interval, s.quantile_fraction, s.resample_probability) == \
        (1, 0.25, 0.25)
    assert s.rungs(4) == () and not s.stops_early and s.compares


@pytest.mark.parametrize(("changes", "path", "phrase"), [
    ({"search.algorithm": "optuna"}, "search.algorithm", "takes no search algorithm"),
    ({"search.sampler": "tpe"}, "search.sampler", "with no Optuna sampler"),
    ({"search.warm_start": ["old"]}, "search.warm_start", "starts from a population"),
    ({"fixed.schedule": "cosine"}, "fixed.schedule", "schedule must be none (got 'cosine')"),
    ({"space.schedule": ["none", "step"]}, "space.schedule", "cannot be searched"),
    ({"space": {"batch_size": [32, 64]}}, "scheduler.name", "space searches none of them"),
    ({"budget.trials": 1}, "budget.trials", "`trials >= 2` must hold"),
    ({"scheduler.perturbation_interval": 4}, "scheduler.perturbation_interval",
     "`perturbation_interval < budget.max_epochs` must hold"),
    ({"scheduler.perturbation_interval": 0}, "scheduler.perturbation_interval",
     "greater than or equal to 1"),
    ({"scheduler.quantile_fraction": 0.6}, "scheduler.quantile_fraction",
     "less than or equal to 0.5"),
    ({"scheduler.resample_probability": 1.5}, "scheduler.resample_probability",
     "less than or equal to 1"),
    ({"scheduler.grace_period": 1}, "scheduler.grace_period",
     "not used by scheduler pbt; only by asha"),
    ({"objective.metric": "test_top1"}, "scheduler.name", "PBT cannot compare trials on it"),
])
def test_a_bad_pbt_spec_says_what_must_hold_in_one_line(changes: dict[str, Any], path: str,
                                                        phrase: str) -> None:
    lines = _problems(changes)
    assert any(line.startswith(f"<spec>: {path}: ") and phrase in line for line in lines), lines


def test_pbt_settings_belong_to_pbt() -> None:
    lines = _problems({"scheduler": {"name": "asha", "perturbation_interval": 2}})
    assert "<spec>: scheduler.perturbation_interval: not used by scheduler asha; only by pbt" \
        in lines


def test_the_first_population_is_seeded_and_every_member_holds_every_mutated_setting() -> None:
    from hpsearch.search.population import first_population

    spec = parse_spec(PBT)
    members = first_population(spec, 6)
    assert members == first_population(spec, 6)  # search.seed
    assert len({json.dumps(m, sort_keys=True) for m in members}) == 6
    for m in members:
        assert {"lr", "momentum", "crop_padding"} <= set(m)
        if m["optimizer"] == "adam":  # inactive: TrialConfig's default, unused by Adam
            assert m["momentum"] == 0.9
        parse_trial_config({**spec.trial_defaults(), **m})
    grid = parse_spec(apply_overrides(PBT, {"search.algorithm": "grid", "space": {
        "lr": [0.1, 0.01], "optimizer": ["sgd", "adam"]}}))
    assert first_population(grid, 3) == [
        {"lr": 0.1, "optimizer": "sgd"}, {"lr": 0.1, "optimizer": "adam"},
        {"lr": 0.01, "optimizer": "sgd"}]


def test_mutations_are_the_mutable_settings_and_stay_in_their_space() -> None:
    from ray import tune

    from hpsearch.search.population import KeepInSpace, mutations

    spec = parse_spec(PBT)
    found = mutations(spec)
    assert list(found) == ["lr", "momentum", "crop_padding"]  # not batch_size nor optimizer
    assert isinstance(found["lr"], tune.search.sample.Float)
    keep = KeepInSpace(spec)
    config = {"lr": 0.12, "optimizer": "sgd", "momentum": 0.95 * 1.2, "crop_padding": 5}
    assert keep(config) == {"lr": 0.1, "optimizer": "sgd", "momentum": 0.95, "crop_padding": 4}
    assert keep({"lr": 1e-5, "optimizer": "adam", "momentum": 0.6, "crop_padding": 0}) == \
        {"lr": 1e-4, "optimizer": "adam", "momentum": 0.9, "crop_padding": 0}
    scaled = parse_spec(apply_overrides(PBT, {"space": {
        "affine_scale_min": {"type": "uniform", "low": 0.8, "high": 1.1},
        "affine_scale_max": {"type": "uniform", "low": 0.9, "high": 1.2}}}))
    assert KeepInSpace(scaled)({"affine_scale_min": 1.05, "affine_scale_max": 0.95}) == \
        {"affine_scale_min": 0.95, "affine_scale_max": 1.05}  # min <= max, as TrialConfig


def test_fit_trains_on_with_the_new_step_settings_of_a_copied_checkpoint() -> None:
    from hpsearch.trainables.fit import _take_step_settings

    model = torch.nn.Linear(2, 1)
    old = parse_trial_config({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9})
    new = parse_trial_config({"optimizer": "sgd", "lr": 0.12, "momentum": 0.72,
                              "weight_decay": 1e-4})
    saved = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.12, momentum=0.72, weight_decay=1e-4)
    optimizer.load_state_dict(saved)  # brings back the checkpoint's settings
    assert optimizer.param_groups[0]["lr"] == 0.1
    _take_step_settings(optimizer, old.to_dict(), new)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.12, 0.72, 1e-4)
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    _take_step_settings(adam, {**old.to_dict(), "optimizer": "adam"},
                        parse_trial_config({"optimizer": "adam", "lr": 0.2, "momentum": 0.5}))
    assert adam.param_groups[0]["lr"] == 0.2 and "momentum" not in adam.param_groups[0]


def _state(tmp: Path, name: str, **values: Any) -> Path:
    from hpsearch.trainables.tune_adapter import CHECKPOINT_FILE, COMPLETE_FILE

    folder = tmp / name
    folder.mkdir()
    torch.save({"history": [], **values}, folder / CHECKPOINT_FILE)
    (folder / COMPLETE_FILE).touch()
    return folder


def test_another_trials_checkpoint_wins_over_the_trials_own_newer_one(tmp_path: Path) -> None:
    from hpsearch.trainables.tune_adapter import _copied, _copy_note, latest_checkpoint_state

    _state(tmp_path, "checkpoint_000001", epoch=2, trial_id="b", lineage=[])
    donor = {"epoch": 2, "trial_id": "a", "lineage": [], "history": [],
             "config": {"lr": 0.1, "seed": 0}}
    state = latest_checkpoint_state(tmp_path, donor)
    assert state is donor  # Tune gave it the other trial's weights: PBT's copy
    own = {"epoch": 1, "trial_id": "b", "lineage": [], "history": []}
    assert latest_checkpoint_state(tmp_path, own)["epoch"] == 2  # its own folder is ahead
    lineage = _copied(state, "b", {"lr": 0.12, "seed": 0})
    assert lineage == [{"trial": "b", "from": "a", "epoch": 2, "changes": {"lr": [0.1, 0.12]}}]
    assert _copy_note(lineage, "b", 3) == {"copied_from": {
        "from": "a", "epoch": 2, "changes": {"lr": [0.1, 0.12]}}}
    assert _copy_note(lineage, "b", 4) == {} and _copied(own, "b", {}) == []


def test_mlflow_tags_keep_every_copy_once_and_the_settings_now() -> None:
    from hpsearch.search.tracking.lineage import (
        copy_tags,
        lineage_of,
        settings_now,
        settings_now_of,
    )

    first = copy_tags({}, {"from": "a", "epoch": 1, "changes": {"lr": [0.1, 0.12]}})
    assert first["hpsearch.copied_changes"] == "lr: 0.1 → 0.12"
    again = copy_tags(first, {"from": "a", "epoch": 1, "changes": {"lr": [0.1, 0.12]}})
    later = copy_tags(again, {"from": "c", "epoch": 3, "changes": {"momentum": [0.9, 0.72]}})
    assert [(e["epoch"], e["from"]) for e in lineage_of(later)] == [(1, "a"), (3, "c")]
    assert later["hpsearch.copied_from"] == "c" and later["hpsearch.copied_epoch"] == "3"
    logged = {"lr": "0.1", "optimizer": "sgd"}
    now = settings_now({"lr": "1e-05", "optimizer": "sgd"}, logged.get, False)
    assert now == {"hpsearch.settings_now": '{"lr": 1e-05}'}
    assert settings_now_of(now) == {"lr": 1e-05}  # a number, as the report reads it back
    assert settings_now(logged, logged.get, False) == {}
    assert settings_now(logged, logged.get, True) == {"hpsearch.settings_now": "{}"}


def test_the_report_lineage_frame_is_one_row_per_copy() -> None:
    from hpsearch.search.report.lineage import copies_in_results, lineage_frame

    rows = [{"epoch": 1}, {"epoch": 2, "copied_from": {"from": "a", "epoch": 1,
                                                       "changes": {"lr": [0.1, 0.08]}}}]
    frame = lineage_frame([("b", copies_in_results(rows)), ("a", [])])
    assert frame.to_dict("records") == [
        {"trial_id": "b", "epoch": 1, "copied_from": "a", "changes": "lr: 0.1 → 0.08"}]


def _no_training(config: dict[str, Any]) -> None:
    """A trainable Tune can restore a trial of (the trial is never run here)."""


def test_a_resumed_trial_starts_from_the_checkpoint_its_results_were_cut_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune records a result before the save that registers its checkpoint. A driver killed
    after a snapshot in between leaves a trial whose last result (epoch 2) is ahead of its
    checkpoint (epoch 1); ``rollback`` cuts ``result.json`` to epoch 1, so the restored trial
    must resume from epoch 1 and report epoch 2 again, not from its own epoch-2 checkpoint,
    or epoch 2 is in no result (seen: a ``result.json`` that began at epoch 2). Tune's own
    snapshot and trials, no Ray instance."""
    from ray import tune
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial
    from ray.tune.utils.serialization import TuneFunctionEncoder

    from hpsearch.search.population import SynchronousPBT
    from hpsearch.search.reconcile import read_record, rollback
    from hpsearch.trainables.tune_adapter import write_checkpoint

    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "1")  # else Tune asks a Ray instance

    def pbt() -> SynchronousPBT:
        return SynchronousPBT(time_attr="epoch", metric="val_top1", mode="max",
                              perturbation_interval=1, hyperparam_mutations={"lr": [0.1, 0.2]})

    tune.register_trainable("hpsearch_no_training", _no_training)
    killed = TuneController(scheduler=pbt(), storage=StorageContext(str(tmp_path), "pbt"))
    trial = Trial("hpsearch_no_training", config={"lr": 0.1}, trial_id="a",
                  storage=StorageContext(str(tmp_path), "pbt"),
                  placement_group_factory=tune.PlacementGroupFactory([{"CPU": 1}]))
    trial.create_placement_group_factory()
    trial.relative_logdir = trial.storage.trial_dir_name = "trial_a"
    trial_dir = tmp_path / "pbt" / "trial_a"
    rows = [{"epoch": e, "val_top1": e / 10} for e in (1, 2)]
    for number, epoch in enumerate((1, 2)):  # the trial's own checkpoints of both epochs
        (trial_dir / f"checkpoint_00000{number}").mkdir(parents=True)
        write_checkpoint(trial_dir / f"checkpoint_00000{number}",
                         {"epoch": epoch, "trial_id": "a", "lineage": [], "history": rows[:epoch]})
    (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trial.on_checkpoint(_TrainingResult(tune.Checkpoint(str(trial_dir / "checkpoint_000000")),
                                        rows[0]))
    trial.update_last_result(dict(rows[1]))  # epoch 2's save not processed yet
    trial.set_status(Trial.RUNNING)
    snapshot = tmp_path / "pbt" / "experiment_state-2026-01-01_00-00-00.json"
    snapshot.write_text(json.dumps({"trial_data": [trial.get_json_state()],
                                    "runner_data": killed.__getstate__(), "stats": {}},
                                   cls=TuneFunctionEncoder))

    rollback(tmp_path / "pbt", read_record(tmp_path / "pbt", trusted=True))
    results = (trial_dir / "result.json").read_text().splitlines()
    kept = [json.loads(line)["epoch"] for line in results]
    assert kept == [1]
    state, meta = json.loads(snapshot.read_text())["trial_data"][0]
    restored = Trial.from_json_state(state)  # as Tune's resume does, then hands it to PBT
    restored.restore_run_metadata(meta)
    resumed = TuneController(scheduler=pbt(), storage=StorageContext(str(tmp_path), "pbt"))
    resumed._scheduler_alg.on_trial_add(resumed, restored)
    assert Path(restored.checkpoint.path).name == "checkpoint_000000"
    assert restored.latest_checkpoint_result.metrics["epoch"] == kept[-1]

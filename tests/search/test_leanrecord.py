"""Tune's in-memory record of a trial, kept small (``search.leanrecord``): real Tune trials, no
Ray instance."""

from __future__ import annotations

from pathlib import Path

import pytest


def _trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    from ray import tune
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "1")  # else Tune asks a Ray instance
    tune.register_trainable("hpsearch_lean", lambda config: None)
    trial = Trial("hpsearch_lean", config={"lr": 0.1, "batch_size": 32}, trial_id="a",
                  storage=StorageContext(str(tmp_path), "lean"),
                  placement_group_factory=tune.PlacementGroupFactory([{"CPU": 1}]))
    trial.create_placement_group_factory()
    return trial


def _results() -> list[dict[str, float]]:
    return [{"epoch": e, "val_top1": 0.5 + e / 10, "val_loss": 1.0 / e, "training_iteration": e,
             "status": "running" if e < 3 else "completed", "done": e == 3,
             "hostname": "node-1", "config": {"lr": 0.1, "batch_size": 32}} for e in (1, 2, 3)]


def test_a_started_trial_keeps_min_max_mean_and_last_but_no_running_means(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.search.leanrecord import LeanTrialRecord

    fat, lean = _trial(tmp_path, monkeypatch), _trial(tmp_path, monkeypatch)
    LeanTrialRecord().on_trial_start(0, [lean], lean)
    for result in _results():
        fat.update_last_result(dict(result))
        lean.update_last_result(dict(result))
    stats = lean.metric_analysis["val_top1"]
    assert stats == pytest.approx({"max": 0.8, "min": 0.6, "avg": 0.7, "last": 0.8})
    assert set(fat.metric_analysis["val_top1"]) == {*stats, "last-5-avg", "last-10-avg"}
    assert not any(lean.metric_n_steps.values())  # no deque of past values
    # and what Tune keeps for the next experiment snapshot shrinks with it
    assert len(lean.get_json_state()[1]) < len(fat.get_json_state()[1]) / 2


def test_a_restored_trial_drops_the_running_means_its_snapshot_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.tune.experiment import Trial

    from hpsearch.search.leanrecord import LeanTrialRecord

    before = _trial(tmp_path, monkeypatch)
    for result in _results()[:2]:
        before.update_last_result(dict(result))
    state, meta = before.get_json_state()
    restored = Trial.from_json_state(state)
    restored.restore_run_metadata(meta)
    LeanTrialRecord().on_trial_start(0, [restored], restored)
    restored.update_last_result(dict(_results()[2]))
    assert restored.metric_analysis["val_top1"] == pytest.approx(
        {"max": 0.8, "min": 0.6, "avg": 0.7, "last": 0.8})
    assert not any(restored.metric_n_steps.values())


def test_a_finished_trial_keeps_the_objective_and_each_checkpoints_epoch_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.train._internal.checkpoint_manager import _CheckpointManager, _TrainingResult
    from ray.tune import Checkpoint, CheckpointConfig
    from ray.tune.experiment import Trial

    from hpsearch.search.leanrecord import LeanTrialRecord

    trial = _trial(tmp_path, monkeypatch)
    record = LeanTrialRecord(["val_top1"])
    record.on_trial_start(0, [trial], trial)
    trial.run_metadata.checkpoint_manager = _CheckpointManager(CheckpointConfig())
    for result in _results():
        trial.update_last_result(dict(result))
        folder = tmp_path / f"checkpoint_{result['epoch']:06d}"
        folder.mkdir()
        trial.on_checkpoint(_TrainingResult(Checkpoint.from_directory(str(folder)),
                                            metrics=dict(result)))
    before = len(trial.get_json_state()[1])
    record.on_trial_complete(0, [trial], trial)
    assert set(trial.metric_analysis) == {"val_top1"}
    assert trial.metric_analysis["val_top1"]["max"] == pytest.approx(0.8)
    manager = trial.run_metadata.checkpoint_manager
    assert [r.metrics for r in manager.best_checkpoint_results] == [
        {"epoch": e, "training_iteration": e, "val_top1": pytest.approx(0.5 + e / 10)}
        for e in (1, 2, 3)]
    assert trial.checkpoint.path.endswith("checkpoint_000003")
    # the last result keeps what the driver reads of a finished trial, its config is the trial's
    assert trial.last_result == {"epoch": 3, "training_iteration": 3, "val_top1": 0.8,
                                 "status": "completed", "done": True, "trial_id": "a",
                                 "config": {"lr": 0.1, "batch_size": 32}}
    assert trial.last_result["config"] is trial.config
    # the snapshot Tune writes next holds the lean record, and a resume reads it back
    state, meta = trial.get_json_state()
    assert len(meta) < before
    restored = Trial.from_json_state(state)
    restored.restore_run_metadata(meta)
    assert restored.run_metadata.checkpoint_manager.latest_checkpoint_result.metrics["epoch"] == 3

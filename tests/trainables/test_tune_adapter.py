"""The trial's own checkpoint housekeeping after a killed driver, on a real folder and Ray's own
storage context (no cluster): which checkpoints a resumed trial keeps, and what its next one is
named."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from ray.train._internal.storage import StorageContext
from ray.tune import Checkpoint

from hpsearch.trainables.tune_adapter import (
    CHECKPOINT_FILE,
    COMPLETE_FILE,
    TrialFolder,
    _number_after,
    _trial_folder,
    latest_checkpoint_state,
    prune,
    write_checkpoint,
)


def _storage(root: Path, index: int) -> StorageContext:
    """A trial's storage as Tune hands it to the trial: ``index`` is its count of the
    trial's checkpoints so far, from the experiment snapshot it restored."""
    return StorageContext(str(root), "sweep", trial_dir_name="trial_a",
                          current_checkpoint_index=index)


def _report_checkpoint(storage: StorageContext, epoch: int) -> str:
    """A checkpoint of ``epoch`` stored the way ``ray.tune.report`` stores it; its name."""
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(Path(tmp), {"epoch": epoch, "history": []})
        storage._update_checkpoint_index({})
        storage.persist_current_checkpoint(Checkpoint.from_directory(tmp))
    return storage.checkpoint_dir_name


def _epochs(folder: TrialFolder) -> dict[str, int | None]:
    return {Path(p).name: folder.epoch(p) for p in folder.checkpoints()}


def test_a_resumed_trial_numbers_its_checkpoints_after_those_it_has(tmp_path: Path) -> None:
    killed = _storage(tmp_path, -1)
    assert [_report_checkpoint(killed, e) for e in (1, 2)] == [
        "checkpoint_000000", "checkpoint_000001"]
    resumed = _storage(tmp_path, -1)  # Tune's snapshot was taken before either checkpoint
    folder = _trial_folder(resumed)
    _number_after(resumed, folder)
    assert _report_checkpoint(resumed, 3) == "checkpoint_000002"  # not 000000 again
    assert _epochs(folder) == {"checkpoint_000000": 1, "checkpoint_000001": 2,
                               "checkpoint_000002": 3}
    ahead = _storage(tmp_path, 5)  # Tune's own count, when it is ahead, stays
    _number_after(ahead, folder)
    assert _report_checkpoint(ahead, 4) == "checkpoint_000006"


def test_prune_keeps_the_newest_epochs_and_the_spare_and_drops_cut_off_ones(
        tmp_path: Path) -> None:
    storage = _storage(tmp_path, -1)
    for epoch in (1, 2, 3):  # a killed trial process that never pruned
        _report_checkpoint(storage, epoch)
    cut = tmp_path / "sweep" / "trial_a" / "checkpoint_000003"
    cut.mkdir()
    (cut / CHECKPOINT_FILE).write_bytes(b"half a state")  # no marker: cut off mid-write
    folder = _trial_folder(storage)
    assert _epochs(folder)["checkpoint_000003"] is None
    spare = folder.checkpoints()[0]  # the one Tune restored the trial from
    prune(folder, 2, spare)
    assert _epochs(folder) == {"checkpoint_000000": 1, "checkpoint_000001": 2,
                               "checkpoint_000002": 3}
    prune(folder, 2)
    assert _epochs(folder) == {"checkpoint_000001": 2, "checkpoint_000002": 3}
    assert latest_checkpoint_state(folder, None)["epoch"] == 3
    prune(folder, None)  # population-based training: every checkpoint stays
    assert len(folder.checkpoints()) == 2


def test_prune_goes_by_epoch_where_an_older_version_restarted_the_numbering(
        tmp_path: Path) -> None:
    trial = tmp_path / "trial_a"
    for name, epoch in (("checkpoint_000000", 3), ("checkpoint_000001", 2),
                        ("checkpoint_000002", 1)):
        (trial / name).mkdir(parents=True)
        torch.save({"epoch": epoch, "history": []}, trial / name / CHECKPOINT_FILE)
        (trial / name / COMPLETE_FILE).touch()  # an older version's marker: empty
    folder = TrialFolder.local(trial)
    prune(folder, 2)
    assert _epochs(folder) == {"checkpoint_000000": 3, "checkpoint_000001": 2}


def test_prune_keeps_one_checkpoint_per_epoch_where_a_resume_put_a_copy_back(
        tmp_path: Path) -> None:
    storage = _storage(tmp_path, -1)
    for epoch in (1, 2, 3):
        _report_checkpoint(storage, epoch)
    folder = _trial_folder(storage)
    recorded = folder.checkpoints()[0]  # Tune's snapshot names epoch 1's, since pruned
    folder.delete(recorded)
    folder.copy_checkpoint(folder.newest(), "checkpoint_000000", 1)  # what resume puts back
    assert _epochs(folder) == {"checkpoint_000000": 3, "checkpoint_000001": 2,
                               "checkpoint_000002": 3}
    prune(folder, 2, recorded)  # the resumed trial, restored from the copy
    assert _epochs(folder) == {"checkpoint_000000": 3, "checkpoint_000001": 2}
    prune(folder, 2)  # without a spare the newest folder of an epoch stands for it
    assert _epochs(folder) == {"checkpoint_000000": 3, "checkpoint_000001": 2}

"""Tune's record of a killed sweep, read and enforced on its folder (no Ray run needed: the
snapshot files are written in Tune's own format)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

from hpsearch.search.reconcile import read_record, rollback


class _Touch:
    """A pickle that creates a file when loaded: proof that code from the file ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def _snapshot(run_dir: Path, session: str, trials: dict[str, tuple[str, int | None]],
              payload: object = None) -> Path:
    entries = []
    for trial_id, (status, epoch) in trials.items():
        trial = {"trial_id": trial_id, "status": status, "relative_logdir": f"trial_{trial_id}",
                 "config": {"lr": 0.1}}
        meta = {"last_result": {"epoch": epoch} if epoch else {}}
        if payload is not None:
            meta["checkpoint_manager"] = {"_type": "CLOUDPICKLE_FALLBACK",
                                          "value": pickle.dumps(payload).hex()}
        entries.append([json.dumps(trial), json.dumps(meta)])
    path = run_dir / f"experiment_state-{session}.json"
    path.write_text(json.dumps({"trial_data": entries, "runner_data": {}}))
    (run_dir / f"search_gen_state-{session}.json").write_text("{}")
    return path


def _results(trial_dir: Path, epochs: list[int]) -> None:
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "result.json").write_text(
        "".join(json.dumps({"epoch": e, "val_top1": e / 10}) + "\n" for e in epochs))


def test_reading_a_snapshot_runs_no_code_from_it(tmp_path: Path) -> None:
    proof = tmp_path / "code-ran"
    _snapshot(tmp_path, "2026-01-01_00-00-00", {"a1": ("TERMINATED", 3), "b2": ("RUNNING", 1)},
              payload=_Touch(proof))
    record = read_record(tmp_path)
    assert record is not None and not proof.exists()
    assert {t.trial_id: (t.status, t.epoch, t.dirname) for t in record.trials.values()} == {
        "a1": ("TERMINATED", 3, "trial_a1"), "b2": ("RUNNING", 1, "trial_b2")}
    assert not record.over
    assert record.trials["b2"].checkpoint_epoch is None  # only a trusted read unpickles


def test_a_snapshot_cut_off_mid_write_gives_way_to_the_one_before(tmp_path: Path) -> None:
    _snapshot(tmp_path, "2026-01-01_00-00-00", {"a1": ("TERMINATED", 3)})
    torn = _snapshot(tmp_path, "2026-01-02_00-00-00", {"a1": ("TERMINATED", 3),
                                                        "b2": ("RUNNING", 1)})
    torn.write_text(torn.read_text()[:40])
    assert read_record(tmp_path).file == "experiment_state-2026-01-01_00-00-00.json"
    assert torn.exists(), "a plain read removes nothing"
    assert read_record(tmp_path, drop_torn=True).file == \
        "experiment_state-2026-01-01_00-00-00.json"
    assert not torn.exists() and not (tmp_path / "search_gen_state-2026-01-02_00-00-00.json"
                                      ).exists()
    assert (tmp_path / "experiment_state-2026-01-01_00-00-00.json").exists()


def test_only_a_torn_first_snapshot_means_no_record(tmp_path: Path) -> None:
    torn = _snapshot(tmp_path, "2026-01-01_00-00-00", {"a1": ("RUNNING", 1)})
    torn.write_text(torn.read_text()[:-5])
    assert read_record(tmp_path, drop_torn=True) is None


def test_rollback_keeps_exactly_what_tune_recorded(tmp_path: Path) -> None:
    _snapshot(tmp_path, "2026-01-01_00-00-00", {"done": ("TERMINATED", 3),
                                                 "stop": ("TERMINATED", 1)})
    _results(tmp_path / "trial_done", [1, 2, 3])
    _results(tmp_path / "trial_stop", [1, 2, 3])  # epochs trained after the snapshot
    _results(tmp_path / "trial_new", [1])  # a trial Tune never recorded
    counts = rollback(tmp_path, read_record(tmp_path))
    assert counts == {"orphans": 1, "rows": 1, "checkpoints": 0}
    assert sorted(p.name for p in tmp_path.glob("trial_*")) == ["trial_done", "trial_stop"]
    epochs = [json.loads(line)["epoch"]
              for line in (tmp_path / "trial_stop" / "result.json").read_text().splitlines()]
    assert epochs == [1]
    assert rollback(tmp_path, read_record(tmp_path)) == {"orphans": 0, "rows": 0,
                                                         "checkpoints": 0}


def test_a_trusted_read_learns_the_epoch_tune_resumes_from(tmp_path: Path) -> None:
    manager = SimpleNamespace(latest_checkpoint_result=SimpleNamespace(metrics={"epoch": 2}))
    _snapshot(tmp_path, "2026-01-01_00-00-00", {"b2": ("RUNNING", 3)}, payload=manager)
    trial = read_record(tmp_path, trusted=True).trials["b2"]
    assert (trial.epoch, trial.checkpoint_epoch, trial.kept_epochs) == (3, 2, 2)


def test_a_resumed_search_runs_as_many_trials_at_once_as_it_is_told(tmp_path: Path) -> None:
    """Tune restores its concurrency cap from the searcher snapshot, not from the restored
    Tuner: the cap rewritten there is the one the restored search generator applies (Tune's
    own save and restore, no Ray cluster needed)."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.search_generator import SearchGenerator
    from ray.tune.search.searcher import Searcher

    from hpsearch.search.reconcile import set_concurrency

    class _Fixed(Searcher):  # a do-nothing searcher: only the wrapper's state matters here
        def suggest(self, trial_id: str) -> dict | None:
            return {"lr": 0.1}

        def save(self, checkpoint_path: str) -> None:
            Path(checkpoint_path).write_text("{}")

        def restore(self, checkpoint_path: str) -> None:
            pass

    def generator(cap: int) -> SearchGenerator:
        return SearchGenerator(ConcurrencyLimiter(_Fixed(metric="m", mode="max"), cap))

    generator(2).save_to_dir(str(tmp_path), "2026-01-01_00-00-00")
    assert set_concurrency(tmp_path, 1) == 2
    restored = generator(2)  # as Tuner.restore builds it: the cap the sweep started with
    restored.restore_from_dir(str(tmp_path))
    assert restored.searcher.max_concurrent == 1
    assert set_concurrency(tmp_path, 1) == 1  # unchanged: nothing rewritten
    assert set_concurrency(tmp_path / "nowhere", 3) is None  # no snapshot: nothing to change


def test_a_pruned_checkpoint_tune_resumes_from_is_put_back(tmp_path: Path) -> None:
    """Tune's snapshot can be epochs behind a trial that keeps only its newest two checkpoints:
    the one it names is put back (as the newest), or Tune would refuse to restore the trial."""
    from hpsearch.trainables.tune_adapter import TrialFolder, write_checkpoint

    recorded = SimpleNamespace(metrics={"epoch": 2}, checkpoint=SimpleNamespace(
        path="/elsewhere/runs/s/trial_b2/checkpoint_000001"))
    _snapshot(tmp_path, "2026-01-01_00-00-00", {"b2": ("RUNNING", 2)},
              payload=SimpleNamespace(latest_checkpoint_result=recorded))
    trial_dir = tmp_path / "trial_b2"
    _results(trial_dir, [1, 2, 3, 4])
    for number, epoch in ((2, 3), (3, 4)):  # checkpoints 0 and 1 pruned by the trial
        (trial_dir / f"checkpoint_00000{number}").mkdir()
        write_checkpoint(trial_dir / f"checkpoint_00000{number}",
                         {"epoch": epoch, "history": []})
    record = read_record(tmp_path, trusted=True)
    assert record.trials["b2"].checkpoint_name == "checkpoint_000001"
    assert rollback(tmp_path, record) == {"orphans": 0, "rows": 1, "checkpoints": 1}
    folder = TrialFolder.local(trial_dir)
    assert folder.epoch(str(trial_dir / "checkpoint_000001")) == 4
    assert folder.state(str(trial_dir / "checkpoint_000001"))["epoch"] == 4
    assert folder.marker(str(trial_dir / "checkpoint_000001")) == {"epoch": 4, "recorded": 2}
    assert rollback(tmp_path, record) == {"orphans": 0, "rows": 0, "checkpoints": 0}

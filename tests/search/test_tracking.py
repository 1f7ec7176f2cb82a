"""MLflow tracking: what a user sees in MLflow after a sweep, an outage, a resume or a sync.

Unit tests replay a hand-written Tune results dir into a local SQLite store (no server, no Ray
runtime); integration tests run real Tune sweeps against a real ``mlflow server``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from ray.tune import Callback

from hpsearch.search.tracking import (
    MARKER_FILE,
    RUNS_FILE,
    MlflowTracker,
    flatten_params,
    read_results,
    resolve_tracking_uri,
    result_metrics,
    sync,
    trial_status,
)
from hpsearch.trainables.vocab import CONSTANT_METRICS
from tests.mlflow_server import MlflowServer

EPOCHS = 3
CONFUSION = [[5, 1, 0], [1, 4, 1], [0, 2, 6]]


# --------------------------------------------------------------------------- fake trial output


def epoch_metrics(lr: float, epoch: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """One epoch's report in the shape ``trainables.fit`` produces; lr >= 1 diverges at 2."""
    diverged = lr >= 1.0 and epoch == 2
    last = epoch == epochs
    acc = 0.1 if lr >= 1.0 else min(0.95, 0.3 + 0.1 * epoch + lr)
    m: dict[str, Any] = {
        "epoch": epoch, "train_samples": 64, "train_loss": 2.0 / epoch, "train_top1": acc + 0.05,
        "train_top3": min(1.0, acc + 0.2), "val_samples": 32, "val_loss": 2.2 / epoch,
        "val_top1": acc, "val_top3": min(1.0, acc + 0.15), "lr": lr, "images_per_second": 900.0,
        "epoch_seconds": 12.5, "params": 1234, "macs": 56789,
        "status": "diverged" if diverged else ("completed" if last else "running")}
    if diverged:
        m["train_loss"] = float("nan")
    elif last:
        m.update(test_loss=0.7, test_top1=acc - 0.01, test_top3=0.99, test_precision=0.6,
                 test_recall=0.61, test_f1=0.605, test_confusion=CONFUSION)
    return m


def tiny_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: reports EPOCHS epochs with a ``model.pt`` checkpoint each."""
    from ray.tune import Checkpoint, get_checkpoint, report

    start = 1
    checkpoint = get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "state.json").read_text())["epoch"] + 1
    for epoch in range(start, EPOCHS + 1):
        time.sleep(config.get("sleep", 0.0))
        metrics = epoch_metrics(config["lr"], epoch)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "model.pt").write_bytes(pickle.dumps({"w": [config["lr"]] * 4}))
            (Path(d) / "state.json").write_text(json.dumps({"epoch": epoch}))
            report(metrics, checkpoint=Checkpoint.from_directory(d))
        if config.get("fail_once") and epoch == 2 and _first_to_create(config["fail_once"]):
            raise RuntimeError("worker lost (simulated)")
        if metrics["status"] == "diverged":
            return


def _first_to_create(path: str) -> bool:
    try:  # O_EXCL: exactly one of the concurrent trials wins
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def write_tune_dir(run_dir: Path, trials: dict[str, tuple[float, int, str | None]]) -> None:
    """A Tune results layout by hand: ``<trial>/params.json`` + ``result.json`` (+ error.txt)."""
    stamp = 1_700_000_000
    for i, (trial_id, (lr, epochs, error)) in enumerate(trials.items()):
        config = {"lr": lr, "augment": ["hflip", "crop"], "channels": None, "model": "cnn"}
        trial_dir = run_dir / f"tiny_{trial_id}_{i}_lr={lr}"
        (trial_dir / "checkpoint_000000").mkdir(parents=True)
        (trial_dir / "checkpoint_000000" / "model.pt").write_bytes(b"weights")
        (trial_dir / "params.json").write_text(json.dumps(config))
        rows = []
        for epoch in range(1, epochs + 1):
            stamp += 1
            rows.append({**epoch_metrics(lr, epoch), "trial_id": trial_id, "timestamp": stamp,
                         "training_iteration": epoch, "hostname": "node-a", "config": config,
                         "checkpoint_dir_name": "checkpoint_000000", "done": False})
        text = "\n".join(json.dumps(r) for r in rows) + "\n"
        (trial_dir / "result.json").write_text(text + '{"epoch": 9, "val_to')  # torn write
        if error:
            (trial_dir / "error.txt").write_text(f"Failure # 1\nTraceback...\n{error}\n")


# --------------------------------------------------------------------------- MLflow views


def sweep_runs(client: MlflowClient, sweep: str) -> tuple[Any, dict[str, Any]]:
    """(the one parent run, {trial_id: child run}) as a user would look them up."""
    exp = client.get_experiment_by_name(sweep)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "sweep"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    children = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    by_trial = {r.data.tags["hpsearch.trial_id"]: r for r in children}
    assert len(by_trial) == len(children), "duplicate child runs"
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    return parents[0], by_trial


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


def assert_matches_results(client: MlflowClient, run_dir: Path, children: dict[str, Any]) -> None:
    """Every (metric, step) in every trial's result.json is in MLflow exactly once; a metric
    that is the same every epoch (params, MACs, sample counts) once, at the first epoch; lr,
    per epoch, only when a schedule changes it (else the param ``lr`` says it)."""
    for result_file in run_dir.glob("*/result.json"):
        rows = read_results(result_file)
        run = children[rows[0]["trial_id"]]
        expected: dict[str, dict[int, float]] = {}
        for row in rows:
            for key, value in result_metrics(row).items():
                if key in CONSTANT_METRICS and key in expected:
                    continue
                if key == "lr" and run.data.params.get("schedule") == "none":
                    continue
                expected.setdefault(key, {}).setdefault(int(row["epoch"]), value)
        assert set(run.data.metrics) == set(expected), run.data.metrics
        for key, points in expected.items():
            got = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in got) == sorted(points), (key, got)
            for m in got:
                want = points[m.step]
                assert (math.isnan(m.value) and math.isnan(want)) or m.value == pytest.approx(want)


# --------------------------------------------------------------------------- unit


def test_flatten_params_writes_lists_and_none_as_json() -> None:
    params = flatten_params({"lr": 0.1, "augment": ["flip", "crop"], "channels": None,
                             "opt": {"name": "adam", "betas": [0.9, 0.99]}, "model": "cnn"})
    assert params == {"lr": "0.1", "augment": '["flip", "crop"]', "channels": "null",
                      "opt.name": "adam", "opt.betas": "[0.9, 0.99]", "model": "cnn"}


def test_result_metrics_keeps_numbers_only() -> None:
    row = {**epoch_metrics(0.1, EPOCHS), "trial_id": "t", "timestamp": 1, "done": True,
           "hostname": "h", "config": {"lr": 0.1}, "training_iteration": 3, "time_total_s": 1.5}
    metrics = result_metrics(row)
    assert {"val_top1", "test_f1", "params", "macs", "time_total_s"} <= set(metrics)
    assert not {"status", "test_confusion", "epoch", "timestamp", "done"} & set(metrics)


@pytest.mark.parametrize(("last", "tune_status", "error", "expected"), [
    ("completed", "TERMINATED", None, "completed"),
    ("running", "TERMINATED", None, "stopped_early"),
    ("diverged", "TERMINATED", None, "diverged"),
    ("rejected", "TERMINATED", None, "rejected"),
    ("running", "ERROR", "RuntimeError: boom", "failed"),
    ("completed", "ERROR", "RuntimeError: boom", "completed"),  # retried, then completed
    ("running", None, "RuntimeError: boom", "failed"),
    ("running", "RUNNING", None, "running"),
    ("running", None, None, "unknown"),
])
def test_trial_status(last: str, tune_status: str | None, error: str | None,
                      expected: str) -> None:
    assert trial_status([{"status": last}], tune_status, error) == expected


def test_tracking_uri_defaults_to_sqlite_in_cwd(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri() == "http://mlflow:5000"
    assert resolve_tracking_uri("sqlite:////x.db") == "sqlite:////x.db"


def test_read_results_skips_a_torn_last_line(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "va')
    assert [r["epoch"] for r in read_results(tmp_path / "result.json")] == [1, 2]


def test_tracker_pickles_without_its_thread(tmp_path: Path, mlflow_db: str) -> None:
    # Tune pickles the run config, callbacks included, into tuner.pkl.
    tracker = MlflowTracker(sweep_name="s", run_dir=tmp_path, tracking_uri=mlflow_db)
    tracker.setup()
    clone = pickle.loads(pickle.dumps(tracker))
    assert clone.run_dir == tracker.run_dir and clone.tracking_uri == tracker.tracking_uri
    assert tracker.close(timeout=30)
    assert not (tmp_path / MARKER_FILE).exists()  # delivered: no sync due
    assert json.loads((tmp_path / RUNS_FILE).read_text())[tracker.tracking_uri]["parent_run_id"]


def _completed_run(tmp_path: Path, mlflow_db: str) -> tuple[Any, Any]:
    """A sweep's store in ``mlflow_db`` with its parent run and a child for trial ``t1``,
    tagged completed."""
    from hpsearch.search.tracking.store import _Store

    store = _Store(tracking_uri=mlflow_db, run_dir=tmp_path, sweep_name="s", experiment=None,
                   objective=("val_top1", "max"))
    store.ensure_parent()
    run = store.ensure_child("t1", {"lr": 0.1})
    run.set_tags({"hpsearch.status": "completed"})
    store.flush(run)
    return store, run


def test_a_tag_set_back_to_the_runs_own_value_is_what_mlflow_keeps(tmp_path: Path,
                                                                    mlflow_db: str) -> None:
    """A resumed trial is tagged running as it starts and completed as it ends; when its run
    was completed already, the run must say completed, not the running in between."""
    from mlflow import MlflowClient

    store, run = _completed_run(tmp_path, mlflow_db)
    run.set_tags({"hpsearch.status": "running"})  # started again after a resume ...
    run.set_tags({"hpsearch.status": "completed"})  # ... and ended at once
    store.flush(run)
    tags = MlflowClient(mlflow_db).get_run(run.run_id).data.tags
    assert tags["hpsearch.status"] == "completed"


def test_a_sqlite_store_is_written_in_wal_mode_and_read_by_another_process(
        tmp_path: Path, mlflow_db: str) -> None:
    """The writer's commits do not wait for the disk (WAL, synchronous=NORMAL), and what it
    committed is there for another process reading the file (``mlflow ui``, ``report``)."""
    import sqlite3
    import subprocess
    import sys

    store, run = _completed_run(tmp_path, mlflow_db)
    db = mlflow_db.removeprefix("sqlite:///")
    with store.client._tracking_client.store.engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    read = subprocess.run(
        [sys.executable, "-c", "import sys; from mlflow import MlflowClient; "
         "print(MlflowClient(sys.argv[1]).get_run(sys.argv[2]).data.tags['hpsearch.status'])",
         mlflow_db, run.run_id], capture_output=True, text=True, check=True)
    assert read.stdout.strip() == "completed"


def test_a_trial_stopped_then_resumed_to_completion_loses_its_stopped_epoch(
        tmp_path: Path, mlflow_db: str) -> None:
    from mlflow import MlflowClient

    from hpsearch.search.tracking.finish import finish_trial
    from hpsearch.search.tracking.store import _Store

    store = _Store(tracking_uri=mlflow_db, run_dir=tmp_path, sweep_name="s", experiment=None,
                   objective=("val_top1", "max"))
    store.ensure_parent()
    run = store.ensure_child("t1", {"lr": 0.1})
    finish_trial(store, "t1", "stopped_early")
    run = store.ensure_child("t1", None)  # resumed: the scheduler let it go on
    store.mark_running(run)
    finish_trial(store, "t1", "completed")
    found = MlflowClient(mlflow_db).get_run(run.run_id)
    assert found.data.tags["hpsearch.status"] == "completed"
    assert "hpsearch.stopped_epoch" not in found.data.tags
    assert found.info.status == "FINISHED"


def test_a_trial_the_sweeps_end_cut_is_named_so_and_one_its_scheduler_stopped_is_not(
        tmp_path: Path, mlflow_db: str) -> None:
    """MLflow's runs table tells a trial ASHA stopped at a rung from one still training when the
    sweep ended (target, plateau, time limit) as the report does: by the scheduler's rungs."""
    import yaml
    from mlflow import MlflowClient

    from hpsearch.search.tracking.finish import finish_trial
    from hpsearch.search.tracking.store import _Store

    spec = {"scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
            "budget": {"max_epochs": 9}}  # ASHA's rungs: epochs 1 and 3
    run_dir = tmp_path / "runs" / "s"
    store = _Store(tracking_uri=mlflow_db, run_dir=run_dir, sweep_name="s", experiment=None,
                   objective=("val_top1", "max"))
    store.ensure_parent(yaml.safe_dump(spec))
    assert store.rungs == (1, 3)
    for trial_id, epochs in (("t1", 1), ("t2", 2), ("t3", 0)):
        folder = run_dir / f"trial_{trial_id}"
        folder.mkdir(parents=True)
        rows = [{"trial_id": trial_id, "epoch": e, "training_iteration": e, "val_top1": 0.5,
                 "status": "running", "timestamp": e} for e in range(1, epochs + 1)]
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        store.ensure_child(trial_id, {"lr": 0.1, "epochs": 9}, str(folder))
        finish_trial(store, trial_id, "stopped_early")
    client = MlflowClient(mlflow_db)
    runs = {r.data.tags["hpsearch.trial_id"]: r for r in client.search_runs(
        [store.experiment_id], "tags.`hpsearch.role` = 'trial'")}
    got = {t: (r.data.tags["mlflow.runName"], r.data.tags["mlflow.note.content"],
               r.data.tags["hpsearch.status"], r.info.status) for t, r in runs.items()}
    assert got == {
        "t1": ("t1 · stopped early", "stopped early: by the scheduler after epoch 1 of 9",
               "stopped_early", "KILLED"),
        "t2": ("t2 · ended at epoch 2", "ended with the sweep: after epoch 2 of 9, still training",
               "stopped_early", "KILLED"),
        "t3": ("t3 · ended before epoch 1", "ended with the sweep: before its first epoch",
               "stopped_early", "KILLED")}


def test_a_trial_given_other_settings_before_its_params_were_sent_keeps_its_first(
        tmp_path: Path, mlflow_db: str) -> None:
    """Under PBT a trial may train on with another trial's settings before the writer has sent
    its run's params (seen under CI load): params keep the settings it started with, and the
    settings-now tag says what it has now."""
    import json

    from mlflow import MlflowClient

    from hpsearch.search.tracking.lineage import SETTINGS_NOW_TAG
    from hpsearch.search.tracking.store import _Store

    store = _Store(tracking_uri=mlflow_db, run_dir=tmp_path, sweep_name="s", experiment=None,
                   objective=("val_top1", "max"))
    store.ensure_parent()
    store.ensure_child("t1", {"lr": 0.1, "momentum": 0.9})
    run = store.ensure_child("t1", {"lr": 0.12, "momentum": 0.9})  # nothing sent in between
    store.flush(run)
    found = MlflowClient(mlflow_db).get_run(run.run_id).data
    assert (found.params["lr"], found.params["momentum"]) == ("0.1", "0.9")
    assert json.loads(found.tags[SETTINGS_NOW_TAG]) == {"lr": 0.12}


def test_a_reopened_store_finds_a_trial_run_its_run_map_lacks(tmp_path: Path,
                                                               mlflow_db: str) -> None:
    """A driver killed after creating a trial's run, before its run map said so: the next
    session's store reattaches to that run (listed once by parent) and creates the new
    trials' runs, with no run twice."""
    from mlflow import MlflowClient

    from hpsearch.search.tracking.store import _Store

    def store() -> _Store:
        return _Store(tracking_uri=mlflow_db, run_dir=tmp_path, sweep_name="s",
                      experiment=None, objective=("val_top1", "max"))

    first = store()
    first.ensure_parent()
    old = first.ensure_child("t1", {"lr": 0.1}).run_id
    (tmp_path / RUNS_FILE).unlink()  # the map never said so
    second = store()
    parent = second.ensure_parent(reopen=True)
    assert second.ensure_child("t1", None).run_id == old
    new = second.ensure_child("t2", {"lr": 0.2}).run_id
    second.save_map()
    runs = MlflowClient(mlflow_db).search_runs(
        [second.experiment()], f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
    assert sorted(r.info.run_id for r in runs) == sorted([old, new])
    saved = json.loads((tmp_path / RUNS_FILE).read_text())[mlflow_db]["trials"]
    assert saved == {"t1": old, "t2": new}


def test_a_runs_tags_reach_mlflow_with_its_last_metrics(tmp_path: Path, mlflow_db: str) -> None:
    """Over 1,000 points go in several batches; the tags (``hpsearch.synced_through`` among
    them: "every step up to here is in MLflow") only with the last, as MLflow writes a batch's
    tags after its metrics."""
    from mlflow import MlflowClient

    from hpsearch.search.tracking.finish import SYNCED_TAG
    from hpsearch.search.tracking.store import BATCH_METRICS, _Store

    class Recording(MlflowClient):
        batches: list[tuple[int, int]] = []  # (metrics, tags) per log_batch

        def log_batch(self, run_id: str, metrics=(), params=(), tags=(), **kw: Any) -> None:
            self.batches.append((len(metrics), len(tags)))
            super().log_batch(run_id, metrics=metrics, params=params, tags=tags, **kw)

    store = _Store(tracking_uri=mlflow_db, run_dir=tmp_path, sweep_name="s", experiment=None,
                   objective=("val_top1", "max"))
    store.client = Recording(mlflow_db)
    store.ensure_parent()
    run = store.ensure_child("t1", {"lr": 0.1})
    points = 2 * BATCH_METRICS + 5
    store.add_metrics(run, {"val_loss": 1.0}, 0, 0)
    for step in range(1, points):
        store.add_metrics(run, {"val_loss": 1.0 / step}, step, step)
    run.set_tags({SYNCED_TAG: points - 1, "hpsearch.status": "completed"})
    Recording.batches.clear()
    store.flush(run)
    assert len(Recording.batches) == 3 and sum(m for m, _ in Recording.batches) == points
    assert [t for _, t in Recording.batches[:-1]] == [0, 0] and Recording.batches[-1][1] >= 2
    found = MlflowClient(mlflow_db)
    assert found.get_run(run.run_id).data.tags[SYNCED_TAG] == str(points - 1)
    assert len(found.get_metric_history(run.run_id, "val_loss")) == points


@pytest.mark.integration  # a real subprocess / real MLflow store: seconds
def test_sync_into_local_sqlite_without_server_is_idempotent(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "local"
    write_tune_dir(run_dir, {"aaaa_00000": (0.01, 3, None), "aaaa_00001": (0.1, 3, None),
                             "aaaa_00002": (1.0, 2, None), "aaaa_00003": (0.05, 1, "OSError: x")})
    (run_dir / MARKER_FILE).write_text("pending\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    stats = sync(run_dir, "local", tracking_uri=uri, spec_yaml="name: local\n")
    assert (stats.trials, stats.runs_created) == (4, 5)
    assert not (run_dir / MARKER_FILE).exists()
    client = MlflowClient(uri)
    parent, children = sweep_runs(client, "local")
    assert_matches_results(client, run_dir, children)
    tags = {t: r.data.tags for t, r in children.items()}
    assert tags["aaaa_00001"]["hpsearch.status"] == "completed"
    assert tags["aaaa_00002"]["hpsearch.status"] == "diverged"
    assert tags["aaaa_00003"]["hpsearch.status"] == "failed"
    assert tags["aaaa_00003"]["hpsearch.error"] == "OSError: x"
    # The runs table: the status in the run's name, and MLflow's run status to match.
    assert {t: (r.info.run_name, r.info.status) for t, r in children.items()} == {
        "aaaa_00000": ("aaaa_00000 · completed", "FINISHED"),
        "aaaa_00001": ("aaaa_00001 · completed", "FINISHED"),
        "aaaa_00002": ("aaaa_00002 · diverged", "FAILED"),
        "aaaa_00003": ("aaaa_00003 · failed", "FAILED")}
    params = children["aaaa_00001"].data.params
    assert params["augment"] == '["hflip", "crop"]'
    # every setting the trial used, defaults included, not only the searched ones
    assert (params["activation"], params["seed"], params["schedule"]) == ("relu", "0", "none")
    assert params["epochs"] == "1" and params["optimizer"] == "adam"
    # constants once; lr without a schedule is the param, not a flat chart
    assert history(client, children["aaaa_00001"].info.run_id, "params") == [(1, 1234.0)]
    assert "lr" not in children["aaaa_00001"].data.metrics
    assert artifacts(client, children["aaaa_00001"].info.run_id) == {
        "curves.png", "confusion.csv", "confusion.png"}
    assert parent.data.tags["hpsearch.best_trial_id"] == "aaaa_00001"
    assert {"spec.yaml", "best"} <= artifacts(client, parent.info.run_id)
    assert artifacts(client, parent.info.run_id, "best") == {"best/model.pt", "best/best.json"}
    assert parent.data.metrics["sweep/best_val_top1"] == pytest.approx(0.7)
    # the parent's best so far, at step = trials ended: 0 ended first (0.61 at its epoch 3),
    # then 1 (0.7), 2 diverged and 3 failed leave it as it was
    assert history(client, parent.info.run_id, "sweep/best_val_top1") == [
        (1, pytest.approx(0.61)), (2, pytest.approx(0.7))]
    assert parent.data.tags["hpsearch.trials_ended"] == "4"
    # the parent's page is the report: the leaderboard as its description, the report attached
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("sweep 'local': 4 trials (2 completed, 1 diverged, 1 failed)\n")
    assert "| aaaa_00001 |" in note.split("\n")[4], note  # best first, under the header
    assert "report.html" in artifacts(client, parent.info.run_id)
    assert parent.info.status == "FINISHED"
    # artifacts of sqlite runs live next to the DB, not in the cwd
    assert (tmp_path / "mlartifacts").is_dir()

    again = sync(run_dir, "local", tracking_uri=uri, spec_yaml="name: local\n")
    assert (again.runs_created, again.points_logged, again.artifacts_logged) == (0, 0, 0)
    sweep_runs(client, "local")

    # One more epoch on disk: a sync reads back that run's history and adds only that epoch.
    result_file = next(run_dir.glob("tiny_aaaa_00003_*/result.json"))
    rows = read_results(result_file)
    late = {**rows[-1], **epoch_metrics(0.05, 2), "timestamp": rows[-1]["timestamp"] + 100}
    result_file.write_text("\n".join(json.dumps(r) for r in [*rows, late]) + "\n")
    third = sync(run_dir, "local", tracking_uri=uri)
    new = set(result_metrics(late)) - {*CONSTANT_METRICS, "lr"}  # those are logged once
    assert (third.runs_created, third.points_logged) == (0, len(new))
    assert_matches_results(client, run_dir, sweep_runs(client, "local")[1])


# --------------------------------------------------------------------------- integration


@pytest.fixture(scope="module")
def ray_local():
    """A private local 2-CPU Ray (never a cluster already running on this machine), whatever
    RAY_AUTH_MODE says: token auth on or off both work."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def server(tmp_path: Path):
    with MlflowServer(tmp_path / "mlflow") as srv:
        yield srv


def run_sweep(storage: Path, name: str, param_space: dict[str, Any], callbacks: list[Any],
              ) -> Any:
    from ray import tune
    from ray.tune import RunConfig

    tuner = tune.Tuner(tiny_trainable, param_space=param_space,
                       run_config=RunConfig(name=name, storage_path=str(storage),
                                            callbacks=callbacks, verbose=0))
    return tuner.fit()


def _space(**extra: Any) -> dict[str, Any]:
    from ray import tune

    return {"lr": tune.grid_search([0.01, 0.1, 1.0]), "augment": ["hflip", "crop"],
            "channels": None, "model": "cnn", **extra}


@pytest.mark.integration
def test_sweep_shows_parent_children_metrics_artifacts(ray_local: Any, server: MlflowServer,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.search.tracking import finish

    monkeypatch.setattr(finish, "FIGURES_MIN_S", 0.0)  # these trials train for a second
    storage = tmp_path / "runs"
    tracker = MlflowTracker(sweep_name="tiny", run_dir=storage / "tiny",
                            tracking_uri=server.uri, spec_yaml="name: tiny\n",
                            sweep_params={"searcher": "grid", "scheduler": "none"})
    results = run_sweep(storage, "tiny", _space(), [tracker])
    assert not results.errors

    client = MlflowClient(server.uri)
    parent, children = sweep_runs(client, "tiny")
    assert len(children) == 3
    by_lr = {float(r.data.params["lr"]): r for r in children.values()}
    for lr, run in by_lr.items():
        steps = [1, 2] if lr >= 1.0 else [1, 2, 3]
        assert [s for s, _ in history(client, run.info.run_id, "val_top1")] == steps
        assert run.data.params["augment"] == '["hflip", "crop"]'
        assert run.data.params["channels"] == "null"
        assert run.data.tags["hpsearch.device"] == "cpu"
        assert run.data.tags["hpsearch.node"] == socket.gethostname()
        assert run.data.tags["hpsearch.git_commit"] == parent.data.tags["hpsearch.git_commit"]
        assert "curves.png" in artifacts(client, run.info.run_id)
    assert by_lr[0.1].data.tags["hpsearch.status"] == "completed"
    assert by_lr[1.0].data.tags["hpsearch.status"] == "diverged"
    assert math.isnan(history(client, by_lr[1.0].info.run_id, "train_loss")[-1][1])
    assert by_lr[0.1].data.metrics["test_f1"] == pytest.approx(0.605)
    assert {"confusion.csv", "confusion.png"} <= artifacts(client, by_lr[0.1].info.run_id)
    assert_matches_results(client, storage / "tiny", children)

    assert parent.data.params == {"searcher": "grid", "scheduler": "none"}
    assert parent.data.tags["hpsearch.best_run_id"] == by_lr[0.1].info.run_id
    assert parent.data.metrics["sweep/best_val_top1"] == pytest.approx(0.7)
    assert parent.info.status == "FINISHED"
    assert "spec.yaml" in artifacts(client, parent.info.run_id)
    assert artifacts(client, parent.info.run_id, "best") == {"best/model.pt", "best/best.json"}
    weights = client.download_artifacts(parent.info.run_id, "best/model.pt", str(tmp_path))
    assert pickle.loads(Path(weights).read_bytes()) == {"w": [0.1] * 4}

    saved = json.loads((storage / "tiny" / RUNS_FILE).read_text())[server.uri]
    assert saved["parent_run_id"] == parent.info.run_id
    assert saved["trials"] == {t: r.info.run_id for t, r in children.items()}
    assert not (storage / "tiny" / MARKER_FILE).exists()


@pytest.mark.integration
def test_sweep_into_local_sqlite_without_server(ray_local: Any, tmp_path: Path) -> None:
    storage, uri = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(sweep_name="lite", run_dir=storage / "lite", tracking_uri=uri)
    assert not run_sweep(storage, "lite", _space(), [tracker]).errors
    client = MlflowClient(uri)
    parent, children = sweep_runs(client, "lite")
    assert len(children) == 3
    assert_matches_results(client, storage / "lite", children)
    assert artifacts(client, parent.info.run_id, "best") == {"best/model.pt", "best/best.json"}
    assert not (storage / "lite" / MARKER_FILE).exists()


class StopServerAfter(Callback):
    """A driver-side callback that takes the tracking server down after ``n`` results."""

    def __init__(self, server: MlflowServer, n: int) -> None:
        self.server: MlflowServer | None = server
        self.n, self.seen = n, 0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into tuner.pkl
        return {**self.__dict__, "server": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.seen += 1
        if self.seen == self.n and self.server is not None:
            self.server.stop()


@pytest.mark.integration
def test_outage_never_fails_the_sweep_and_sync_restores_every_point(
        ray_local: Any, server: MlflowServer, tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    tracker = MlflowTracker(sweep_name="outage", run_dir=storage / "outage",
                            tracking_uri=server.uri, retry_interval=1.0, close_timeout=3.0)
    results = run_sweep(storage, "outage", _space(sleep=0.4),
                        [tracker, StopServerAfter(server, 2)])
    assert not results.errors
    assert sorted(r.metrics["status"] for r in results) == ["completed", "completed", "diverged"]
    assert (storage / "outage" / MARKER_FILE).exists()

    server.start()
    stats = sync(storage / "outage", "outage", tracking_uri=server.uri)
    assert stats.points_logged > 0
    assert not (storage / "outage" / MARKER_FILE).exists()
    client = MlflowClient(server.uri)
    parent, children = sweep_runs(client, "outage")
    assert len(children) == 3
    assert_matches_results(client, storage / "outage", children)
    assert sorted(r.data.tags["hpsearch.status"] for r in children.values()) == [
        "completed", "completed", "diverged"]
    assert artifacts(client, parent.info.run_id, "best") == {"best/model.pt", "best/best.json"}

    again = sync(storage / "outage", "outage", tracking_uri=server.uri)
    assert (again.runs_created, again.points_logged, again.artifacts_logged) == (0, 0, 0)
    assert len(sweep_runs(client, "outage")[1]) == 3


@pytest.mark.integration
@pytest.mark.parametrize("forget_run_map", [False, True], ids=["run-map-file", "tags-only"])
def test_resumed_sweep_reattaches_to_its_runs(ray_local: Any, server: MlflowServer,
                                              tmp_path: Path, forget_run_map: bool) -> None:
    from ray import tune

    storage, run_dir = tmp_path / "runs", tmp_path / "runs" / "resume"
    space = {"lr": tune.grid_search([0.01, 0.1]), "fail_once": str(tmp_path / "failed-once")}
    tracker = MlflowTracker(sweep_name="resume", run_dir=run_dir, tracking_uri=server.uri)
    first = run_sweep(storage, "resume", space, [tracker])
    assert len(first.errors) == 1  # the first trial died after epoch 2
    client = MlflowClient(server.uri)
    _, before = sweep_runs(client, "resume")
    assert sorted(r.data.tags["hpsearch.status"] for r in before.values()) == [
        "completed", "failed"]
    if forget_run_map:
        (run_dir / RUNS_FILE).unlink()

    # A new driver: Tune restores the callbacks from tuner.pkl (a fresh, unpickled tracker).
    tuner = tune.Tuner.restore(str(run_dir), trainable=tiny_trainable, resume_errored=True)
    second = tuner.fit()
    assert not second.errors

    parent, after = sweep_runs(client, "resume")
    assert {t: r.info.run_id for t, r in after.items()} == {
        t: r.info.run_id for t, r in before.items()}
    for run in after.values():
        assert run.data.tags["hpsearch.status"] == "completed"
        assert [s for s, _ in history(client, run.info.run_id, "val_top1")] == [1, 2, 3]
    assert_matches_results(client, run_dir, after)
    assert parent.info.status == "FINISHED"


def test_a_trial_that_copies_another_model_logs_the_new_models_size(tmp_path: Path,
                                                                    mlflow_db: str) -> None:
    """Params and MACs are logged once per run, as they do not change while a trial trains;
    under PBT a trial goes on from another trial's model and settings, so MLflow's latest
    ``params`` must be the model the trial ended with (what the report from Ray's files says)."""
    from mlflow import MlflowClient

    from hpsearch.search.tracking.store import _Store
    from hpsearch.trainables.vocab import COPIED

    store = _Store(tracking_uri=mlflow_db, run_dir=tmp_path, sweep_name="s", experiment=None,
                   objective=("val_top1", "max"))
    store.ensure_parent()
    base = {"training_iteration": 1, "val_top1": 0.5, "params": 1000, "macs": 5000,
            "config": {"channels": [4, 8]}}
    store.add_result("t1", {**base, "epoch": 1})
    store.add_result("t1", {**base, "epoch": 2, "val_top1": 0.6})
    copy = {"from": "t0", "epoch": 2, "changes": {"lr": [0.1, 0.12]}}
    bigger = {**base, "params": 4000, "macs": 20000, "config": {"channels": [8, 16]}}
    run = store.add_result("t1", {**bigger, "epoch": 3, COPIED: copy})
    store.add_result("t1", {**bigger, "epoch": 4})
    store.flush(run)
    client = MlflowClient(mlflow_db)
    assert client.get_run(run.run_id).data.metrics["params"] == 4000
    history = {m.step: m.value for m in client.get_metric_history(run.run_id, "macs")}
    assert history == {1: 5000, 3: 20000}  # once, and once more at the copy


def test_sync_logs_the_copied_models_size_an_older_version_left_out(tmp_path: Path,
                                                                    mlflow_db: str) -> None:
    """A run written before the size followed a PBT copy (params logged once, the run ended
    and marked synced through its last epoch): ``hpsearch sync`` adds the copy's size."""
    from mlflow import MlflowClient

    from hpsearch.search.tracking.finish import SYNCED_TAG
    from hpsearch.search.tracking.replay import sync
    from hpsearch.search.tracking.store import _Store
    from hpsearch.trainables.vocab import COPIED

    run_dir = tmp_path / "runs" / "s"
    copy = {"from": "t0", "epoch": 1, "changes": {"lr": [0.1, 0.12]}}
    rows = [{"trial_id": "t1", "epoch": 1, "training_iteration": 1, "val_top1": 0.5,
             "params": 1000, "macs": 5000, "status": "running", "timestamp": 1,
             "config": {"lr": 0.1, "channels": [4, 8]}},
            {"trial_id": "t1", "epoch": 2, "training_iteration": 2, "val_top1": 0.6,
             "params": 4000, "macs": 20000, "status": "completed", "timestamp": 2, COPIED: copy,
             "config": {"lr": 0.12, "channels": [8, 16]}}]
    (run_dir / "trial_t1").mkdir(parents=True)
    (run_dir / "trial_t1" / "result.json").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    old = _Store(tracking_uri=mlflow_db, run_dir=run_dir, sweep_name="s", experiment=None,
                 objective=("val_top1", "max"))
    old.ensure_parent()
    run = old.ensure_child("t1", rows[0]["config"], str(run_dir / "trial_t1"))
    old.add_result("t1", rows[0])
    old.add_result("t1", {k: v for k, v in rows[1].items() if k not in ("params", "macs")})
    run.set_tags({"hpsearch.status": "completed", SYNCED_TAG: 2})
    old.flush(run)
    client = MlflowClient(mlflow_db)
    client.set_terminated(run.run_id)
    assert client.get_run(run.run_id).data.metrics["params"] == 1000  # as an older one left it

    sync(run_dir, "s", mlflow_db)
    assert client.get_run(run.run_id).data.metrics["params"] == 4000
    assert {m.step: m.value for m in client.get_metric_history(run.run_id, "macs")} == {
        1: 5000, 2: 20000}

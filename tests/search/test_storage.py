"""Sweep folders by URI (``search.storage``): the same code path as ``s3://``, run here on
``file://`` URIs, which pyarrow opens as its LocalFileSystem. The S3 API itself is exercised in
``test_s3_storage.py`` (integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.search.runner import find_sweep, load_meta, run_dir_for
from hpsearch.search.storage import RemotePath, local_copy, location, write_atomic
from hpsearch.search.tracking import MARKER_FILE, sync
from hpsearch.trainables.errors import UserError
from tests.search.test_tracking import assert_matches_results, sweep_runs, write_tune_dir


def test_uri_paths_join_and_keep_their_query() -> None:
    root = RemotePath("s3://bucket/runs?endpoint_override=minio:9000&scheme=http")
    sweep = root / "mnist"
    assert str(sweep) == "s3://bucket/runs/mnist?endpoint_override=minio:9000&scheme=http"
    assert sweep.name == "mnist" and sweep.parent == root
    assert str(sweep / "trial_1" / "result.json") == \
        "s3://bucket/runs/mnist/trial_1/result.json?endpoint_override=minio:9000&scheme=http"
    assert str(RemotePath("s3://bucket/runs/").parent) == "s3://bucket"


def test_location_is_a_path_unless_a_scheme_is_named(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert location("runs") == tmp_path / "runs"
    assert isinstance(location("s3://b/runs"), RemotePath)
    assert isinstance(run_dir_for("x", "gs://b/runs"), RemotePath)
    assert run_dir_for("x", None) == tmp_path / "runs" / "x"


def test_file_operations_through_pyarrow(tmp_path: Path) -> None:
    root = location(f"file://{tmp_path}/store")
    meta = root / "sweep" / "hpsearch.json"
    assert not meta.exists() and not root.is_dir()
    meta.parent.mkdir()
    write_atomic(meta, '{"name": "sweep"}')
    assert meta.is_file() and meta.parent.is_dir() and not meta.is_dir()
    assert json.loads(meta.read_text()) == {"name": "sweep"}
    assert (tmp_path / "store" / "sweep" / "hpsearch.json").is_file()  # the real file
    assert [str(p) for p in root.glob("*/hpsearch.json")] == [str(meta)]
    assert meta.stat().st_size == len('{"name": "sweep"}')
    meta.unlink()
    meta.unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        meta.unlink()
    with pytest.raises(FileNotFoundError):
        meta.read_text()


def test_write_atomic_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a" / "x.json", "{}")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_local_copy_leaves_the_checkpoints_out(tmp_path: Path) -> None:
    write_tune_dir(tmp_path / "sweep", {"t_00000": (0.1, 2, None)})
    trial = next((tmp_path / "sweep").glob("tiny_*"))
    (trial / "checkpoint_000000" / "state.pt").write_bytes(b"big optimizer state")
    copy = local_copy(location(f"file://{tmp_path}/sweep"))
    assert (copy / trial.name / "result.json").read_bytes() == (trial / "result.json").read_bytes()
    assert (copy / trial.name / "params.json").is_file()
    assert list(copy.glob("*/checkpoint_*/*")) == []


def test_find_sweep_and_load_meta_by_uri(tmp_path: Path) -> None:
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "hpsearch.json").write_text('{"name": "a"}')
    storage = f"file://{tmp_path}/runs"
    run_dir, meta = find_sweep(f"{storage}/a")
    assert isinstance(run_dir, RemotePath) and meta == {"name": "a"}
    assert load_meta("a", storage) == {"name": "a"}
    with pytest.raises(UserError, match="no sweep named 'b' under .*; found: a"):
        load_meta("b", storage)
    with pytest.raises(UserError, match="storage: nosuch://x cannot be used"):
        load_meta("a", "nosuch://x")


@pytest.mark.integration  # a real subprocess / real MLflow store: seconds
def test_sync_from_a_uri_matches_a_local_sync_and_tags_the_uri(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "remote"
    write_tune_dir(run_dir, {"bbbb_00000": (0.01, 3, None), "bbbb_00001": (0.1, 3, None),
                             "bbbb_00002": (0.05, 1, "OSError: x")})
    (run_dir / MARKER_FILE).write_text("pending\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    url = f"file://{run_dir}"

    stats = sync(url, "remote", tracking_uri=uri)
    assert (stats.trials, stats.runs_created) == (3, 4)
    assert not (run_dir / MARKER_FILE).exists()
    assert "mlflow_runs.json" in {p.name for p in run_dir.iterdir()}  # kept with the sweep
    client = MlflowClient(uri)
    parent, children = sweep_runs(client, "remote")
    assert_matches_results(client, run_dir, children)
    assert parent.data.tags["hpsearch.run_dir"] == url
    assert all(r.data.tags["hpsearch.trial_dir"].startswith(f"{url}/tiny_")
               for r in children.values())
    best = {f.path for f in client.list_artifacts(parent.info.run_id, "best")}
    assert best == {"best/model.pt", "best/best.json"}  # the weights came with the copy
    again = sync(url, "remote", tracking_uri=uri)
    assert (again.runs_created, again.points_logged, again.artifacts_logged) == (0, 0, 0)


def test_best_weights_come_out_of_hpsearch_state_checkpoints(tmp_path: Path,
                                                            mlflow_db: str) -> None:
    """hpsearch's trials save one ``state.pt`` per checkpoint (weights under "model", with the
    optimizer's state); the parent's ``best/model.pt`` is those weights alone."""
    import torch

    run_dir = tmp_path / "runs" / "states"
    write_tune_dir(run_dir, {"cccc_00000": (0.01, 2, None), "cccc_00001": (0.1, 2, None)})
    for ckpt in run_dir.glob("*/checkpoint_000000"):
        (ckpt / "model.pt").unlink()
        weights = {"fc.weight": torch.full((2, 2), float(len(ckpt.parent.name)))}
        torch.save({"model": weights, "optimizer": {"state": {}}, "epoch": 2},
                   ckpt / "state.pt")
        (ckpt / "COMPLETE").touch()  # as a trial writes it, last
    uri = mlflow_db
    sync(f"file://{run_dir}", "states", tracking_uri=uri)
    client = MlflowClient(uri)
    parent, _ = sweep_runs(client, "states")
    best_trial = next(run_dir.glob(f"*{parent.data.tags['hpsearch.best_trial_id']}*"))
    got = torch.load(client.download_artifacts(parent.info.run_id, "best/model.pt",
                                               str(tmp_path)), weights_only=True)
    assert set(got) == {"fc.weight"}
    assert torch.equal(got["fc.weight"], torch.full((2, 2), float(len(best_trial.name))))
    info = json.loads(Path(client.download_artifacts(parent.info.run_id, "best/best.json",
                                                     str(tmp_path))).read_text())
    assert info["weights_from"] == f"file://{best_trial}/checkpoint_000000"

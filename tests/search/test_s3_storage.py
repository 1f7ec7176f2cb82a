"""S3 as Tune's storage path, against a real S3 API (moto's server) over HTTP.

What a user on a cluster without a shared disk does: ``storage: s3://bucket/runs`` plus the
usual AWS variables. Every command then works from the bucket alone: the sweep (checkpoints,
Tune state, hpsearch's own files), a resume after the driver was SIGKILLed, ``report`` and
``sync``; nothing lands in a local ``runs/``. One sweep, killed and resumed, is checked for
all of it (a sweep costs about a minute).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from tests.driver import hpsearch, sigkill_sweep_when
from tests.fakedata import write_mnist
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration

BUCKET = "hpsearch-test"
STORAGE = f"s3://{BUCKET}/runs"


def _cli(s3: S3Server, *args: str, cwd: Path, timeout: float = 400,
         ) -> subprocess.CompletedProcess[str]:
    return hpsearch(*args, cwd=cwd, env={**os.environ, **s3.env}, timeout=timeout)


def _spec(tmp_path: Path, name: str, data: Path, epochs: int) -> Path:
    spec = {
        "name": name,
        "fixed": {"dataset": "mnist", "data_dir": str(data), "model": "cnn",
                  "channels": [16, 32], "fc_width": 64, "batch_size": 32, "device": "cpu"},
        "space": {"lr": [0.001, 0.003], "optimizer": ["adam", "sgd"]},
        "search": {"algorithm": "grid"},
        "scheduler": {"name": "none"},
        "budget": {"max_epochs": epochs},
        "resources": {"cpu": 1},
        "storage": STORAGE,
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _epochs(s3: S3Server, key: str) -> list[int]:
    return [json.loads(line)["epoch"] for line in s3.read(key).decode().splitlines()
            if line.strip()]


def _trials(keys: list[str], name: str) -> set[str]:
    return {k.split("/")[2] for k in keys if k.startswith(f"runs/{name}/trial_")}


def _children(tmp_path: Path, name: str) -> list[Any]:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`hpsearch.trial_id` != ''")


def _checkpoint_epochs(s3: S3Server, name: str, trial: str) -> dict[str, int | None]:
    """Each checkpoint folder of a trial and the epoch its ``state.pt`` holds."""
    from hpsearch.trainables.tune_adapter import TrialFolder

    folder = TrialFolder(s3.fs(), f"{BUCKET}/runs/{name}/{trial}")
    return {path.rsplit("/", 1)[-1]: (folder.state(path) or {}).get("epoch")
            for path in folder.checkpoints()}


def _put_back(s3: S3Server, name: str, trial: str) -> set[str]:
    """The checkpoint folders of a trial that ``resume`` put back (their marker says so)."""
    from hpsearch.trainables.tune_adapter import RECORDED_KEY, TrialFolder

    folder = TrialFolder(s3.fs(), f"{BUCKET}/runs/{name}/{trial}")
    return {path.rsplit("/", 1)[-1] for path in folder.checkpoints()
            if RECORDED_KEY in (folder.marker(path) or {})}


@pytest.mark.usefixtures("mlflow_db")
def test_a_sweep_on_s3_killed_and_resumed_keeps_everything_in_the_bucket_and_reports_from_it(
        tmp_path: Path, s3: S3Server) -> None:
    data = write_mnist(tmp_path / "data", n_train=1200, n_test=200)
    spec = _spec(tmp_path, "ons3", data, epochs=3)
    # kill once some trial has 2 epochs checkpointed
    sigkill_sweep_when(spec, lambda: any("/checkpoint_000001/" in k
                                         for k in s3.keys("runs/ons3")),
                       cwd=tmp_path, env={**os.environ, **s3.env})
    keys = s3.keys("runs/ons3")
    before = {t: _epochs(s3, f"runs/ons3/{t}/result.json") for t in _trials(keys, "ons3")
              if f"runs/ons3/{t}/result.json" in keys}
    assert not all(e == [1, 2, 3] for e in before.values()) or len(before) < 4, \
        "the sweep finished before it was killed; the test proves nothing"

    time.sleep(2)  # let Ray's fate-shared processes of the dead driver go
    elsewhere = tmp_path / "elsewhere"  # nothing local is needed: the bucket has it all
    elsewhere.mkdir()
    out = _cli(s3, "resume", "ons3", "--storage", STORAGE, cwd=elsewhere)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"results: {STORAGE}/ons3" in out.stdout, out.stdout[-3000:]
    assert not (tmp_path / "runs").exists() and not (elsewhere / "runs").exists(), \
        "nothing may go to a local runs/"

    keys = s3.keys("runs/ons3")
    assert "runs/ons3/hpsearch.json" in keys and "runs/ons3/mlflow_runs.json" in keys
    assert "runs/ons3/mlflow_pending" not in keys  # MLflow got everything
    assert any(k.startswith("runs/ons3/experiment_state-") for k in keys)
    trials = _trials(keys, "ons3")
    assert len(trials) == 4  # no trial created twice
    for trial in trials:
        assert _epochs(s3, f"runs/ons3/{trial}/result.json") == [1, 2, 3], \
            f"{trial}: every epoch exactly once"
        # the trial prunes its own checkpoints on S3 too, a killed trial's leftovers included:
        # the newest two epochs stay, once each, numbered in the order they were written (but
        # for a copy resume put back under the name Tune's snapshot had for the trial's)
        checkpoints = _checkpoint_epochs(s3, "ons3", trial)
        assert sorted(checkpoints.values()) == [2, 3], (trial, checkpoints)
        put_back = _put_back(s3, "ons3", trial)  # one listing, not one per folder
        written = [checkpoints[n] for n in sorted(checkpoints) if n not in put_back]
        assert written == sorted(written), (trial, checkpoints)
    for trial, epochs in before.items():  # trials under way were continued, not restarted
        assert _epochs(s3, f"runs/ons3/{trial}/result.json")[:len(epochs)] == epochs

    children = _children(tmp_path, "ons3")
    assert sorted(r.data.tags["hpsearch.trial_id"] for r in children) == sorted(
        t.removeprefix("trial_") for t in trials)  # no duplicate MLflow runs
    assert sorted(r.data.tags["hpsearch.trial_dir"] for r in children) == sorted(
        f"{STORAGE}/ons3/{t}" for t in trials)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")]
        assert sorted(steps) == [1, 2, 3]
    parent = client.get_run(children[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["hpsearch.run_dir"] == f"{STORAGE}/ons3"
    assert {f.path for f in client.list_artifacts(parent.info.run_id, "best")} == {
        "best/best.json", "best/model.pt"}  # weights fetched from the S3 checkpoint

    # report, from another folder, by name + --storage and by URI
    rep = _cli(s3, "report", "ons3", "--storage", STORAGE, "--out", "out", cwd=elsewhere)
    assert rep.returncode == 0, rep.stderr[-3000:]
    rows = (elsewhere / "out" / "ons3" / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    rep = _cli(s3, "report", f"{STORAGE}/ons3", "--out", "out2", cwd=elsewhere)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert (elsewhere / "out2" / "ons3" / "trials.csv").read_text().splitlines() == rows

    # sync from the bucket: idempotent (every run found again by id or tag, nothing added)
    synced = _cli(s3, "sync", "ons3", "--storage", STORAGE, cwd=elsewhere)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert "4 trials, 0 runs created, 0 metric points" in synced.stdout, synced.stdout
    assert len(_children(tmp_path, "ons3")) == 4


def test_an_unusable_bucket_is_one_line_before_anything_starts(
        tmp_path: Path, s3: S3Server, tiny_mnist_dir: Path) -> None:
    spec = yaml.safe_load(_spec(tmp_path, "nobucket", tiny_mnist_dir, 1).read_text())
    spec["storage"] = "s3://no-such-bucket/runs"
    (tmp_path / "nobucket.yaml").write_text(yaml.safe_dump(spec))
    out = _cli(s3, "sweep", "nobucket.yaml", cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "hpsearch: error: storage: s3://no-such-bucket/runs cannot be used"), out.stderr
    assert "hpsearch sweep '" not in out.stdout
    assert not (tmp_path / "mlflow.db").exists()

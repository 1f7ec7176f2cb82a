"""Driver faults: ``hpsearch sweep`` killed with SIGKILL mid-sweep, then ``hpsearch resume``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.driver import hpsearch, sigkill_sweep_when
from tests.fakedata import write_mnist

pytestmark = pytest.mark.integration


def _epochs(trial_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()
            if line.strip()]
    return [r["epoch"] for r in rows]


def test_sigkilled_sweep_resumes_with_every_epoch_exactly_once(tmp_path: Path) -> None:
    data = write_mnist(tmp_path / "data", n_train=1200, n_test=200)
    spec = {
        "name": "killed",
        "fixed": {"dataset": "mnist", "data_dir": str(data), "model": "cnn",
                  "channels": [8, 16], "fc_width": 32, "batch_size": 32, "device": "cpu"},
        "space": {"lr": [0.001, 0.003], "optimizer": ["adam", "sgd"]},
        "search": {"algorithm": "grid"},
        "scheduler": {"name": "none"},
        "budget": {"max_epochs": 3},
        "resources": {"cpu": 1},
        "storage": str(tmp_path / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    spec_file = tmp_path / "killed.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "runs" / "killed"
    # kill once some trial has 2 epochs checkpointed
    sigkill_sweep_when(spec_file, lambda: bool(list(run_dir.glob("trial_*/checkpoint_000001"))),
                       cwd=tmp_path)
    before = {d.name: _epochs(d) for d in run_dir.glob("trial_*") if (d / "result.json").exists()}
    assert not all(e == [1, 2, 3] for e in before.values()) or len(before) < 4, \
        "the sweep finished before it was killed; the test proves nothing"

    time.sleep(2)  # let Ray's fate-shared processes of the dead driver go
    out = hpsearch("resume", "killed", "--storage", str(tmp_path / "runs"), cwd=tmp_path,
                   timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = sorted(run_dir.glob("trial_*"))
    assert len(trials) == 4  # no trial created twice
    for d in trials:
        assert _epochs(d) == [1, 2, 3], f"{d.name}: every epoch exactly once"
        last = json.loads((d / "result.json").read_text().splitlines()[-1])
        assert last["status"] == "completed" and "test_top1" in last
    for name, epochs in before.items():  # trials under way were continued, not restarted
        assert _epochs(run_dir / name)[:len(epochs)] == epochs

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("killed")
    children = client.search_runs([exp.experiment_id], "tags.`hpsearch.trial_id` != ''")
    ids = [r.data.tags["hpsearch.trial_id"] for r in children]
    assert sorted(ids) == sorted(d.name.removeprefix("trial_") for d in trials)  # no duplicates
    for r in children:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_top1")]
        assert sorted(steps) == [1, 2, 3], "each epoch in MLflow exactly once"


def test_resume_of_an_unknown_sweep_is_one_line(tmp_path: Path) -> None:
    out = hpsearch("resume", "nope", "--storage", str(tmp_path), cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "no sweep named 'nope'" in out.stderr
    assert "Traceback" not in out.stderr

"""``hpsearch finalize``: the best trial as the report ranks it and the config it is retrained
with; and, for real, a tiny sweep finalized through the command (retrain, MLflow run and
registered model, ``final.json``, the report)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpsearch.search.finalize import best_trial, final_config
from hpsearch.search.report import SweepData, from_ray_dir
from hpsearch.search.sweepdir import DRIVER_FILE, FINAL_FILE, RUNS_FILE
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import ROLE_TAG, Role
from tests.driver import hpsearch

GOLDEN = Path(__file__).resolve().parent / "golden" / "sweeps"


@pytest.fixture
def golden_search(tmp_path: Path) -> Path:
    """A copy of the committed ASHA sweep (completed, stopped, rejected trials)."""
    return Path(shutil.copytree(GOLDEN / "golden_search", tmp_path / "golden_search"))


def test_the_best_trial_is_the_reports_first_completed_one(golden_search: Path) -> None:
    data = from_ray_dir(golden_search)
    best = best_trial(data)
    completed = data.trials[data.trials["status"] == "completed"]
    assert best["status"] == "completed"
    assert best["best_val_top1"] == completed["best_val_top1"].max()
    # the report ranks it first among the completed trials, ahead of any stopped early
    assert best["trial_id"] == data.completed["trial_id"].iloc[0]
    assert best["epochs_run"] == 2


def test_a_running_sweep_or_a_missing_gpu_is_one_line_and_trains_nothing(
        golden_search: Path) -> None:
    import time

    import torch

    from hpsearch.search.finalize import finalize

    storage = str(golden_search.parent)
    (golden_search / DRIVER_FILE).write_text(json.dumps(
        {"state": "running", "heartbeat": time.time(), "host": "h", "pid": 1}))
    with pytest.raises(UserError, match=r"^finalize golden_search: the sweep is still running; "
                                        r"wait for it to end or `hpsearch stop golden_search`"):
        finalize("golden_search", storage=storage)
    (golden_search / DRIVER_FILE).unlink()
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"^finalize golden_search: --device cuda and no CUDA "
                                            r"GPU is visible here; pass --device cpu"):
            finalize("golden_search", storage=storage, device="cuda")
    assert not (golden_search / FINAL_FILE).exists()


def test_no_completed_trial_is_one_line() -> None:
    rows = [{"trial_id": "a", "status": "stopped_early", "best_val_top1": 0.9},
            {"trial_id": "b", "status": "failed", "best_val_top1": math.nan}]
    with pytest.raises(UserError) as err:
        best_trial(SweepData.from_rows("s", rows))
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("finalize s: no trial completed every epoch")
    assert "1 stopped early" in text and "1 failed" in text


def test_the_final_config_trains_on_train_val_without_limits() -> None:
    trial = {"dataset": "mnist", "lr": 0.01, "epochs": 3, "seed": 7, "val_fraction": 0.2,
             "train_limit": 200, "eval_limit": 50, "channels": [4, 8], "device": "cuda"}
    config, dropped = final_config(trial)
    assert dropped == {"train_limit": 200, "eval_limit": 50}
    assert config.val_fraction == 0 and config.train_limit is None and config.eval_limit is None
    assert (config.epochs, config.seed, config.lr, config.channels) == (3, 7, 0.01, (4, 8))
    assert config.device == "cuda"
    config, dropped = final_config({"dataset": "mnist", "epochs": 3}, epochs=5, device="cpu")
    assert (config.epochs, config.device, dropped) == (5, "cpu", {})
    with pytest.raises(UserError, match="device: allowed"):
        final_config(trial, device="tpu")


# --------------------------------------------------------------------------- for real


def _spec(tmp_path: Path, data_dir: Path) -> dict[str, Any]:
    return {
        "name": "fin",
        "fixed": {"dataset": "mnist", "data_dir": str(data_dir), "channels": [4, 8],
                  "fc_width": 16, "batch_size": 64, "device": "cpu", "optimizer": "adam",
                  "train_limit": 300, "eval_limit": 100},
        "space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}},
        "search": {"algorithm": "random", "seed": 0},
        "scheduler": {"name": "none"},
        "budget": {"trials": 2, "max_epochs": 1},
        "resources": {"cpu": 1},
        "storage": str(tmp_path / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }


@pytest.mark.integration  # real Ray, a real subprocess, real MLflow: about a minute
@pytest.mark.usefixtures("ray_local")
@pytest.mark.usefixtures("mlflow_db")
def test_finalize_a_real_sweep(tmp_path: Path, tiny_mnist_dir: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow
    import torch
    from mlflow import MlflowClient

    from hpsearch.search.cli import main
    from hpsearch.search.report import from_mlflow
    from hpsearch.search.runner import run_sweep
    from hpsearch.search.spec import parse_spec
    from hpsearch.trainables.config import parse_trial_config
    from hpsearch.trainables.data import load_data

    spec = _spec(tmp_path, tiny_mnist_dir)
    outcome = run_sweep(parse_spec(spec), yaml.safe_dump(spec), echo=lambda s: None)
    run_dir, uri = Path(outcome.run_dir), spec["tracking"]["uri"]
    best = from_ray_dir(run_dir).completed["trial_id"].iloc[0]

    out = hpsearch("finalize", "fin", "--storage", spec["storage"], timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "dropped train_limit 300 and eval_limit 100" in out.stdout
    final = json.loads((run_dir / FINAL_FILE).read_text())
    assert final["trial_id"] == best and final["epochs"] == 1
    assert final["train_samples"] == 600 and final["test_samples"] == 200  # train+val, all test
    assert final["config"]["val_fraction"] == 0 and final["config"]["eval_limit"] is None
    assert final["params"] > 0 and final["macs"] > 0 and final["wall_seconds"] > 0
    top1 = final["metrics"]["test_top1"]
    assert 0 <= top1 <= 1

    # MLflow: the final run nested under the sweep's parent, the trials' metric names
    client = MlflowClient(tracking_uri=uri)
    info = final["mlflow"]
    run = client.get_run(info["run_id"])
    parent_id = json.loads((run_dir / RUNS_FILE).read_text())[uri]["parent_run_id"]
    assert run.data.tags[ROLE_TAG] == Role.FINAL and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent_id == info["parent_run_id"]
    assert run.data.tags["hpsearch.from_trial_id"] == best
    assert run.data.metrics["test_top1"] == top1
    assert run.data.metrics["params"] == final["params"]
    assert run.data.metrics["macs"] == final["macs"]
    assert run.data.params["val_fraction"] == "0.0" and run.data.params["eval_limit"] == "null"
    version = client.get_model_version("fin", str(info["version"]))
    assert info["version"] == 1 and version.run_id == info["run_id"]

    # the registered model loads on its own and scores the test set as finalize measured it
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model("models:/fin/1")
    test = load_data(parse_trial_config(final["config"]))
    with torch.inference_mode():
        predicted = model(test.test_x.float() / 255).argmax(1)
    assert abs((predicted == test.test_y).float().mean().item() - top1) <= 1 / 200

    # the report: the final row, apart; from MLflow the final run is no trial
    capsys.readouterr()
    assert main(["report", "fin", "--storage", spec["storage"],
                 "--out", str(tmp_path / "results")]) == 0
    shown = capsys.readouterr().out
    assert f"Final model (retrained on train+val, 1 epoch): test top-1 {100 * top1:.2f} %" \
        in shown
    assert "## Final model" in (tmp_path / "results" / "fin" / "report.md").read_text()
    from_tracking = from_mlflow("fin", tracking_uri=uri)
    assert len(from_tracking.trials) == 2 and from_tracking.final["trial_id"] == best

    # a sweep that is not there: one line, exit 2
    out = hpsearch("finalize", "nosuch", "--storage", spec["storage"])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"hpsearch: error: no sweep named 'nosuch' under {tmp_path / 'runs'}/; found: fin"]

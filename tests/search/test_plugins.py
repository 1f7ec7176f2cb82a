"""Plugins end to end, as a user runs them: a plugin package in a folder outside the repository
(the folder the command runs from), real Ray, a real MLflow server.

- a custom model, dataset and augmentation next to the built-in CNN: sweep, MLflow, report;
  a plugin model that raises fails its own trial only;
- a custom training function (no image classifier): its metric is the objective, ASHA stops on
  it, MLflow logs it, the report ranks by it; a trial whose function raises fails alone;
- both kinds: the driver SIGKILLed mid-sweep, then ``resume``, ``sync`` and ``report``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.driver import hpsearch, sigkill_sweep_when
from tests.mlflow_server import MlflowServer
from tests.plugin_pkg import write_module, write_plugin

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as srv:
        yield srv


def _model_spec(name: str, root: Path, server: MlflowServer, **fixed: Any) -> dict[str, Any]:
    return {
        "name": name,
        "plugins": ["my_lab.models", "my_lab.data", "my_lab.augment"],
        "fixed": {"dataset": "blobs", "blob_train": 200, "augment": ["invert"],
                  "invert_p": 0.3, "mlp_width": 16, "channels": [4, 8], "fc_width": 16,
                  "batch_size": 32, "device": "cpu", **fixed},
        "space": {"model": {"type": "grid", "values": ["deep_mlp", "cnn", "broken_net"]},
                  "mlp_depth": {"type": "grid", "values": [1, 2]}},
        "search": {"algorithm": "grid"},
        "scheduler": "none",
        "budget": {"max_epochs": 2},
        "resources": {"cpu": 1, "max_failures": 0},  # a plugin's bug is not retried here
        "storage": str(root / "runs"),
        "tracking": {"uri": server.uri, "experiment": name},
    }


def _trainable_spec(name: str, root: Path, server: MlflowServer, **fixed: Any) -> dict[str, Any]:
    return {
        "name": name,
        "plugins": ["my_lab.loops"],
        "fixed": {"trainable": "line_fit", **fixed},
        "space": {"line_lr": {"type": "grid", "values": [0.01, 0.05, 0.2]},
                  "line_fail": {"type": "grid", "values": [False, True]}},
        "objective": {"metric": "mse"},
        "search": {"algorithm": "grid"},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "budget": {"max_epochs": 3},
        "resources": {"cpu": 1, "max_failures": 0},
        "storage": str(root / "runs"),
        "tracking": {"uri": server.uri, "experiment": name},
    }


def _write(root: Path, spec: dict[str, Any]) -> Path:
    path = root / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _rows(trial_dir: Path) -> list[dict[str, Any]]:
    path = trial_dir / "result.json"
    out: list[dict[str, Any]] = []
    for line in (path.read_text() if path.is_file() else "").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _mlflow_trials(server: MlflowServer, experiment: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'trial'")
    out: dict[str, Any] = {}
    for run in runs:
        trial_id = run.data.tags["hpsearch.trial_id"]
        assert trial_id not in out, f"trial {trial_id} has two MLflow runs"
        out[trial_id] = run
    return out


def _metric_steps(server: MlflowServer, run: Any, key: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(server.uri).get_metric_history(
        run.info.run_id, key))


def _report(root: Path, name: str) -> list[dict[str, str]]:
    out = hpsearch("report", name, "--storage", str(root / "runs"), cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    with (root / "results" / name / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def _check_ray_and_mlflow_agree(root: Path, name: str, server: MlflowServer, metric: str,
                                trials: int) -> dict[str, Any]:
    """Every trial once in Ray's folder and in MLflow, each epoch once in both; the runs."""
    run_dir = root / "runs" / name
    dirs = sorted(d for d in run_dir.glob("trial_*") if d.is_dir())
    assert len(dirs) == trials, [d.name for d in dirs]
    runs = _mlflow_trials(server, name)
    assert set(runs) == {d.name.removeprefix("trial_") for d in dirs}
    for d in dirs:
        rows = _rows(d)
        epochs = [r["epoch"] for r in rows]
        assert epochs == list(range(1, len(epochs) + 1)), (d.name, epochs)
        run = runs[d.name.removeprefix("trial_")]
        assert run.info.status in ("FINISHED", "FAILED"), (d.name, run.info.status)
        if epochs:
            assert _metric_steps(server, run, metric) == epochs, d.name
    return runs


def _sweep_killed_then_resumed(root: Path, spec: dict[str, Any]) -> str:
    """``hpsearch sweep`` SIGKILLed once a trial checkpointed, then ``hpsearch resume`` to the
    end: a plugin's code must come back in the resumed driver and in its workers; the resume's
    output."""
    name = spec["name"]
    run_dir = root / "runs" / name

    def first_checkpoint() -> bool:
        return any(run_dir.glob("trial_*/checkpoint_*"))

    sigkill_sweep_when(_write(root, spec), first_checkpoint, cwd=root, timeout=300)
    time.sleep(1)  # let Ray's fate-shared processes of the dead driver go
    out = hpsearch("resume", name, "--storage", str(root / "runs"), cwd=root, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _sync(root: Path, name: str) -> None:
    out = hpsearch("sync", name, "--storage", str(root / "runs"), cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


# Each sweep's driver is SIGKILLed after its first checkpoint and resumed: the plugin's own
# model, dataset, augmentation or training function run before and after the kill.
def test_own_model_dataset_and_augmentation(tmp_path: Path, server: MlflowServer) -> None:
    root = write_plugin(tmp_path)
    spec = _model_spec("own_model", root, server, blob_train=2000)  # epochs outlast the kill
    out = _sweep_killed_then_resumed(root, spec)
    assert "6 trials (4 completed, 2 failed)" in out, out

    runs = _check_ray_and_mlflow_agree(root, "own_model", server, "val_top1", 6)
    by_model: dict[str, list[Any]] = {}
    for run in runs.values():
        by_model.setdefault(run.data.params["model"], []).append(run)
    assert {m: len(r) for m, r in by_model.items()} == \
        {"deep_mlp": 2, "cnn": 2, "broken_net": 2}
    for run in by_model["broken_net"]:
        assert run.data.tags["hpsearch.status"] == "failed"
        assert "broken_net cannot be built" in run.data.tags.get("hpsearch.error", "")
    for run in [*by_model["deep_mlp"], *by_model["cnn"]]:
        assert run.data.tags["hpsearch.status"] == "completed"
        assert _metric_steps(server, run, "val_top1") == [1, 2]
    for run in by_model["deep_mlp"]:
        # its own settings are params like the built-in ones; the cost is counted
        assert run.data.params["mlp_depth"] in ("1", "2")
        assert run.data.params["invert_p"] == "0.3"
        assert run.data.metrics["params"] > 0 and run.data.metrics["macs"] > 0
        assert run.data.metrics["test_top1"] > 0.5  # the bands are easy to tell apart

    _sync(root, "own_model")  # nothing left to bring over: the same runs after
    assert _check_ray_and_mlflow_agree(root, "own_model", server, "val_top1", 6).keys() == \
        runs.keys()
    rows = _report(root, "own_model")
    assert {r["model"] for r in rows} == {"deep_mlp", "cnn", "broken_net"}
    assert {r["mlp_depth"] for r in rows if r["model"] == "deep_mlp"} == {"1", "2"}
    assert rows[0]["status"] == "completed" and rows[-1]["status"] == "failed"
    assert [r["epochs_run"] for r in rows if r["status"] == "completed"] == ["2"] * 4


def test_own_training_function(tmp_path: Path, server: MlflowServer) -> None:
    root = write_plugin(tmp_path)
    spec = _trainable_spec("own_loop", root, server, line_sleep=1.0)  # outlasts the kill
    out = _sweep_killed_then_resumed(root, spec)
    assert "6 trials (" in out and "3 failed" in out, out
    assert "best mse " in out

    runs = _check_ray_and_mlflow_agree(root, "own_loop", server, "mse", 6)
    failed = [r for r in runs.values() if r.data.tags["hpsearch.status"] == "failed"]
    assert sorted(r.data.params["line_fail"] for r in failed) == ["true"] * 3
    assert all("line_fit was told to fail" in r.data.tags.get("hpsearch.error", "")
               for r in failed)
    ran = [r for r in runs.values() if r.data.params["line_fail"] == "false"]
    assert {r.data.tags["hpsearch.status"] for r in ran} <= {"completed", "stopped_early"}
    assert any(r.data.tags["hpsearch.status"] == "completed" for r in ran)

    _sync(root, "own_loop")
    assert _check_ray_and_mlflow_agree(root, "own_loop", server, "mse", 6).keys() == \
        runs.keys()
    rows = _report(root, "own_loop")
    assert "best_mse" in rows[0] and "line_lr" in rows[0]
    scored = [float(r["best_mse"]) for r in rows if r["best_mse"]]
    assert scored == sorted(scored) and len(scored) == 3  # ranked best (lowest) first
    assert rows[0]["line_lr"] == "0.2"  # the largest step fits the line fastest


_STEPS = '''
    import time
    from typing import Literal

    from pydantic import BaseModel

    from hpsearch import register_trainable


    class Steps(BaseModel):
        steps_role: Literal["fast", "slow_fail"] = "fast"


    @register_trainable("steps", metrics={"score": "max"}, settings=Steps)
    def steps(config, report, state):
        start = 0 if state is None else state["epoch"]
        for epoch in range(start + 1, config.epochs + 1):
            if config.steps_role == "slow_fail":
                time.sleep(3.0)
                if epoch == 2:
                    raise RuntimeError("steps was told to fail")
            report({"score": float(epoch)}, lambda epoch=epoch: {"epoch": epoch})
'''


def test_hyperband_stops_a_trial_paused_in_a_bracket_that_another_trial_left(
        tmp_path: Path, server: MlflowServer) -> None:
    # HyperBand's first bracket (max 3 epochs, reduction 3) holds both trials and runs them to
    # epoch 3 in one round. The fast one gets there and is paused until the other does; the
    # other fails in epoch 2 instead. Ray then leaves the fast one paused for ever (nothing
    # running, nothing pending, the driver spinning), so the sweep would only end at its time
    # limit; it ends when the failure is known, with the fast trial completed.
    write_module(tmp_path, "hb_lab.loops", _STEPS)
    spec = {"name": "hb_left", "plugins": ["hb_lab.loops"], "fixed": {"trainable": "steps"},
            "space": {"steps_role": {"type": "grid", "values": ["fast", "slow_fail"]}},
            "objective": {"metric": "score", "mode": "max"},
            "search": {"algorithm": "grid"},
            "scheduler": {"name": "hyperband", "reduction_factor": 3},
            "budget": {"max_epochs": 3, "time_limit": "90s"},
            "resources": {"cpu": 1, "max_failures": 0},
            "storage": str(tmp_path / "runs"),
            "tracking": {"uri": server.uri, "experiment": "hb_left"}}
    start = time.monotonic()
    out = hpsearch("sweep", str(_write(tmp_path, spec)), cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert time.monotonic() - start < 80, out.stdout  # not ended by its time limit
    assert "time limit" not in out.stdout, out.stdout
    assert "2 trials (1 completed, 1 failed)" in out.stdout, out.stdout
    fast = next(d for d in (tmp_path / "runs" / "hb_left").glob("trial_*")
                if json.loads((d / "params.json").read_text())["steps_role"] == "fast")
    assert [r["epoch"] for r in _rows(fast)] == [1, 2, 3]

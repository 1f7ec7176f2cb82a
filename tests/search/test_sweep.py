"""Real sweeps on real Ray (local, 2 CPUs) over tiny MNIST files: what a user checks afterwards."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpsearch.search.runner import _AUTO_LOGGERS, SweepOutcome, run_sweep
from hpsearch.search.spec import parse_spec
from hpsearch.search.sweepdir import PARAMS_FILE, RESULT_FILE
from hpsearch.trainables.vocab import ROLE_TAG, Role
from tests.fakedata import write_mnist

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local", "mlflow_db")]


def _spec(tmp_path: Path, data_dir: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "t",
        "fixed": {"dataset": "mnist", "data_dir": str(data_dir), "model": "cnn",
                  "channels": [8, 16], "fc_width": 32, "batch_size": 32, "device": "cpu"},
        "space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2},
                  "optimizer": ["adam", "sgd"],
                  "momentum": {"type": "uniform", "low": 0.5, "high": 0.9,
                               "when": {"optimizer": "sgd"}}},
        "search": {"algorithm": "optuna", "seed": 0},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "budget": {"trials": 4, "max_epochs": 3},
        "resources": {"cpu": 1},
        "storage": str(tmp_path / "runs"),
    }
    for key, value in overrides.items():
        spec[key] = value
    for key in spec["space"]:  # a setting is either fixed or searched
        spec["fixed"].pop(key, None)
    return spec


def _run(tmp_path: Path, spec: dict[str, Any]) -> SweepOutcome:
    text = yaml.safe_dump(spec)
    return run_sweep(parse_spec(spec), text, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                     echo=lambda line: None)


def _trials(outcome: SweepOutcome) -> dict[str, list[dict[str, Any]]]:
    """Every trial's reported rows, from Tune's own result files."""
    out = {}
    for d in sorted(outcome.run_dir.glob("trial_*")):
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        out[d.name] = rows
    return out


def _overlapped(tmp_path: Path, name: str) -> bool:
    """Whether two trials ran at once, from their MLflow runs' start and end times
    (milliseconds; the result rows' ``timestamp`` is whole seconds, too coarse for trials of a
    second or two, and Tune's files are copied to the storage with one mtime at the end)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], f"tags.`{ROLE_TAG}` = '{Role.TRIAL}'")
    spans = [(r.info.start_time, r.info.end_time) for r in runs]
    assert len(spans) == 4 and all(end for _, end in spans), spans
    return any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])


@pytest.mark.parametrize("algorithm", ["optuna", "random", "grid"])
def test_each_search_algorithm_runs_with_asha(
        tmp_path: Path, tiny_mnist_dir: Path, algorithm: str) -> None:
    spec = _spec(tmp_path, tiny_mnist_dir, search={"algorithm": algorithm, "seed": 1})
    if algorithm == "grid":
        spec["space"] = {"lr": [0.001, 0.01], "optimizer": ["adam", "sgd"]}
    outcome = _run(tmp_path, spec)
    trials = _trials(outcome)
    assert outcome.trials == len(trials) == 4
    statuses = {rows[-1]["status"] for rows in trials.values()}
    assert statuses <= {"completed", "running"}  # running at the end = stopped by ASHA
    for rows in trials.values():
        epochs = [r["epoch"] for r in rows]
        assert epochs == list(range(1, len(epochs) + 1))  # no epoch repeated or skipped
        if rows[-1]["status"] == "completed":
            assert epochs[-1] == 3 and "test_top1" in rows[-1]
        if rows[-1]["config"]["optimizer"] == "adam":
            assert "momentum" not in rows[-1]["config"] or algorithm == "grid"
    assert outcome.best is not None and 0 < outcome.best["value"] <= 1
    configs = {json.dumps(rows[0]["config"], sort_keys=True) for rows in trials.values()}
    assert len(configs) == 4  # four different configs
    for trial_dir in outcome.run_dir.glob("trial_*"):  # Tune's JSON and CSV loggers only
        names = {f.name for f in trial_dir.iterdir()}
        assert {RESULT_FILE, PARAMS_FILE, "progress.csv"} <= names, names
        assert not any(n.startswith("events.out.tfevents") for n in names), names
    assert _AUTO_LOGGERS not in os.environ  # set for the fit only


def test_two_trials_run_at_once_on_two_cpus(tmp_path: Path) -> None:
    """Both slots train: trials of a few seconds each, longer than a second trial actor takes
    to start (with actors reused, trials shorter than that all run in the first actor)."""
    data = write_mnist(tmp_path / "data", n_train=4000, n_test=100)
    spec = _spec(tmp_path, data, scheduler={"name": "none"})
    outcome = _run(tmp_path, spec)
    assert outcome.trials == 4
    assert _overlapped(tmp_path, spec["name"]), "two trials should run at once on 2 CPUs"


def test_optuna_is_told_the_truth_about_early_stopped_trials(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    good, bad = {"lr": 0.01, "optimizer": "adam"}, {"lr": 1e-6, "optimizer": "adam"}
    spec = _spec(tmp_path, tiny_mnist_dir,
                 space={"lr": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
                        "optimizer": ["adam", "sgd"]},
                 search={"algorithm": "optuna", "seed": 0,
                         "start_points": [good, good, bad, bad]},
                 resources={"cpu": 1, "max_concurrent": 2})
    outcome = _run(tmp_path, spec)
    trials = _trials(outcome)
    stopped = [t for t, rows in trials.items() if rows[-1]["status"] == "running"]
    assert stopped, "ASHA should stop a trial stuck at chance accuracy"
    state_file = max(outcome.run_dir.glob("searcher-state-*.pkl"))
    study = pickle.loads(state_file.read_bytes())["_ot_study"]
    states = sorted(str(t.state).split(".")[-1] for t in study.trials)
    assert states.count("PRUNED") == len(stopped)
    assert states.count("COMPLETE") == len(trials) - len(stopped)
    pruned = [t for t in study.trials if str(t.state).endswith("PRUNED")]
    assert all(t.intermediate_values for t in pruned)  # their per-epoch scores are known


def test_cost_constraints_reject_configs_before_training(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _spec(tmp_path, tiny_mnist_dir, search={"algorithm": "grid"},
                 space={"channels": [[4, 8], [64, 128]]}, scheduler={"name": "none"},
                 constraints={"max_params": 20000}, budget={"max_epochs": 1})
    trials = _trials(_run(tmp_path, spec))
    by_width = {tuple(rows[0]["config"]["channels"]): rows for rows in trials.values()}
    rejected = by_width[(64, 128)]
    assert len(rejected) == 1 and rejected[0]["status"] == "rejected"
    assert rejected[0]["params"] > 20000 and rejected[0]["epoch"] == 0
    assert by_width[(4, 8)][-1]["status"] == "completed"


def test_ofat_runs_the_baseline_and_one_change_at_a_time(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _spec(tmp_path, tiny_mnist_dir, design="ofat",
                 baseline={"activation": "relu", "lr": 0.01},
                 space={"activation": ["relu", "tanh"], "lr": [0.01, 0.05, 0.001]},
                 search={"algorithm": "grid"}, scheduler={"name": "none"},
                 budget={"max_epochs": 1})
    trials = _trials(_run(tmp_path, spec))
    configs = [(r[0]["config"]["activation"], r[0]["config"]["lr"]) for r in trials.values()]
    assert sorted(configs) == sorted([("relu", 0.01), ("tanh", 0.01), ("relu", 0.05),
                                      ("relu", 0.001)])


def test_multi_objective_sweep_records_both_objectives(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _spec(tmp_path, tiny_mnist_dir, scheduler={"name": "none"},
                 objective={"metrics": [{"name": "val_top1", "mode": "max"},
                                        {"name": "params", "mode": "min"}]},
                 space={"channels": [[4, 8], [8, 16], [16, 32]]},
                 budget={"trials": 3, "max_epochs": 1})
    outcome = _run(tmp_path, spec)
    state_file = max(outcome.run_dir.glob("searcher-state-*.pkl"))
    study = pickle.loads(state_file.read_bytes())["_ot_study"]
    assert len(study.directions) == 2
    assert all(len(t.values) == 2 for t in study.trials if t.values)
    assert study.best_trials  # a Pareto front exists

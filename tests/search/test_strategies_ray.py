"""Strategies on real Ray: a sweep that ends itself on its target, a warm-started sweep, and
``resume --set budget.trials=N`` continuing the same study with a larger budget."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpsearch.search.runner import resume_sweep, run_sweep
from hpsearch.search.spec import apply_overrides, parse_spec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local", "mlflow_db")]


def _spec(tmp_path: Path, data_dir: Path, name: str, **sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "fixed": {"dataset": "mnist", "data_dir": str(data_dir), "channels": [4, 8],
                  "fc_width": 16, "batch_size": 64, "device": "cpu", "optimizer": "adam"},
        "space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}},
        "search": {"algorithm": "optuna", "seed": 0},
        "scheduler": {"name": "none"},
        "budget": {"trials": 3, "max_epochs": 1},
        "resources": {"cpu": 1},
        "storage": str(tmp_path / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    spec.update(sections)
    return spec


def _run(spec: dict[str, Any]) -> tuple[Any, list[str]]:
    lines: list[str] = []
    outcome = run_sweep(parse_spec(spec), yaml.safe_dump(spec), echo=lines.append)
    return outcome, lines


def _trial_rows(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return {d.name: [json.loads(x) for x in (d / "result.json").read_text().splitlines()]
            for d in sorted(run_dir.glob("trial_*"))}


def _study(run_dir: Path) -> Any:
    """The Optuna study as the searcher saved it with Tune's newest snapshot."""
    return pickle.loads(max(run_dir.glob("searcher-state-*.pkl")).read_bytes())["_ot_study"]


def test_target_warm_start_and_a_larger_budget_on_resume(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    # 1. a target every first epoch reaches: the sweep ends itself and says why
    first, lines = _run(_spec(tmp_path, tiny_mnist_dir, "first",
                              budget={"trials": 8, "max_epochs": 2,
                                      "target": {"val_top1": 0.0}},
                              search={"algorithm": "optuna", "sampler": "gp", "seed": 0}))
    ended = [line for line in lines if line.startswith("sweep ended early: target reached")]
    assert len(ended) == 1 and "val_top1" in ended[0] and "(target 0)" in ended[0]
    assert first.trials < 8  # the budget was not used up
    # the trials its end cut were running: counted so, and their MLflow runs ended too
    assert first.counts.get("ended with the sweep", 0) >= 1, first.counts
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    cut = client.search_runs([client.get_experiment_by_name("first").experiment_id],
                             "tags.`hpsearch.role` = 'trial'")
    assert cut and all(r.info.status != "RUNNING" for r in cut), [
        (r.data.tags["hpsearch.trial_id"], r.info.status) for r in cut]
    assert {r.data.tags["hpsearch.status"] for r in cut} <= {"completed", "stopped_early"}
    assert any(line.startswith("hpsearch sweep 'first':") and "optuna (gp)" in line
               for line in lines)

    # 2. a new sweep warm-started from it: its sampler gets first's trials
    second_spec = _spec(tmp_path, tiny_mnist_dir, "second",
                        search={"algorithm": "optuna", "seed": 1, "warm_start": ["first"]},
                        budget={"trials": 2, "max_epochs": 2})
    second, lines = _run(second_spec)
    warm = [line for line in lines if line.startswith("warm start from first: ")]
    assert len(warm) == 1, lines
    given = int(warm[0].split(": ")[1].split()[0])
    assert given >= 1
    study = _study(second.run_dir)
    assert len(study.trials) == given + 2  # the earlier trials, then this sweep's own two

    # 3. resume with a larger budget: the same study goes on to 4 trials, each once
    saved = json.loads((second.run_dir / "hpsearch.json").read_text())["spec"]
    lines = []
    outcome = resume_sweep("second", storage=str(tmp_path / "runs"), echo=lines.append,
                           spec=parse_spec(apply_overrides(saved, {"budget.trials": 4})))
    assert any("the budget is now 4 trials (was 2; 2 started)" in line for line in lines)
    rows = _trial_rows(second.run_dir)
    assert outcome.trials == len(rows) == 4
    for trial_rows in rows.values():
        assert [r["epoch"] for r in trial_rows] == [1, 2]  # every epoch once
    study = _study(second.run_dir)
    assert len(study.trials) == given + 4  # one study: no second warm start
    meta = json.loads((second.run_dir / "hpsearch.json").read_text())
    assert meta["spec"]["budget"]["trials"] == 4

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("second")
    runs = client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'trial'")
    assert sorted(r.data.tags["hpsearch.trial_id"] for r in runs) == sorted(
        r[0]["trial_id"] for r in rows.values())


def test_a_larger_budget_cannot_be_smaller_than_what_started(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    from hpsearch.trainables.errors import UserError

    done, _ = _run(_spec(tmp_path, tiny_mnist_dir, "small"))
    saved = json.loads((done.run_dir / "hpsearch.json").read_text())["spec"]
    with pytest.raises(UserError, match=r"budget.trials: 3 trials have already started, so the "
                                        r"budget cannot be 2; give at least 3"):
        resume_sweep("small", storage=str(tmp_path / "runs"), echo=lambda _: None,
                     spec=parse_spec(apply_overrides(saved, {"budget.trials": 2})))


def test_hyperband_pauses_and_resumes_trials_without_repeating_an_epoch(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _spec(tmp_path, tiny_mnist_dir, "hb",
                 space={"lr": {"type": "loguniform", "low": 1e-5, "high": 3e-2}},
                 scheduler={"name": "hyperband", "reduction_factor": 3},
                 budget={"trials": 6, "max_epochs": 3})
    outcome, lines = _run(spec)
    rows = _trial_rows(outcome.run_dir)
    assert outcome.trials == len(rows) == 6
    for trial_rows in rows.values():  # paused at a rung, resumed from its checkpoint
        assert [r["epoch"] for r in trial_rows] == list(range(1, len(trial_rows) + 1))
    ran = sorted(len(r) for r in rows.values())
    assert ran[-1] == 3 and ran[0] < 3, ran  # some trials went the distance, some did not
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("hb")
    for run in client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'trial'"):
        history = client.get_metric_history(run.info.run_id, "val_top1")
        trial = f"trial_{run.data.tags['hpsearch.trial_id']}"
        assert sorted(m.step for m in history) == [r["epoch"] for r in rows[trial]]

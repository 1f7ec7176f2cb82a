"""Population-based training on real Ray: a trial continues from another trial's checkpoint
with mutated settings, and the copy is in its results, in MLflow and in the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpsearch.search.runner import run_sweep
from hpsearch.search.spec import parse_spec
from hpsearch.trainables.vocab import COPIED

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("mlflow_db")]


def pbt_spec(tmp_path: Path, data_dir: Path, name: str = "pbt") -> dict[str, Any]:
    """4 trials of 2 epochs, meeting after the first: the bottom trial copies the top one
    (synchronous PBT always has both), mutating lr and momentum."""
    return {
        "name": name,
        "fixed": {"dataset": "mnist", "data_dir": str(data_dir), "channels": [4, 8],
                  "fc_width": 16, "batch_size": 64, "device": "cpu", "optimizer": "sgd"},
        "space": {"lr": {"type": "loguniform", "low": 1.0e-5, "high": 0.5},
                  "momentum": {"type": "uniform", "low": 0.5, "high": 0.95}},
        "search": {"seed": 3},
        "scheduler": {"name": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.25,
                      "resample_probability": 0.0},
        "budget": {"trials": 4, "max_epochs": 2},
        "resources": {"cpu": 1},
        "storage": str(tmp_path / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }


def trial_rows(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each trial's results by trial id, in file order."""
    out = {}
    for d in sorted(run_dir.glob("trial_*")):
        rows = [json.loads(x) for x in (d / "result.json").read_text().splitlines()]
        out[rows[0]["trial_id"]] = rows
    return out


def copies(rows: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any], int]]:
    """(trial id, the copy it reported, the epoch it reported it with)."""
    return [(t, r[COPIED], r["epoch"]) for t, rs in rows.items() for r in rs if COPIED in r]


@pytest.mark.usefixtures("ray_local")
def test_a_trial_continues_from_another_trials_checkpoint_with_mutated_settings(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = pbt_spec(tmp_path, tiny_mnist_dir)
    lines: list[str] = []
    outcome = run_sweep(parse_spec(spec), yaml.safe_dump(spec), echo=lines.append)
    rows = trial_rows(outcome.run_dir)
    assert outcome.trials == len(rows) == 4
    for trial_rows_ in rows.values():  # epochs in order, each once: copies are of one epoch
        assert [r["epoch"] for r in trial_rows_] == [1, 2]
    found = copies(rows)
    assert found, "no trial copied another"
    trial, copy, epoch = found[0]
    assert copy["from"] != trial and copy["from"] in rows and epoch == copy["epoch"] + 1
    # it trained on from the other trial's weights and settings: lr x0.8 or x1.2 of the other's
    donor_lr = next(r for r in rows[copy["from"]] if r["epoch"] == copy["epoch"])["config"]["lr"]
    old, new = copy["changes"]["lr"]
    assert old == donor_lr
    assert new in (pytest.approx(old * 0.8), pytest.approx(old * 1.2), 0.5)  # 0.5: clipped
    after = next(r for r in rows[trial] if r["epoch"] == epoch)
    assert after["config"]["lr"] == new and after["lr"] == pytest.approx(new)  # the optimizer's

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("pbt")
    run = client.search_runs([exp.experiment_id],
                             f"tags.`hpsearch.trial_id` = '{trial}'")[0]
    tags = run.data.tags
    assert tags["hpsearch.copied_from"] == copy["from"]
    assert tags["hpsearch.copied_epoch"] == str(copy["epoch"])
    assert f"lr: {old:g} → {new:g}" in tags["hpsearch.copied_changes"]
    assert json.loads(tags["hpsearch.lineage"])[-1]["from"] == copy["from"]
    assert json.loads(tags["hpsearch.settings_now"])["lr"] == new  # params keep the start
    assert float(run.data.params["lr"]) == rows[trial][0]["config"]["lr"]
    lrs = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "lr")}
    assert lrs[epoch] == pytest.approx(new)  # lr is logged per epoch: PBT changes it

    # the report, from either source: the copy in its lineage table, the settings it ended with
    from hpsearch.search.report.load import from_mlflow, from_ray_dir

    for data in (from_ray_dir(outcome.run_dir),
                 from_mlflow("pbt", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")):
        row = data.lineage[data.lineage["trial_id"] == trial].iloc[0]
        assert (row["epoch"], row["copied_from"]) == (copy["epoch"], copy["from"])
        assert row["changes"] == tags["hpsearch.copied_changes"]
        ended = data.trials.set_index("trial_id").loc[trial]
        assert ended["lr"] == pytest.approx(new)


def test_a_pbt_sweep_killed_after_a_copy_resumes_with_every_epoch_and_copy_once(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    """The driver SIGKILLed once a trial reported training on a copy; ``hpsearch resume``
    finishes the population (the scheduler Tune does not save starts where the trials stand),
    each epoch once, and MLflow's lineage is the results'. Trials that trained an epoch Tune
    never recorded report it again after the resume, without a checkpoint; a trial that copies
    one of them at the next meeting must get that epoch's checkpoint, not the one before."""
    from mlflow import MlflowClient

    from tests.driver import hpsearch, sigkill_sweep_when

    spec = pbt_spec(tmp_path, tiny_mnist_dir, name="pbtkill")
    spec["budget"]["max_epochs"] = 3
    path = tmp_path / "pbtkill.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "runs" / "pbtkill"

    def copied() -> bool:
        return any(COPIED in line for d in run_dir.glob("trial_*")
                   for line in _lines(d / "result.json"))

    sigkill_sweep_when(path, copied, cwd=tmp_path)
    out = hpsearch("resume", "pbtkill", "--storage", str(tmp_path / "runs"), cwd=tmp_path,
                   timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = trial_rows(run_dir)
    assert len(rows) == 4
    for trial_rows_ in rows.values():
        assert [r["epoch"] for r in trial_rows_] == [1, 2, 3]
    found = copies(rows)
    assert found
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("pbtkill")
    for run in client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'trial'"):
        trial = run.data.tags["hpsearch.trial_id"]
        mine = [(c["epoch"], c["from"]) for t, c, _ in found if t == trial]
        logged = json.loads(run.data.tags.get("hpsearch.lineage", "[]"))
        assert [(e["epoch"], e["from"]) for e in logged] == mine, trial
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")]
        assert sorted(steps) == [1, 2, 3], trial


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []

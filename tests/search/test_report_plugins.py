"""The report of a plugin trainable's sweep (a user's own training function, no image
classifier): its own metrics are columns, the classifier's empty ones are not, and all of it
comes from the trials' results, so a report made where the plugin cannot be imported says so
in one line and loses nothing.

Fast: a sweep folder written as a real one looks (``hpsearch.json``, Tune's snapshot, each
trial's ``params.json``/``result.json``/``error.txt``). The integration test runs a real one."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from hpsearch.search.cli import main
from hpsearch.search.report import factor_tables, from_ray_dir, leaderboard, write_report
from hpsearch.search.sweepdir import (
    ERROR_FILE,
    META_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    STATE_GLOB,
    trial_dirname,
)
from hpsearch.trainables.vocab import Status, TuneStatus
from tests.driver import hpsearch
from tests.plugin_pkg import write_plugin

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "lost_lab.loops"  # imported by the sweep; nowhere to be found where it is reported
# A line_fit sweep as `hpsearch sweep` saves its spec (validated, defaults filled in).
SPEC = {"name": "own_loop", "plugins": [PLUGIN],
        "fixed": {"trainable": "line_fit", "data_dir": "/lab/ada/data"},
        "space": {"line_lr": {"type": "grid", "values": [0.01, 0.02, 0.05, 0.2]}},
        "objective": {"metric": "mse", "mode": "min"},
        "search": {"algorithm": "grid", "start_points": []},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2.0},
        "budget": {"max_epochs": 4},
        "resources": {"cpu": 1.0, "gpu": 0.0, "max_concurrent": 1, "max_failures": 0},
        "storage": "/lab/ada/runs", "tracking": {}}
# trial -> (line_lr, Tune's status, mse per epoch): ASHA (rungs 1 and 2) stopped c and d
TRIALS = {"a": (0.2, TuneStatus.TERMINATED, [0.5, 0.1, 0.02, 0.01]),
          "b": (0.05, TuneStatus.TERMINATED, [0.9, 0.5, 0.3, 0.2]),
          "c": (0.01, TuneStatus.TERMINATED, [2.0]),
          "d": (0.02, TuneStatus.TERMINATED, [1.6, 1.2]),
          "f": (0.2, TuneStatus.ERROR, [])}


def _rows(trial_id: str, config: dict[str, Any], mse: list[float]) -> list[dict[str, Any]]:
    """What Tune writes to ``result.json`` for each epoch line_fit reported."""
    return [{"mse": v, "slope": 3.0 - v, "epoch": e, "status": Status.COMPLETED
             if e == SPEC["budget"]["max_epochs"] else Status.RUNNING,
             "node_id": "n1", "gpu_ids": "", "timestamp": 1_800_000_000 + e, "done": False,
             "training_iteration": e, "trial_id": trial_id, "time_this_iter_s": 0.1,
             "time_total_s": 0.1 * e, "pid": 7, "hostname": "labhost", "node_ip": "10.0.0.7",
             "config": config, "time_since_restore": 0.1 * e, "iterations_since_restore": e}
            for e, v in enumerate(mse, start=1)]


def write_plugin_sweep(root: Path) -> Path:
    """A finished line_fit sweep's folder under ``root``; the folder."""
    run_dir = root / SPEC["name"]
    run_dir.mkdir(parents=True)
    (run_dir / META_FILE).write_text(json.dumps({
        "name": SPEC["name"], "spec": SPEC, "spec_yaml": yaml.safe_dump(SPEC, sort_keys=False),
        "storage": SPEC["storage"], "tracking_uri": "sqlite:///mlflow.db",
        "experiment": SPEC["name"], "created": "2026-01-01T00:00:00+0000"}))
    state = []
    for trial_id, (lr, status, mse) in TRIALS.items():
        folder = run_dir / trial_dirname(trial_id)
        folder.mkdir()
        config = {**SPEC["fixed"], "epochs": SPEC["budget"]["max_epochs"], "line_lr": lr}
        (folder / PARAMS_FILE).write_text(json.dumps(config))
        (folder / RESULT_FILE).write_text("".join(f"{json.dumps(r)}\n"
                                                  for r in _rows(trial_id, config, mse)))
        if status == TuneStatus.ERROR:
            (folder / ERROR_FILE).write_text("Traceback ...\nValueError: line_fit was told to "
                                             f"fail in {run_dir}/{folder.name}\n")
        state.append([json.dumps({"trial_id": trial_id, "status": status,
                                  "relative_logdir": folder.name, "config": config}),
                      json.dumps({"last_result": {"epoch": len(mse)}})])
    (run_dir / STATE_GLOB.replace("*", "2026-01-01_00-00-00")).write_text(
        json.dumps({"trial_data": state}))
    return run_dir


@pytest.fixture
def plugin_sweep(tmp_path: Path) -> Path:
    return write_plugin_sweep(tmp_path / "runs")


def test_the_plugins_own_metrics_come_from_the_results_without_its_code(
        plugin_sweep: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        data = from_ray_dir(plugin_sweep)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and f"cannot import plugin '{PLUGIN}'" in warned[0], warned
    assert "\n" not in warned[0]
    # the saved spec, unchecked, still ranks and scores the sweep
    assert data.spec is None and data.objective == ("mse", "min")
    assert data.meta["max_epochs"] == 4 and data.meta["rungs"] == (1, 2)
    assert data.own_metrics == ("mse", "slope")
    assert list(data.trials["trial_id"]) == ["a", "b", "d", "c", "f"]  # lowest mse first
    trials = data.trials.set_index("trial_id")
    assert trials.loc["a", "best_mse"] == 0.01 and trials.loc["d", "best_mse"] == 1.2
    assert trials.loc["a", "slope"] == pytest.approx(2.99)  # after its last epoch
    assert list(trials["status"]) == ["completed", "completed", "stopped_early",
                                      "stopped_early", "failed"]
    assert list(data.history.columns[-2:]) == ["mse", "slope"]


def test_a_plugin_sweeps_tables_show_its_metrics_not_the_classifiers(
        plugin_sweep: Path, tmp_path: Path) -> None:
    data = from_ray_dir(plugin_sweep)
    board = leaderboard(data)
    assert list(board.columns) == ["Trial", "Line lr", "Best mse", "slope", "Epochs run",
                                   "Status"]  # no params, MACs or accuracy: none reported
    assert list(board.iloc[0]) == ["a", "0.2", "0.01", "2.99", "4", "completed"]
    lr = factor_tables(data)["line_lr"].set_index("value")
    assert (lr.loc["0.01", "reached_1"], lr.loc["0.02", "reached_2"]) == (1, 1)
    assert lr.loc["0.02", "mean_at_1"] == pytest.approx(1.6)

    files = write_report(data, tmp_path / "out")
    csv = pd.read_csv(files["trials.csv"])
    assert {"best_mse", "slope", "line_lr", "trainable"} <= set(csv.columns)
    assert not {"best_val_top1", "best_val_loss", "test_top1", "params", "macs",
                "data_dir"} & set(csv.columns)
    md = files["report.md"].read_text()
    assert "Best trial a: mse 0.01, slope 2.99 (line lr 0.2)." in md
    assert "| Trial | Line lr | Best mse | slope | Epochs run | Status |" in md
    assert "| Line lr | Trials | Completed | Best mse | Mean mse | Reached epoch 1 | Mean mse " \
           "at epoch 1 | Reached epoch 2 | Mean mse at epoch 2 |" in md
    assert "- Best mse: the lowest mse over the epochs the trial ran; ranks the trials." in md
    assert "- slope: reported by the trainable itself; each after the last epoch" in md
    for absent in ("Val acc", "Test acc", "Params", "MACs", "## Cost", "confusion"):
        assert absent not in md, absent
    assert "![mse and slope per epoch of the top 4 trials](curves.png)" in md
    assert "curves.png" in files and "cost.png" not in files
    assert "/lab/ada" not in md + files["trials.csv"].read_text()


def test_report_where_the_plugin_is_missing_warns_in_one_line(
        plugin_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert main(["report", str(plugin_sweep), "--out", str(tmp_path / "out")]) == 0
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        f"report: own_loop/{META_FILE}: plugins[0]: cannot import plugin '{PLUGIN}': "
        f"ModuleNotFoundError: No module named '{PLUGIN.split('.')[0]}'"]
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("sweep 'own_loop': 5 trials (2 completed, 2 stopped early, "
                                   "1 failed)")
    assert "Best mse" in out and "slope" in out and "Val acc" not in out


# --------------------------------------------------------------------------- a real sweep


@pytest.mark.integration
def test_a_real_plugin_sweep_reports_the_same_with_or_without_the_plugin(tmp_path: Path) -> None:
    """``hpsearch sweep`` of tests.plugin_pkg's line_fit, then ``hpsearch report`` where the
    plugin imports and where it does not: the same trials.csv, one warning line the second
    time."""
    root = write_plugin(tmp_path / "lab")
    spec = {"name": "line", "plugins": ["my_lab.loops"], "fixed": {"trainable": "line_fit"},
            "space": {"line_lr": {"type": "grid", "values": [0.01, 0.2]}},
            "objective": {"metric": "mse"}, "search": {"algorithm": "grid"},
            "scheduler": "none", "budget": {"max_epochs": 2},
            "resources": {"cpu": 1, "max_failures": 0}, "storage": str(root / "runs"),
            "tracking": {"uri": f"sqlite:///{root}/mlflow.db"}}
    (root / "line.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # the worktree's hpsearch, wherever the command runs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    out = hpsearch("sweep", "line.yaml", cwd=root, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    here = hpsearch("report", "line", "--storage", str(root / "runs"), "--out",
                    str(tmp_path / "here"), cwd=root, env=env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    there = hpsearch("report", str(root / "runs" / "line"), "--out", str(tmp_path / "there"),
                     cwd=elsewhere, env=env)
    assert here.returncode == there.returncode == 0, (here.stderr + there.stderr)[-3000:]
    assert "my_lab" not in here.stderr
    warned = [line for line in there.stderr.splitlines() if "my_lab" in line]
    assert len(warned) == 1 and "cannot import plugin 'my_lab.loops'" in warned[0], there.stderr
    # MLflow, where the plugin cannot be imported either: the same trials
    mlflow = hpsearch("report", "line", "--storage", str(elsewhere), "--tracking-uri",
                      spec["tracking"]["uri"], "--out", str(tmp_path / "mlflow"), cwd=elsewhere,
                      env=env)
    assert mlflow.returncode == 0, mlflow.stderr[-3000:]
    assert len([line for line in mlflow.stderr.splitlines() if "my_lab" in line]) == 1
    tables = [pd.read_csv(tmp_path / where / "line" / "trials.csv")
              for where in ("here", "there", "mlflow")]
    for table in tables:
        assert {"best_mse", "slope", "line_lr"} <= set(table.columns)
        assert not {"best_val_top1", "test_top1", "params", "macs"} & set(table.columns)
        assert list(table["status"]) == ["completed", "completed"]
        assert table["best_mse"].is_monotonic_increasing  # lowest first
    pd.testing.assert_frame_equal(*(t.sort_index(axis=1) for t in tables[:2]))
    shared = ["trial_id", "status", "line_lr", "best_mse", "best_epoch", "slope", "epochs_run"]
    pd.testing.assert_frame_equal(tables[0][shared], tables[2][shared])

"""The report of a plugin trainable's sweep (a user's own training function, no image
classifier): its own metrics are columns, the classifier's empty ones are not, and all of it
comes from the trials' results, so a report made where the plugin cannot be imported says so
in one line and loses nothing.

Fast: a sweep folder written as a real one looks (``hpsearch.json``, Tune's snapshot, each
trial's ``params.json``/``result.json``/``error.txt``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpsearch.search.report import from_ray_dir
from hpsearch.search.sweepdir import (
    ERROR_FILE,
    META_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    STATE_GLOB,
    trial_dirname,
)
from hpsearch.trainables.vocab import Status, TuneStatus

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

"""``hpsearch list``, ``status`` and ``stop`` on a real local sweep, as a user runs them beside
it; then ``stop`` (graceful), ``resume``, ``stop --now``, ``resume`` to the end: every trial and
every epoch once in Ray's record and in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.search.sweepdir import DRIVER_FILE
from tests.driver import hpsearch
from tests.fakedata import write_mnist
from tests.search.test_kill_resume import NAME, _check_consistent, _rows, _spec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("mlflow_db")]


def _driver_file(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / DRIVER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen, timeout: float = 240,
          ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before: {what}\n"
                        f"{proc.stdout.read()[-3000:] if proc.stdout else ''}")
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for: {what}")


def _a_trial_past_epoch_1(run_dir: Path) -> bool:
    running = _driver_file(run_dir).get("progress", {}).get("running", [])
    return any(r["epoch"] >= 1 for r in running)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hpsearch", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _ends_stopped(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped after" in out and f"hpsearch resume {NAME}` continues it" in out, out[-3000:]
    return out


def _no_finished_epoch_lost(run_dir: Path) -> None:
    """Every trial Tune left unfinished resumes from a checkpoint of its last recorded epoch."""
    state = json.loads(sorted(run_dir.glob("experiment_state-*.json"))[-1].read_text())
    unfinished = [json.loads(e[0]) for e in state["trial_data"]
                  if json.loads(e[0])["status"] not in ("TERMINATED", "ERROR")]
    assert unfinished, "the stop came after every trial had ended: nothing was tested"
    for trial in unfinished:
        trial_dir = run_dir / f"trial_{trial['trial_id']}"
        epochs = [r["epoch"] for r in _rows(trial_dir)]
        checkpoints = sorted(trial_dir.glob("checkpoint_*"))
        if not epochs:  # started after the stop request: nothing to keep
            continue
        assert len(checkpoints) and (checkpoints[-1] / "COMPLETE").exists(), trial_dir
        assert int(checkpoints[-1].name.removeprefix("checkpoint_")) + 1 >= max(epochs), \
            f"trial {trial['trial_id']}: epochs {epochs}, newest checkpoint {checkpoints[-1]}"


def test_list_status_stop_resume_exactly_once(tmp_path: Path) -> None:
    # Epochs of a few seconds (the driver file is rewritten every 5 s): a stop lands while
    # trials train, however fast the machine.
    data = write_mnist(tmp_path / "data", n_train=15000, n_test=200)
    spec = _spec(tmp_path, data)
    runs, run_dir = tmp_path / "runs", tmp_path / "runs" / NAME
    storage = ["--storage", str(runs)]

    sweep = _start(["sweep", str(spec)], tmp_path)
    _wait("a trial past epoch 1", lambda: _a_trial_past_epoch_1(run_dir), sweep)

    listed = hpsearch("list", *storage, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert row[:2] == [NAME, "running"] and row[2].endswith("/6"), listed.stdout
    status = hpsearch("status", NAME, *storage, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"sweep '{NAME}': running (local ")
    assert " running, " in status.stdout and "/6 done" in status.stdout
    assert "running: trial " in status.stdout and " epoch " in status.stdout
    assert f"MLflow: sqlite:///{tmp_path}/mlflow.db" in status.stdout

    stop = hpsearch("stop", NAME, *storage, cwd=tmp_path)
    assert stop.returncode == 0, stop.stderr
    assert "finish their current epoch" in stop.stdout
    out = _ends_stopped(sweep)
    assert "stop requested:" in out
    # none of the libraries' start-up notices: Ray's on token auth, Optuna's new study,
    # MLflow's new tables (this sweep's store is new)
    assert not any(n in out for n in ("Token authentication", "A new study created",
                                      "MLflow database tables")), out[:2000]
    _no_finished_epoch_lost(run_dir)
    listed = hpsearch("list", *storage, "--json", cwd=tmp_path)
    (view,) = json.loads(listed.stdout)
    assert view["state"] == "stopped" and view["done"] < 6, view
    again = hpsearch("stop", NAME, *storage, cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert "not running (it is stopped)" in again.stderr

    resume = _start(["resume", NAME, *storage], tmp_path)
    _wait("the resumed sweep running a trial past an epoch",
          lambda: _driver_file(run_dir).get("state") == "running"
          and _a_trial_past_epoch_1(run_dir), resume)
    now = hpsearch("stop", NAME, *storage, "--now", cwd=tmp_path)
    assert now.returncode == 0, now.stderr
    assert "now" in now.stdout
    _ends_stopped(resume)
    assert hpsearch("list", *storage, cwd=tmp_path).stdout.splitlines()[1].split()[1] \
        == "stopped"

    final = hpsearch("resume", NAME, *storage, cwd=tmp_path, timeout=400)
    assert final.returncode == 0, final.stderr[-3000:]
    _check_consistent(tmp_path, run_dir, final.stdout + final.stderr)
    (view,) = json.loads(hpsearch("list", *storage, "--json", cwd=tmp_path).stdout)
    assert view["state"] == "finished" and view["done"] == view["total"] == 6, view
    status = hpsearch("status", NAME, *storage, cwd=tmp_path)
    assert status.stdout.startswith(f"sweep '{NAME}': finished"), status.stdout
    assert "6/6 done" in status.stdout

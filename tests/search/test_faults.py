"""Trial faults on real Ray: a worker killed with SIGKILL mid-epoch, a trial that keeps failing,
a diverging trial. The sweep always finishes and says what happened to each trial."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from hpsearch.search.runner import SweepOutcome, run_sweep
from hpsearch.search.spec import parse_spec
from tests.fakedata import write_mnist

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local", "mlflow_db")]


def _spec(tmp_path: Path, data_dir: Path, space: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"name": "faults",
            "fixed": {"dataset": "mnist", "data_dir": str(data_dir), "channels": [16, 32],
                      "batch_size": 32, "device": "cpu", **kw.pop("fixed", {})},
            "space": space, "search": {"algorithm": "grid"}, "scheduler": {"name": "none"},
            "budget": {"max_epochs": kw.pop("epochs", 2)},
            "resources": {"cpu": 1, "max_failures": kw.pop("max_failures", 2)},
            "storage": str(tmp_path / "runs"), **kw}


def _run(tmp_path: Path, spec: dict[str, Any]) -> SweepOutcome:
    return run_sweep(parse_spec(spec), yaml.safe_dump(spec),
                     tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", echo=lambda s: None)


def _rows(trial_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from_us(pid: int) -> bool:
    try:
        while pid > 1:
            pid = _parent(pid)
            if pid == os.getpid():
                return True
    except OSError:
        return False
    return False


def _cwd(pid: int) -> Path:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return Path()


def _trial_workers() -> list[int]:
    """PIDs of this test's Ray workers running a trial (retitled ``ray::ImplicitFunc``), never
    those of another Ray cluster on the machine."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        if "ImplicitFunc" in cmd and _descends_from_us(pid):
            found.append(pid)
    return found


def test_worker_killed_mid_epoch_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    data = write_mnist(tmp_path / "data", n_train=3000, n_test=300)
    spec = _spec(tmp_path, data, {"lr": [0.001, 0.002]}, epochs=4)
    run_dir = tmp_path / "runs" / "faults"
    killed: list[int] = []

    def kill_one_after_first_checkpoint() -> None:
        # The worker of a trial that has a checkpoint (Ray runs each trial in a working dir named
        # after it): killing the other trial's worker mid-first-epoch would rightly restart that
        # one from scratch.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not killed:
            for trial_dir in run_dir.glob("trial_*"):
                if not (trial_dir / "checkpoint_000000").is_dir():
                    continue
                workers = [p for p in _trial_workers() if _cwd(p).name == trial_dir.name]
                if workers:
                    time.sleep(0.5)  # mid-way through the next epoch
                    os.kill(workers[0], signal.SIGKILL)
                    killed.append(workers[0])
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_after_first_checkpoint, daemon=True)
    killer.start()
    outcome = _run(tmp_path, spec)
    killer.join(timeout=5)
    assert killed, "no trial worker was found to kill"
    assert outcome.counts == {"completed": 2}
    restored = 0
    for d in run_dir.glob("trial_*"):
        rows = _rows(d)
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # each epoch once: none lost/redone
        restored += any(r["iterations_since_restore"] == 1 and r["epoch"] > 1 for r in rows)
    assert restored == 1, "the killed trial continued from a checkpoint, not from scratch"


def test_a_trial_that_keeps_failing_is_reported_and_the_others_finish(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    # BatchNorm cannot train on batches of one image: PyTorch raises, every time it starts
    spec = _spec(tmp_path, tiny_mnist_dir, {"batch_size": [1, 32]},
                 fixed={"model": "mlp", "batchnorm": True}, max_failures=1)
    spec["fixed"].pop("batch_size")
    outcome = _run(tmp_path, spec)
    assert outcome.counts == {"completed": 1, "failed": 1}
    failed = [d for d in outcome.run_dir.glob("trial_*") if (d / "error.txt").exists()]
    assert len(failed) == 1
    assert "Expected more than 1 value per channel" in (failed[0] / "error.txt").read_text()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("faults")
    statuses = sorted(r.data.tags.get("hpsearch.status") for r in client.search_runs(
        [exp.experiment_id], "tags.`hpsearch.trial_id` != ''"))
    assert statuses == ["completed", "failed"]


def test_a_diverging_trial_ends_diverged_and_the_sweep_goes_on(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _spec(tmp_path, tiny_mnist_dir, {"lr": [0.01, 1.0e6]},
                 fixed={"optimizer": "sgd", "batchnorm": False}, epochs=3)
    outcome = _run(tmp_path, spec)
    assert outcome.counts == {"completed": 1, "diverged": 1}
    by_lr = {_rows(d)[0]["config"]["lr"]: _rows(d) for d in outcome.run_dir.glob("trial_*")}
    assert by_lr[1.0e6][-1]["status"] == "diverged" and len(by_lr[1.0e6]) == 1
    assert [r["epoch"] for r in by_lr[0.01]] == [1, 2, 3]


def test_when_every_trial_diverges_no_trial_is_named_best(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _spec(tmp_path, tiny_mnist_dir, {"lr": [1.0e6, 1.0e7]},
                 fixed={"optimizer": "sgd", "batchnorm": False})
    lines: list[str] = []
    outcome = run_sweep(parse_spec(spec), yaml.safe_dump(spec),
                        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", echo=lines.append)
    assert outcome.counts == {"diverged": 2}
    assert outcome.best is None
    assert not any(line.startswith("best ") for line in lines), lines
    assert any(line.startswith("no best trial: none completed") for line in lines), lines

"""Sweeps submitted as Ray Jobs to a real 2-node ``ray start`` cluster (1 CPU per node): list,
status and stop from outside the cluster through the shared storage and the Ray job API, then
resume on the cluster to the end; two sweeps submitted at once share the cluster, both make
progress and both finish."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from hpsearch.search.sweepdir import DRIVER_FILE
from tests.fakedata import write_mnist
from tests.raycluster import cluster_env, two_nodes
from tests.search.test_kill_resume import _check_consistent

pytestmark = pytest.mark.integration
Cluster = tuple[str, str, dict[str, str]]  # job API URL, GCS address, environment


@pytest.fixture
def two_node_cluster(tmp_path: Path) -> Iterator[Cluster]:
    env = cluster_env(tmp_path)
    with two_nodes(env) as (address, gcs):
        yield address, gcs, env


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpsearch", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def _spec_file(tmp_path: Path, name: str, data: Path, lrs: list[float], epochs: int) -> Path:
    spec = {"name": name,
            "fixed": {"dataset": "mnist", "data_dir": str(data), "model": "cnn",
                      "channels": [8, 16], "fc_width": 32, "batch_size": 32, "device": "cpu"},
            "space": {"lr": lrs}, "search": {"algorithm": "grid"},
            "scheduler": {"name": "none"}, "budget": {"max_epochs": epochs},
            "resources": {"cpu": 1}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _driver(env: dict[str, str], name: str) -> dict:
    try:
        return json.loads((Path(env["HPSEARCH_STORAGE"]) / name / DRIVER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _wait(what: str, ready: Callable[[], bool], timeout: float = 300,
          env: dict[str, str] | None = None, name: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(1)
    seen = _cli(env, "status", name).stdout if env is not None else ""
    pytest.fail(f"timed out waiting for: {what}\n{seen}")


def _job_status(env: dict[str, str], name: str) -> str:
    """The job's status as `hpsearch status` has it from the Ray job API."""
    out = _cli(env, "status", name).stdout
    return out.partition("Ray job status: ")[2].partition(";")[0]


def _submit(env: dict[str, str], address: str, spec: Path) -> str:
    out = _cli(env, "submit", str(spec), "--address", address)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split("as Ray job ")[1].split()[0]


def test_list_status_stop_resume_of_a_submitted_sweep(two_node_cluster: Cluster,
                                                      tmp_path: Path) -> None:
    address, gcs, env = two_node_cluster
    # epochs of seconds: on an idle machine 3 short epochs ended before `status` looked
    data = write_mnist(tmp_path / "data", n_train=6000, n_test=200)
    job_id = _submit(env, address, _spec_file(tmp_path, "remote", data,
                                              [0.001, 0.002, 0.004, 0.008], epochs=4))
    _wait("a trial of the submitted sweep past epoch 1", lambda: any(
        r["epoch"] >= 1 for r in _driver(env, "remote").get("progress", {}).get("running", [])),
          300, env, "remote")

    listed = _cli(env, "list")
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert row[:2] == ["remote", "running"] and row[-3:] == ["ray", "job", job_id], listed.stdout
    status = _cli(env, "status", "remote")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"sweep 'remote': running (ray job {job_id})"), status.stdout
    assert "running: trial " in status.stdout
    assert f"Ray job: {job_id} | dashboard: {address}" in status.stdout
    assert "Ray job status: RUNNING; last lines of its log:" in status.stdout
    # the tail of the job's own log, through the job API: the sweep's header or progress lines
    tail = status.stdout.partition("last lines of its log:\n")[2].split("\nfolder: ")[0]
    assert 1 <= len(tail.splitlines()) <= 5, status.stdout
    assert re.search(r"^  (hpsearch sweep 'remote'|\[\d+:\d\d\] )", tail, re.M), status.stdout

    stop = _cli(env, "stop", "remote")
    assert stop.returncode == 0, stop.stderr
    _wait("the submitted sweep stopped", lambda: _driver(env, "remote").get("state")
          == "stopped", 300, env, "remote")
    _wait("its Ray job ended", lambda: _job_status(env, "remote") == "SUCCEEDED", 240, env,
          "remote")
    status = _cli(env, "status", "remote", "--address", address)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"sweep 'remote': stopped (ray job {job_id})")
    assert "continue it: hpsearch resume remote" in status.stdout
    assert "stopped after" in status.stdout  # the job's log says how it ended
    again = _cli(env, "stop", "remote")
    assert again.returncode == 2 and "not running (it is stopped)" in again.stderr

    # resumed on the cluster (a driver that joins it) to the end: every trial and every
    # epoch once in Ray's results and in MLflow
    resume = _cli(env, "resume", "remote", "--address", gcs, timeout=400)
    assert resume.returncode == 0, resume.stderr[-3000:]
    run_dir = Path(env["HPSEARCH_STORAGE"]) / "remote"
    _check_consistent(tmp_path, run_dir, resume.stdout + resume.stderr, trials=4, keys=("lr",))
    (view,) = json.loads(_cli(env, "list", "--json").stdout)
    assert (view["state"], view["done"], view["total"]) == ("finished", 4, 4), view


def _intervals(run_dir: Path) -> list[tuple[float, float]]:
    spans = []
    for path in run_dir.glob("trial_*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]))
    return spans


def test_two_sweeps_submitted_at_once_share_the_cluster(two_node_cluster: Cluster,
                                                        tmp_path: Path) -> None:
    address, _, env = two_node_cluster
    data = write_mnist(tmp_path / "data", n_train=3000, n_test=200)
    lrs = [0.001, 0.002, 0.004]
    jobs = {name: _submit(env, address, _spec_file(tmp_path, name, data, lrs, epochs=3))
            for name in ("first", "second")}
    for name, job_id in jobs.items():
        _wait(f"sweep {name} finished", lambda n=name: _driver(env, n).get("state")
              in ("finished", "interrupted"), 400, env, name)
        assert _driver(env, name)["state"] == "finished"
        _wait(f"job {job_id} ended", lambda n=name: _job_status(env, n) == "SUCCEEDED", 240,
              env, name)
        assert _driver(env, name)["slots"] == 1, "each sweep should take half the cluster"
    listed = _cli(env, "list", "--json")
    views = {v["name"]: v for v in json.loads(listed.stdout)}
    assert {n: (v["state"], v["done"]) for n, v in views.items()} == \
        {"first": ("finished", 3), "second": ("finished", 3)}
    storage = Path(env["HPSEARCH_STORAGE"])
    first, second = _intervals(storage / "first"), _intervals(storage / "second")
    assert len(first) == len(second) == 3
    assert any(a0 < b1 and b0 < a1 for a0, a1 in first for b0, b1 in second), \
        f"no trial of one sweep ran while one of the other did: {first} {second}"


def test_stop_now_goes_through_the_ray_job_api(two_node_cluster: Cluster,
                                               tmp_path: Path) -> None:
    address, _, env = two_node_cluster
    data = write_mnist(tmp_path / "data", n_train=6000, n_test=200)  # epochs of seconds
    job_id = _submit(env, address, _spec_file(tmp_path, "hurry", data, [0.001, 0.002], 10))
    _wait("a trial of the submitted sweep past epoch 1", lambda: any(
        r["epoch"] >= 1 for r in _driver(env, "hurry").get("progress", {}).get("running", [])),
          300, env, "hurry")
    stop = _cli(env, "stop", "hurry", "--now")
    assert stop.returncode == 0, stop.stderr
    assert f"asked the Ray job API at {address} to stop job {job_id}" in stop.stdout
    _wait("the sweep marked stopped", lambda: _driver(env, "hurry").get("state") == "stopped",
          120, env, "hurry")
    _wait("its Ray job stopped", lambda: _job_status(env, "hurry") == "STOPPED", 240, env,
          "hurry")
    run_dir = Path(env["HPSEARCH_STORAGE"]) / "hurry"
    state = json.loads(sorted(run_dir.glob("experiment_state-*.json"))[-1].read_text())
    statuses = {json.loads(e[0])["status"] for e in state["trial_data"]}
    assert statuses & {"RUNNING", "PENDING", "PAUSED"}, "Tune's record should leave trials to " \
        f"resume, got {statuses}"

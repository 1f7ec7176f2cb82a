"""The container cluster of ``docker/docker-compose.yml`` end to end.

Builds the image, starts PostgreSQL + MLflow + a Ray head + 2 Ray workers under a project name
of its own (random ports on 127.0.0.1, random token and password in a temporary env file, so a
user's cluster and ``docker/.env`` are never touched), sends a sweep from the host with
``hpsearch submit --follow``, checks that its trials ran on both workers and that every trial is
in MLflow's PostgreSQL store, and removes containers, network and volumes (``down -v``) at the
end, whatever happened. Engine: ``docker compose``, else podman-compose (``$HPSEARCH_COMPOSE``
picks one, e.g. ``podman-compose``); the test skips when neither is usable.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakedata import write_mnist
from tests.mlflow_server import free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
IMAGE = "hpsearch:cluster-test"  # the test's own tag: a user's hpsearch:latest stays as it is
WORKERS = 2
BUILD_TIMEOUT_S = 2400  # cold: installs torch with its CUDA wheels; cached: seconds
UP_TIMEOUT_S = 300      # `up` until MLflow answers and every Ray node has joined
SWEEP_TIMEOUT_S = 600
# Settings the env file decides: the same names in the caller's environment must not win.
_OWN_PREFIXES = ("HPSEARCH_", "RAY_", "POSTGRES_", "MLFLOW_", "COMPOSE_")


def _succeeds(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def compose_cli() -> tuple[list[str], str] | None:
    """The compose command and its engine's CLI, or None when no engine is usable."""
    chosen = os.environ.get("HPSEARCH_COMPOSE", "").split()
    for cmd in [chosen] if chosen else [["docker", "compose"], ["podman-compose"]]:
        engine = "podman" if cmd[0].startswith("podman") else "docker"
        if (shutil.which(cmd[0]) and shutil.which(engine) and _succeeds([engine, "info"])
                and _succeeds([*cmd, "version"])):
            return cmd, engine
    return None


def _get(url: str, token: str | None = None) -> Any | None:
    """The JSON (or True for a non-JSON 200) at ``url``; None while it does not answer 200."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=5) as response:
            body = response.read()
    except (urllib.error.URLError, OSError):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return True


@dataclass
class Cluster:
    """A running compose project and how to reach it from the host."""

    compose: list[str]  # the compose command with -p, -f and --env-file
    engine: str
    project: str
    env: dict[str, str]  # for compose and engine calls
    token: str
    postgres: dict[str, str]
    dashboard: str
    mlflow: str

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.compose, *args], env=self.env, cwd=ROOT, text=True,
                              capture_output=True, timeout=timeout)

    def containers(self, service: str | None = None) -> list[str]:
        """Ids of the project's containers (of one service), by the labels both engines set."""
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        out = subprocess.run([self.engine, "ps", "-a", "-q", *filters], env=self.env,
                             capture_output=True, text=True, timeout=60)
        return out.stdout.split()

    def exec(self, service: str, *cmd: str, env: dict[str, str] | None = None) -> str:
        """Stdout of ``cmd`` in the service's first container; fails the test on an error."""
        flags = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
        out = subprocess.run([self.engine, "exec", *flags, self.containers(service)[0], *cmd],
                             env=self.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{service}: {' '.join(cmd)} failed:\n{out.stderr[-3000:]}"
        return out.stdout

    def logs(self, tail: int = 40) -> str:
        """The last lines of every container's log, for failure messages."""
        parts = []
        for cid in self.containers():
            name = subprocess.run([self.engine, "inspect", "-f", "{{.Name}}", cid],
                                  capture_output=True, text=True, timeout=60).stdout.strip()
            out = subprocess.run([self.engine, "logs", "--tail", str(tail), cid],
                                 capture_output=True, text=True, timeout=60)
            parts.append(f"----- {name}\n{out.stdout}{out.stderr}")
        return "\n".join(parts)

    def alive_nodes(self) -> int | None:
        """Alive Ray nodes per the dashboard's state API; None while it does not answer."""
        answer = _get(f"{self.dashboard}/api/v0/nodes?limit=100", self.token)
        if not isinstance(answer, dict):
            return None
        nodes = answer.get("data", {}).get("result", {}).get("result", [])
        return sum(node.get("state") == "ALIVE" for node in nodes)


def _image_id(engine: str) -> str | None:
    out = subprocess.run([engine, "image", "inspect", "-f", "{{.Id}}", IMAGE],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _env_file(path: Path, data_dir: Path) -> tuple[dict[str, str], Path]:
    values = {
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "POSTGRES_USER": "mlflow",
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "POSTGRES_DB": "mlflow",
        "HPSEARCH_DASHBOARD_PORT": str(free_port()),
        "HPSEARCH_MLFLOW_PORT": str(free_port()),
        "HPSEARCH_DATA_HOST": str(data_dir),
        "HPSEARCH_IMAGE": IMAGE,
        "HPSEARCH_WORKERS": str(WORKERS),  # so that `down` knows every worker too
        "HPSEARCH_WORKER_CPUS": "1",  # 2 trials at once: one per worker
        "HPSEARCH_SHM_SIZE": "1gb",
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)
    return values, path


def _tear_down(cluster: Cluster) -> None:
    """``down -v``; containers it could not remove are removed by label, then ``down -v`` again
    for the volumes and the network."""
    out = cluster.run("down", "-v", "-t", "10", timeout=300)
    if not cluster.containers():
        return
    for service in ("ray-worker", "ray-head", "mlflow", "postgres", None):  # dependents first
        for cid in cluster.containers(service):
            subprocess.run([cluster.engine, "rm", "-f", cid], capture_output=True, timeout=120)
    again = cluster.run("down", "-v", "-t", "10", timeout=300)
    pytest.fail(f"`down -v` left containers of {cluster.project} behind (removed them by "
                f"label):\n{out.stderr[-2000:]}\n{again.stderr[-1000:]}")


def _wait_until_ready(cluster: Cluster, deadline: float) -> None:
    while True:
        nodes = cluster.alive_nodes()
        waiting = [what for what, ok in (
            ("MLflow /health", _get(f"{cluster.mlflow}/health") is not None),
            ("the Ray dashboard", nodes is not None),
            (f"{1 + WORKERS} Ray nodes (have {nodes})", (nodes or 0) >= 1 + WORKERS),
        ) if not ok]
        if not waiting:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"cluster not ready after {UP_TIMEOUT_S} s, waiting for "
                        f"{', '.join(waiting)}\n{cluster.logs()}")
        time.sleep(3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no container engine: neither `docker compose` (with a running daemon) nor "
                    "podman-compose + podman is usable here")
    command, engine = cli
    tmp = tmp_path_factory.mktemp("compose")
    # Trials of a few seconds: sub-second ones can all run on the first (reused) trial actor
    # before the second worker has even started.
    data = write_mnist(tmp / "data", n_train=3000, n_test=300)
    for path in [data, *data.rglob("*")]:  # the containers' non-root user reads it
        path.chmod(0o755 if path.is_dir() else 0o644)
    values, env_file = _env_file(tmp / "cluster.env", data)
    project = f"hpsearch-test-{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    cluster = Cluster(
        compose=[*command, "-p", project, "-f", str(COMPOSE_FILE), "--env-file", str(env_file)],
        engine=engine, project=project, env=env, token=values["RAY_AUTH_TOKEN"],
        postgres={k: values[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")},
        dashboard=f"http://127.0.0.1:{values['HPSEARCH_DASHBOARD_PORT']}",
        mlflow=f"http://127.0.0.1:{values['HPSEARCH_MLFLOW_PORT']}")
    try:
        start = time.monotonic()
        previous = _image_id(engine)
        out = cluster.run("build", "ray-head", timeout=BUILD_TIMEOUT_S)
        assert out.returncode == 0, f"build failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        print(f"build: {time.monotonic() - start:.0f} s")
        if previous and previous != _image_id(engine):  # the last run's build: superseded
            subprocess.run([engine, "rmi", previous], capture_output=True, timeout=120)
        start = time.monotonic()
        out = cluster.run("up", "-d", "--scale", f"ray-worker={WORKERS}", timeout=UP_TIMEOUT_S)
        assert out.returncode == 0, f"up failed:\n{out.stderr[-3000:]}\n{cluster.logs()}"
        _wait_until_ready(cluster, start + UP_TIMEOUT_S)
        print(f"up until ready: {time.monotonic() - start:.0f} s")
        yield cluster
    finally:
        _tear_down(cluster)


def test_submitted_sweep_runs_on_every_worker_and_reaches_mlflow(cluster: Cluster,
                                                                  tmp_path: Path) -> None:
    name = "cluster-test"
    spec = {"name": name,
            "fixed": {"dataset": "mnist", "data_dir": "/data", "model": "cnn",
                      "channels": [8, 16], "fc_width": 32, "batch_size": 32, "device": "cpu"},
            "space": {"lr": [0.001, 0.002, 0.004, 0.008]},
            "search": {"algorithm": "grid"}, "scheduler": {"name": "none"},
            "budget": {"max_epochs": 3}, "resources": {"cpu": 1}}
    spec_file = tmp_path / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    hpsearch = Path(sys.executable).parent / "hpsearch"
    cmd = [str(hpsearch)] if hpsearch.exists() else [sys.executable, "-m", "hpsearch"]
    start = time.monotonic()
    out = subprocess.run(
        [*cmd, "submit", str(spec_file), "--address", cluster.dashboard, "--follow"],
        env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token},
        cwd=tmp_path, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    print(f"sweep: {time.monotonic() - start:.0f} s")
    assert out.returncode == 0 and "SUCCEEDED" in out.stdout, (
        f"{out.stdout[-4000:]}\n{out.stderr[-2000:]}\n{cluster.logs()}")

    # Tune's results, on the volume every node shares: the last line of each trial's file.
    script = ("import json, pathlib, sys; print(json.dumps({p.parent.name: json.loads("
              "p.read_text().splitlines()[-1]) for p in pathlib.Path(sys.argv[1]).glob("
              "'trial_*/result.json')}))")
    last = json.loads(cluster.exec("ray-head", "python", "-c", script, f"/shared/runs/{name}"))
    assert len(last) == 4, sorted(last)
    assert {row["status"] for row in last.values()} == {"completed"}, last
    assert all(row["epoch"] == 3 for row in last.values()), last
    nodes = {row["node_id"] for row in last.values()}
    assert len(nodes) == WORKERS, f"trials ran on {len(nodes)} node(s), expected {WORKERS}"
    trial_ids = {row["trial_id"] for row in last.values()}

    # Every trial is a child run in MLflow (the tracker may still be flushing: bounded wait).
    from mlflow import MlflowClient

    client = MlflowClient(cluster.mlflow)
    deadline = time.monotonic() + 60
    while True:
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id],
                                  "tags.`hpsearch.role` = 'trial'") if experiment else []
        tracked = {run.data.tags.get("hpsearch.trial_id") for run in runs}
        if tracked >= trial_ids or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert tracked == trial_ids, (f"MLflow has {sorted(tracked)}\n{out.stdout[-6000:]}\n"
                                  f"{out.stderr[-2000:]}\n{cluster.logs()}")
    # ... and MLflow keeps them in PostgreSQL, not in some fallback store.
    pg = cluster.postgres
    rows = cluster.exec(
        "postgres", "psql", "-h", "127.0.0.1", "-U", pg["POSTGRES_USER"], "-d", pg["POSTGRES_DB"],
        "-tAc", "SELECT value FROM tags WHERE key = 'hpsearch.trial_id'",
        env={"PGPASSWORD": pg["POSTGRES_PASSWORD"]})
    assert set(rows.split()) == trial_ids

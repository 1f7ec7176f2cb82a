"""``hpsearch ui`` as a user meets it: the link comes when the server answers and opens the
sweep's runs table; a taken port is one line; SIGTERM leaves no server behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.driver import hpsearch
from tests.mlflow_server import free_port


def test_version() -> None:
    out = hpsearch("--version")
    assert out.returncode == 0 and out.stdout.startswith("hpsearch "), out


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = hpsearch("ui", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--port", str(port),
                       cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out
    assert out.stderr.splitlines() == [
        f"hpsearch: error: --port {port}: 127.0.0.1:{port} is already in use (another MLflow "
        "UI?); choose another with --port"]


def _health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            return reply.status
    except OSError:
        return None


@pytest.mark.integration
def test_the_link_answers_when_printed_and_sigterm_stops_the_server(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = MlflowClient(uri).create_experiment("lab")
    runs = tmp_path / "runs" / "lab"
    runs.mkdir(parents=True)
    (runs / "hpsearch.json").write_text(
        f'{{"name": "lab", "tracking_uri": "{uri}", "experiment": "lab", "spec": {{}}}}')
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "hpsearch", "ui", "lab", "--storage",
                           str(tmp_path / "runs"), "--port", str(port)], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ui.stdout.readline()  # blocks until the command prints its link
        assert _health(port) == 200, f"printed before the server answers: {line!r}"
        assert f"http://127.0.0.1:{port}/#/experiments/{experiment}" \
               "?workflowType=machine_learning" in line, line
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 0
        deadline = time.monotonic() + 15
        while _health(port) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _health(port) is None, "the MLflow server outlived `hpsearch ui`"
    finally:
        if ui.poll() is None:
            os.kill(ui.pid, signal.SIGKILL)

"""``hpsearch ui``: MLflow's UI on a sweep's tracking store, as a user expects a server command
to behave.

- The link is printed once the server answers (its ``/health``), not before; it opens the
  sweep's experiment on the runs table (``workflowType=machine_learning``), not MLflow 3's
  GenAI overview.
- A port in use, or a server that dies while starting, is one line and a non-zero exit.
- SIGTERM or Ctrl-C stops the server and every worker it started (its own process group).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

from hpsearch.trainables.errors import UserError

__all__ = ["START_TIMEOUT_S", "experiment_link", "serve"]

START_TIMEOUT_S = 120.0  # a cold MLflow server on 2 cores takes ~20 s


class _Stopped(Exception):
    """SIGTERM arrived: stop the server and end cleanly."""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def experiment_link(base: str, tracking_uri: str, experiment: str | None) -> str:
    """The UI's page for ``experiment`` (its runs table), or ``base`` when there is none."""
    if not experiment:
        return base
    from mlflow import MlflowClient

    try:
        found = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - the link is a convenience; the UI lists experiments
        found = None
    if found is None:
        return base
    return f"{base}/#/experiments/{found.experiment_id}?workflowType=machine_learning"


def serve(tracking_uri: str, *, host: str, port: int, experiment: str | None = None,
          echo: Callable[[str], None] = print) -> int:
    """Run MLflow's server on ``tracking_uri`` until it ends or this process is told to stop."""
    if not _port_free(host, port):
        raise UserError(f"--port {port}: {host}:{port} is already in use (another MLflow UI?); "
                        "choose another with --port")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port)]
    if host not in ("127.0.0.1", "localhost", "::1"):
        cmd += ["--allowed-hosts", f"{host}:{port},{host},localhost:{port},127.0.0.1:{port}"]
    log = tempfile.TemporaryFile("w+")  # the server's own log: not the user's console
    server = subprocess.Popen(cmd, env=os.environ.copy(), start_new_session=True,
                              stdout=log, stderr=subprocess.STDOUT, text=True)

    def on_sigterm(*_: object) -> None:
        raise _Stopped  # unwinds out of server.wait(); the finally below stops the server

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(base):
            if server.poll() is not None:
                log.seek(0)
                lines = [ln for ln in log.read().splitlines() if ln.strip()]
                raise UserError(f"the MLflow UI did not start (exit {server.returncode}): "
                                f"{lines[-1][:300] if lines else 'no output'}")
            if time.monotonic() > deadline:
                raise UserError(f"the MLflow UI did not answer on {base} within "
                                f"{START_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        echo(f"MLflow UI: {experiment_link(base, tracking_uri, experiment)} "
             f"({tracking_uri}; Ctrl-C stops it)")
        return server.wait()
    except _Stopped:
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        _shutdown(server)
        log.close()


def _shutdown(server: subprocess.Popen[str]) -> None:
    """The server and every worker it started (its process group) stopped."""
    try:
        os.killpg(server.pid, signal.SIGTERM)  # also when the server itself has ended
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    except ProcessLookupError:
        pass

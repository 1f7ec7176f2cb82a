"""A real ``mlflow server`` for tests: start, wait for ``/health``, stop; restartable.

    with MlflowServer(tmp_path) as server:      # sqlite DB + proxied artifacts under tmp_path
        client = MlflowClient(server.uri)
        server.stop()                           # an outage ...
        server.start()                          # ... and back: same port, same DB, same artifacts

The server runs in its own process group (uvicorn workers are children), so ``stop`` ends all of
it: SIGTERM, then SIGKILL after ``grace`` seconds. MLflow's background job runner is switched
off: it spawns a dozen huey consumers and triples the start-up time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["MlflowServer", "free_port", "free_ports"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that nothing listens on right now (each socket is
    held until all are picked: ``free_port()`` called twice may give the same port twice)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class MlflowServer:
    """``python -m mlflow server`` on 127.0.0.1 with a SQLite store under ``root``.

    Args:
        root: Folder for ``mlflow.db``, ``artifacts/`` and ``server.log``.
        port: Port to listen on; a free one if None. Kept across ``stop``/``start``.
        workers: uvicorn worker processes (1 starts fastest).
    """

    def __init__(self, root: str | Path, port: int | None = None, workers: int = 1) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_uri(self) -> str:
        return f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def command(self) -> list[str]:
        hosts = f"127.0.0.1:{self.port},localhost:{self.port},127.0.0.1,localhost"
        return [sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", self.db_uri,
                "--artifacts-destination", str((self.root / "artifacts").resolve()),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers),
                "--allowed-hosts", hosts]  # MLflow >= 3.5 rejects unknown Host headers

    def is_up(self, timeout: float = 2.0) -> bool:
        """Whether ``/health`` answers 200 now."""
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=timeout) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 120.0) -> MlflowServer:
        """Start the server and wait until ``/health`` answers; raises with the log tail if not."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if self.is_up():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"mlflow server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)  # the group we created: the server and its workers
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                # workers may outlive the parent for a moment; the next signal catches them
                os.killpg(proc.pid, 0)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        proc.wait(10)
        deadline = time.monotonic() + 10
        while self.is_up(timeout=0.5) and time.monotonic() < deadline:
            time.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

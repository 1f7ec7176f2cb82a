"""A real 2-node Ray cluster on this machine for tests (``ray start --head`` + ``ray start
--address``), with token auth, on a private temp dir by which exactly its own processes are
ended afterwards (``ray stop --force`` would end every Ray on the machine)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.mlflow_server import free_ports

RAY = str(Path(sys.executable).parent / "ray")


def cluster_env(tmp_path: Path, storage: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the cluster's nodes and of the clients that talk to it: token auth,
    the sweeps' storage (default a folder both nodes see), MLflow in a local SQLite file."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
            **(storage or {"HPSEARCH_STORAGE": str(tmp_path / "shared" / "runs")}),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
            "RAY_USAGE_STATS_ENABLED": "0",
            # as with an activated venv: the job's shell finds `hpsearch`
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@contextmanager
def two_nodes(env: Mapping[str, str], gpus: tuple[int, int] = (0, 0),
              ) -> Iterator[tuple[str, str]]:
    """Head + worker, 1 CPU each (``gpus``: logical GPUs per node); yields the job API's URL
    and the head's GCS address (for a driver that joins with ``--address``).

    A start that fails (a port taken between picking and binding it, a slow start on a busy
    machine) is retried on fresh ports, its reason printed; the third failure raises with
    what ``ray start`` and the session's logs said."""
    failures = []
    for _ in range(3):
        temp_dir = tempfile.mkdtemp(prefix="hpr", dir="/tmp")  # short: socket paths
        try:
            addresses = _start(env, gpus, temp_dir)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            failures.append(_why(err, temp_dir))
            print(f"ray start failed, retrying on fresh ports:\n{failures[-1]}", file=sys.stderr)
            _stop_own(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
            continue
        try:
            yield addresses
        finally:
            _stop_own(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
        return
    raise RuntimeError("a 2-node Ray cluster did not start in 3 tries:\n" + "\n".join(failures))


def _start(env: Mapping[str, str], gpus: tuple[int, int], temp_dir: str) -> tuple[str, str]:
    # every port distinct: two picked one after the other can be the same one; the head's
    # client-server port too (its default, 10001, is the same for every head on the host)
    gcs, dash, client, *agents = free_ports(11)

    def node_args(n_gpus: int, ports: list[int]) -> list[str]:
        # Two nodes on one host: each needs its own agent ports, or the second node's agent
        # can take the head's default port and leave the job API without an agent.
        listen, grpc, metrics, runtime_env = ports
        return [f"--dashboard-agent-listen-port={listen}",
                f"--dashboard-agent-grpc-port={grpc}",
                f"--metrics-export-port={metrics}",
                f"--runtime-env-agent-port={runtime_env}", "--num-cpus=1",
                f"--num-gpus={n_gpus}", "--disable-usage-stats",
                "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}"]

    subprocess.run([RAY, "start", "--head", f"--port={gcs}", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                    f"--ray-client-server-port={client}",
                    *node_args(gpus[0], agents[:4])], env=dict(env), check=True,
                   capture_output=True, text=True, timeout=120)
    subprocess.run([RAY, "start", f"--address=127.0.0.1:{gcs}",
                    *node_args(gpus[1], agents[4:8])],
                   env=dict(env), check=True, capture_output=True, text=True, timeout=120)
    return f"http://127.0.0.1:{dash}", f"127.0.0.1:{gcs}"


def _why(err: subprocess.CalledProcessError | subprocess.TimeoutExpired, temp_dir: str) -> str:
    """What a failed ``ray start`` printed, and the last lines of its session's error logs."""
    said = [f"{' '.join(map(str, err.cmd[:3]))} ...: {type(err).__name__}"]
    for stream in (err.stdout, err.stderr):
        text = stream.decode(errors="replace") if isinstance(stream, bytes) else stream or ""
        said += text.strip().splitlines()[-15:]
    logs = Path(temp_dir, "session_latest", "logs")
    for log in sorted(logs.glob("*.err")) + sorted(logs.glob("dashboard.log")):
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        if tail:
            said += [f"--- {log.name}", *tail]
    return "\n".join(said)


def _cmdlines() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry.name)] = (ppid, cmdline)
    return found


def _stop_own(temp_dir: str) -> None:
    """End this cluster's processes only (``ray stop`` would end every Ray on the machine,
    other test sessions' too): those whose command line names its private temp dir, and
    their children (Ray's workers retitle themselves ``ray::…``)."""
    procs = _cmdlines()
    mine = {pid for pid, (_, cmd) in procs.items() if temp_dir in cmd}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        mine |= children
        grew = bool(children)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        # a few seconds for a clean exit, then SIGKILL: a test cluster keeps no state
        deadline = time.monotonic() + (3 if sig == signal.SIGTERM else 15)
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in mine):
            time.sleep(0.3)

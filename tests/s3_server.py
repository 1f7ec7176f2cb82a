"""A real S3 API for tests: moto's server (``moto[server]``) on 127.0.0.1, one bucket made.

    with S3Server(bucket="sweeps") as s3:
        env = {**os.environ, **s3.env}        # AWS_ENDPOINT_URL + dummy credentials
        fs = s3.fs()                          # a pyarrow S3FileSystem on it

pyarrow (and so Ray Tune) talks to it over HTTP exactly as to AWS S3 or MinIO; nothing is
mocked inside the processes under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.mlflow_server import free_port

__all__ = ["S3Server"]


class S3Server:
    def __init__(self, root: str | Path, bucket: str = "hpsearch-test") -> None:
        self.root = Path(root)
        self.bucket = bucket
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this S3 (as it would a MinIO)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def fs(self) -> Any:
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(access_key="testing", secret_key="testing",
                                       region="us-east-1", scheme="http",
                                       endpoint_override=f"127.0.0.1:{self.port}",
                                       allow_bucket_creation=True)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``bucket/prefix``."""
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(f"{self.bucket}/{prefix}".rstrip("/"),
                                           recursive=True, allow_not_found=True)
        return sorted(i.path.removeprefix(f"{self.bucket}/") for i in self.fs().get_file_info(
            selector) if i.type == pyarrow.fs.FileType.File)

    def read(self, key: str) -> bytes:
        with self.fs().open_input_stream(f"{self.bucket}/{key}") as f:
            return f.read()

    def start(self, timeout: float = 60.0) -> S3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "moto.log", "ab")  # noqa: SIM115 - the server's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.endpoint, timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            self.stop()
            raise TimeoutError(f"moto server not up after {timeout:.0f} s: {self.log_tail()}")
        self.fs().create_dir(self.bucket)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.root / "moto.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

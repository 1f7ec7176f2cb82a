"""The ``hpsearch`` command as a user runs it, in a subprocess; and a sweep's driver SIGKILLed
mid-sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

__all__ = ["hpsearch", "python_stdout", "sigkill_sweep_when", "sigkill_when"]


def hpsearch(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``hpsearch ARGS`` (``python -m search.cli``) to the end, output captured."""
    return subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=cwd,
                          env=dict(env) if env is not None else None, capture_output=True,
                          text=True, timeout=timeout)


def python_stdout(code: str, timeout: float = 120) -> str:
    """What ``python -c CODE`` prints, in a fresh interpreter (its own imports, its own heap);
    it must exit 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def sigkill_sweep_when(spec_file: Path, ready: Callable[[], bool], *, cwd: Path,
                       env: Mapping[str, str] | None = None, timeout: float = 240,
                       delay: float = 0.0) -> None:
    """Run ``hpsearch sweep spec_file`` and SIGKILL it ``delay`` seconds after ``ready()``
    holds while it still runs; the test fails if that never happens within ``timeout`` seconds
    or the sweep ends before the kill."""
    sigkill_when(("sweep", str(spec_file)), ready, cwd=cwd, env=env, timeout=timeout,
                 delay=delay)


def sigkill_when(args: tuple[str, ...], ready: Callable[[], bool], *, cwd: Path,
                 env: Mapping[str, str] | None = None, timeout: float = 240,
                 delay: float = 0.0) -> None:
    """Run ``hpsearch ARGS`` (a sweep's driver: ``sweep`` or ``resume``) and SIGKILL it
    ``delay`` seconds after ``ready()`` holds while it still runs; the test fails if that never
    happens within ``timeout`` seconds or the driver ends before the kill."""
    log = tempfile.TemporaryFile()
    driver = subprocess.Popen([sys.executable, "-m", "hpsearch", *args],
                              cwd=cwd, env=dict(env) if env is not None else None,
                              stdout=log, stderr=subprocess.STDOUT)

    def fail(why: str) -> None:
        log.seek(0)
        tail = log.read().decode(errors="replace")[-3000:]
        pytest.fail(f"hpsearch {args[0]} {why} (exit {driver.poll()}); its output ends:\n{tail}")

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if ready() and driver.poll() is None:
                break
            if driver.poll() is not None:
                fail("ended before the point of the kill")
            time.sleep(0.2)
        else:
            fail("never got to the point of the kill")
        time.sleep(delay)
        if driver.poll() is not None:
            fail("ended before the kill")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()

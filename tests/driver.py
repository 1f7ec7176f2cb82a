"""The ``hpsearch`` command as a user runs it, in a subprocess; and a sweep's driver SIGKILLed
mid-sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

__all__ = ["hpsearch", "sigkill_sweep_when"]


def hpsearch(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``hpsearch ARGS`` (``python -m search.cli``) to the end, output captured."""
    return subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=cwd,
                          env=dict(env) if env is not None else None, capture_output=True,
                          text=True, timeout=timeout)


def sigkill_sweep_when(spec_file: Path, ready: Callable[[], bool], *, cwd: Path,
                       env: Mapping[str, str] | None = None, timeout: float = 240,
                       delay: float = 0.0) -> None:
    """Run ``hpsearch sweep spec_file`` and SIGKILL it ``delay`` seconds after ``ready()``
    holds while it still runs; the test fails if that never happens within ``timeout`` seconds
    or the sweep ends before the kill."""
    driver = subprocess.Popen([sys.executable, "-m", "hpsearch", "sweep", str(spec_file)],
                              cwd=cwd, env=dict(env) if env is not None else None,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if ready() and driver.poll() is None:
                break
            if driver.poll() is not None:
                pytest.fail(f"the sweep ended (exit {driver.poll()}) before the point of the "
                            "kill")
            time.sleep(0.2)
        else:
            pytest.fail(f"the sweep never got to the point of the kill (exit {driver.poll()})")
        time.sleep(delay)
        if driver.poll() is not None:
            pytest.fail(f"the sweep ended (exit {driver.poll()}) before the kill")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()

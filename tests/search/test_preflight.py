"""The driver process as :func:`search.preflight.init_ray` prepares it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpsearch.search.preflight import DRIVER_ARENAS

# 16 threads allocate at once, then glibc's malloc_info says how many heaps (arenas) there are
_PROBE = """
import ctypes, sys, tempfile, threading
if sys.argv[1] == "few":
    from hpsearch.search.preflight import few_malloc_arenas
    few_malloc_arenas()
barrier = threading.Barrier(16)
def work():
    keep = [ctypes.create_string_buffer(200) for _ in range(2000)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile("r") as out:
    fp = ctypes.c_void_p(libc.fopen(out.name.encode(), b"w"))
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(out.read().count("<heap nr="))
"""


def _heaps(mode: str, env: dict[str, str] | None = None) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          check=True, env=env)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
def test_the_drivers_threads_share_few_malloc_arenas() -> None:
    """The driver's memory per trial: its threads share two heaps, not one each; a
    ``MALLOC_ARENA_MAX`` the user set wins."""
    import os

    assert _heaps("default") > DRIVER_ARENAS  # what glibc does on its own
    assert _heaps("few") == DRIVER_ARENAS
    assert _heaps("few", {**os.environ, "MALLOC_ARENA_MAX": "4"}) == 4

"""The sweep driver's memory: what its heartbeat gives back to the OS."""

from __future__ import annotations

import pytest

from hpsearch.search.preflight import _glibc
from tests.driver import python_stdout


@pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")
def test_the_heartbeats_heap_trim_hands_freed_memory_back() -> None:
    """200 MB of C-heap blocks freed below one that stays (as a driver's long-lived objects
    sit among freed ones) stay in the process until the trim, and leave it after."""
    code = (
        "import ctypes\n"
        "from hpsearch.search.preflight import trim_heap\n"
        "def rss():\n"
        "    line = [x for x in open('/proc/self/status') if x.startswith('VmRSS:')][0]\n"
        "    return int(line.split()[1]) // 1024\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "start = rss()\n"
        "blocks = [libc.malloc(4000) for _ in range(50_000)]\n"
        "for b in blocks: ctypes.memset(b, 1, 4000)\n"
        "keep = libc.malloc(4000)\n"
        "for b in blocks: libc.free(b)\n"
        "before = rss()\n"
        "assert trim_heap()\n"
        "print(start, before, rss())\n")
    start, before, after = map(int, python_stdout(code).split())
    assert before - start > 150, (start, before, after)  # glibc kept the freed pages
    assert before - after > 150, (start, before, after)  # the trim gave them back

"""``hpsearch resume`` of a sweep that does not exist. A driver SIGKILLed at any moment and
resumed: tests/search/test_kill_resume.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.driver import hpsearch

pytestmark = pytest.mark.integration


def test_resume_of_an_unknown_sweep_is_one_line(tmp_path: Path) -> None:
    out = hpsearch("resume", "nope", "--storage", str(tmp_path), cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "no sweep named 'nope'" in out.stderr
    assert "Traceback" not in out.stderr

"""bench/gpu.py, the script a lent GPU machine runs (scripts/device-check.sh), checked here on
the CPU (``--smoke``): every part runs and prints its figures, so device time is not spent
finding out that the script breaks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_the_gpu_bench_runs_every_part_on_the_cpu() -> None:
    out = subprocess.run([sys.executable, "bench/gpu.py", "--smoke"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    speed = dict(re.findall(r"^\| (cnn|resnet18) \| [\d,]+ \| [\d,]+ \| ([\d.]+)", text, re.M))
    assert set(speed) == {"cnn", "resnet18"} and all(float(r) > 0 for r in speed.values()), text
    packed = re.findall(r"^\| (\d+) \| ([\d,]+) \| ([\d,]+) \| ([\d.]+) \|", text, re.M)
    assert [row[0] for row in packed] == ["1", "2"], text
    assert all(float(row[1].replace(",", "")) > 0 for row in packed)
    assert packed[0][3] == "1.00"  # the ratio's baseline is the single trial
    efficiency = re.search(r"^sweep efficiency = ([\d.]+)", text, re.M)
    assert efficiency and 0 < float(efficiency.group(1)) <= 1, text
    assert "3. sweep: 2 trials of the default CNN" in text

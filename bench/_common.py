"""Shared bits of the sweep benchmarks: run a spec in this process, read Tune's result files.

Importing it needs neither Ray nor MLflow (``machine`` is used where they are not installed:
bench/gpu.py on a device machine); ``sweep`` imports them."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsearch.search.runner import SweepOutcome


def machine() -> str:
    """One line naming the machine and code the numbers come from."""
    import os

    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip() or "unknown"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}, "
            f"commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}")


def sweep(spec: dict[str, Any], workdir: Path) -> tuple[SweepOutcome, float]:
    """Run ``spec`` to the end in this process; returns the outcome and its wall seconds."""
    import yaml

    from hpsearch.search.runner import run_sweep
    from hpsearch.search.spec import parse_spec

    spec = {**spec, "storage": str(workdir / "runs")}
    start = time.perf_counter()
    outcome = run_sweep(parse_spec(spec), yaml.safe_dump(spec),
                        tracking_uri=f"sqlite:///{workdir}/mlflow.db", echo=lambda s: None)
    return outcome, time.perf_counter() - start


def trial_rows(outcome: SweepOutcome) -> dict[str, list[dict[str, Any]]]:
    """Every trial's per-epoch rows from Tune's ``result.json`` files."""
    from hpsearch.search.sweepdir import RESULT_FILE

    return {d.name: [json.loads(x) for x in (d / RESULT_FILE).read_text().splitlines()]
            for d in sorted(outcome.run_dir.glob("trial_*")) if (d / RESULT_FILE).exists()}

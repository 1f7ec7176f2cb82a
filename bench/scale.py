"""Scale: per-trial overhead of a sweep of many tiny trials, 500 vs 50, and the driver's memory.

Tiny trials (64 images, 1 epoch, a small MLP) measure the machinery, not training.
per-trial wall = wall seconds x slots / trials; ratio = at 500 / at 50 (target <= 1.2).

Usage: python bench/scale.py [--small 50] [--large 500]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

from _common import machine, sweep

from hpsearch.search.sweepdir import MARKER_FILE


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(trials: int) -> tuple[float, float]:
    spec = {"name": f"bench_scale_{trials}",
            "fixed": {"dataset": "fashion_mnist", "train_limit": 64, "eval_limit": 64,
                      "model": "mlp", "fc_width": 16, "batch_size": 32},
            "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
            "search": {"algorithm": "random", "seed": 0}, "scheduler": {"name": "none"},
            "budget": {"trials": trials, "max_epochs": 1}, "resources": {"cpu": 1}}
    before = rss_mb()
    # MLflow's writer thread may still be uploading plots when the sweep returns
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        outcome, wall = sweep(spec, Path(tmp))
        grown = rss_mb() - before
        pending = (outcome.run_dir / MARKER_FILE).exists()
    assert outcome.trials == trials, outcome.counts
    print(f"{trials} trials: wall {wall:.0f} s, {wall * (os.cpu_count() or 1) / trials:.2f} "
          f"slot-s per trial, driver RSS +{grown:.0f} MB, MLflow caught up: {not pending}",
          flush=True)
    return wall, grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=500)
    args = parser.parse_args()
    slots = os.cpu_count() or 1
    wall_s, mem_s = run(args.small)
    wall_l, mem_l = run(args.large)
    per_s, per_l = wall_s * slots / args.small, wall_l * slots / args.large
    print(f"machine: {machine()}")
    print(f"per-trial overhead ratio {args.large} vs {args.small} = {per_l / per_s:.2f}  "
          f"(target <= 1.2); driver RSS growth over the {args.large}-trial sweep = "
          f"{mem_l * 1024 / args.large:.0f} KB per trial")


if __name__ == "__main__":
    main()

"""Sweep efficiency: how busy the slots are. 16 trials of ~20 s (2 epochs of 12,000
Fashion-MNIST images, 1 CPU each) on every CPU of this machine.

efficiency = sum of trial training seconds / (wall seconds x slots)   (target >= 0.85)
start overhead per trial = (wall x slots - sum of trial seconds) / trials

Usage: python bench/sweep_efficiency.py [--trials 16] [--train 12000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import machine, sweep, trial_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--train", type=int, default=12000)
    args = parser.parse_args()
    slots = os.cpu_count() or 1
    lrs = [round(10 ** (-3.5 + 2 * i / (args.trials - 1)), 6) for i in range(args.trials)]
    spec = {"name": "bench_efficiency",
            "fixed": {"dataset": "fashion_mnist", "train_limit": args.train, "eval_limit": 1000,
                      "model": "cnn", "channels": [16, 32]},
            "space": {"lr": {"type": "grid", "values": lrs}},
            "search": {"algorithm": "grid"}, "scheduler": {"name": "none"},
            "budget": {"max_epochs": 2}, "resources": {"cpu": 1}}
    with tempfile.TemporaryDirectory() as tmp:
        outcome, wall = sweep(spec, Path(tmp))
        rows = trial_rows(outcome)
    busy = sum(sum(r["epoch_seconds"] for r in trial) for trial in rows.values())
    print(f"machine: {machine()}")
    print(f"{len(rows)} trials, {slots} slots, wall {wall:.1f} s, trial seconds {busy:.1f}, "
          f"mean trial {busy / len(rows):.1f} s")
    print(f"sweep efficiency = {busy / (wall * slots):.2f}  (target >= 0.85)")
    print(f"start overhead per trial = {(wall * slots - busy) / len(rows):.2f} s")


if __name__ == "__main__":
    main()

"""Search efficiency: ASHA + TPE against random search without early stopping, on the same
Fashion-MNIST space and seed. How much compute (trial-epochs) does ASHA + TPE need to reach the
best validation accuracy random search found? (target <= 1/3 of random search's compute)

Usage: python bench/search_efficiency.py [--trials 16] [--epochs 4] [--train 6000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine, sweep, trial_rows

SPACE = {
    "lr": {"type": "loguniform", "low": 1.0e-5, "high": 3.0e-1},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "momentum": {"type": "uniform", "low": 0.0, "high": 0.95, "when": {"optimizer": "sgd"}},
    "batch_size": {"type": "choice", "values": [32, 64, 128, 256]},
    "channels": {"type": "choice", "values": [[8, 16], [16, 32], [32, 64]]},
}


def trajectory(rows: dict[str, list[dict]]) -> list[tuple[int, float]]:
    """(cumulative trial-epochs, best val_top1 so far) in the order results arrived."""
    events = sorted((r["timestamp"], r["time_total_s"], r["val_top1"])
                    for trial in rows.values() for r in trial if "val_top1" in r)
    best, out = 0.0, []
    for i, (_, _, v) in enumerate(events, start=1):
        best = max(best, v)
        out.append((i, best))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fixed = {"dataset": "fashion_mnist", "train_limit": args.train, "eval_limit": 2000,
             "model": "cnn"}
    base = {"fixed": fixed, "space": SPACE, "resources": {"cpu": 1},
            "budget": {"trials": args.trials, "max_epochs": args.epochs}}
    random = {**base, "name": "bench_random", "search": {"algorithm": "random", "seed": args.seed},
              "scheduler": {"name": "none"}}
    asha = {**base, "name": "bench_asha_tpe", "search": {"algorithm": "optuna",
                                                          "seed": args.seed},
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
            "budget": {"trials": 2 * args.trials, "max_epochs": args.epochs}}
    with tempfile.TemporaryDirectory() as tmp:
        r_out, r_wall = sweep(random, Path(tmp) / "r")
        a_out, a_wall = sweep(asha, Path(tmp) / "a")
        r_traj = trajectory(trial_rows(r_out))
        a_traj = trajectory(trial_rows(a_out))
    target = r_traj[-1][1]
    r_cost = next(n for n, b in r_traj if b >= target)
    reached = next((n for n, b in a_traj if b >= target), None)
    print(f"machine: {machine()}")
    print(f"random search, no early stopping: {args.trials} trials x {args.epochs} epochs = "
          f"{r_traj[-1][0]} trial-epochs, {r_wall:.0f} s; best val_top1 {target:.4f} "
          f"(first reached after {r_cost} trial-epochs)")
    print(f"ASHA + TPE: up to {2 * args.trials} trials, {a_traj[-1][0]} trial-epochs, "
          f"{a_wall:.0f} s; best val_top1 {a_traj[-1][1]:.4f}")
    if reached is None:
        print("ASHA + TPE did not reach random search's best within its budget")
    else:
        print(f"trial-epochs to reach random search's best: ASHA+TPE {reached} vs random "
              f"{r_traj[-1][0]} (full run) -> ratio {reached / r_traj[-1][0]:.2f}  "
              f"(target <= 0.33)")


if __name__ == "__main__":
    main()

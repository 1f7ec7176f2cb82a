"""Trainable options for small models: label smoothing, a weight EMA and flip TTA, each alone
against a baseline with the same data, seed and budget, in one process.

Trains hpsearch's CNN (channels [32, 64, 64], fc_width 64: about 94K parameters) on
Fashion-MNIST with AdamW, one-cycle and hflip + crop augmentation; prints each run's val and
test top-1 and its difference from the baseline in percentage points. One seed: differences of
a few tenths of a point may be noise (``--seed`` reruns it with another).

Usage: python bench/options.py [--epochs 4] [--train 10000] [--seed 0] [--ema 0.999 0.99]
(the defaults are the README's measurement)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import machine

from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.data import load_data
from hpsearch.trainables.fit import fit

SMALL_CNN: dict[str, Any] = {
    "dataset": "fashion_mnist", "model": "cnn", "channels": (32, 64, 64), "fc_width": 64,
    "optimizer": "adamw", "lr": 0.003, "weight_decay": 5e-4, "schedule": "onecycle",
    "augment": ("hflip", "crop"), "batch_size": 128, "device": "cpu",
}


def options(ema: list[float]) -> dict[str, dict[str, Any]]:
    """Each run's name and the settings it changes from the baseline (one at a time)."""
    return {"baseline": {}, "label_smoothing 0.1": {"label_smoothing": 0.1},
            **{f"ema {d:g}": {"ema": d} for d in ema}, "tta_flip": {"tta_flip": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train", type=int, default=10000, help="training images per epoch")
    parser.add_argument("--eval", type=int, default=None, help="val and test images (all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ema", type=float, nargs="+", default=[0.999, 0.99], help="EMA decays")
    parser.add_argument("--only", nargs="+", metavar="PREFIX",
                        help="besides the baseline, only the runs whose name starts so (e.g. ema)")
    args = parser.parse_args()
    base = TrialConfig(**SMALL_CNN, epochs=args.epochs, train_limit=args.train,
                       eval_limit=args.eval, seed=args.seed)
    bundle = load_data(base)
    results: dict[str, dict[str, Any]] = {}
    runs = {name: change for name, change in options(args.ema).items()
            if name == "baseline" or not args.only or name.startswith(tuple(args.only))}
    for name, change in runs.items():
        start = time.perf_counter()
        result = fit(base.model_copy(update=change), data=bundle)
        results[name] = {**result.metrics, "wall": time.perf_counter() - start}
        print(f"  {name:<20} done in {results[name]['wall']:.0f} s", flush=True)

    ref = results["baseline"]
    print(f"machine: {machine()}")
    print(f"config: {base.to_dict()}")
    print(f"{ref['params']:,} params; {len(bundle.train_y)} train, {len(bundle.val_y)} val, "
          f"{len(bundle.test_y)} test images; {args.epochs} epochs; seed {args.seed}")
    print(f"{'run':<20} {'val top1':>9} {'diff':>7} {'test top1':>10} {'diff':>7} "
          f"{'val loss':>9} {'train loss':>11} {'seconds':>8}")
    for name, m in results.items():
        val, test = (100 * (m[k] - ref[k]) for k in ("val_top1", "test_top1"))
        print(f"{name:<20} {100 * m['val_top1']:8.2f}% {val:+7.2f} {100 * m['test_top1']:9.2f}% "
              f"{test:+7.2f} {m['val_loss']:9.4f} {m['train_loss']:11.4f} {m['wall']:8.0f}")
    print("diff: percentage points against the baseline (same data, seed and budget); "
          "train loss is the smoothed one under label smoothing")


if __name__ == "__main__":
    main()

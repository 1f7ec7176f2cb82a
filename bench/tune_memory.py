"""Driver memory of plain Ray Tune, the floor under ``bench/scale.py``'s figure.

The same trials as ``bench/scale.py`` in shape, without hpsearch: a function trainable that
reports one result with the keys an hpsearch trial reports (its numbers are random) and a
checkpoint, on ``Tuner(..., num_samples=N)`` with Optuna's TPE through Tune's ``OptunaSearch``,
Tune's JSON and CSV loggers and hpsearch's allocator settings (two glibc arenas, the heap trimmed
every 30 s), two trials at once. It prints the driver's RSS growth per trial while trials run
(from the first tenth of the trials done to nine tenths) and from the first tenth to the end of
``fit()``, measured as ``bench/scale.py`` measures them, so the figures read side by side: what
hpsearch adds is the difference.

Usage: python bench/tune_memory.py [--trials 5000]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import machine
from scale import rss_mb

# A finished hpsearch trial's result, by key (bench/scale.py's trials; values made up here)
FLOATS = ("train_loss", "train_top1", "train_top3", "val_loss", "val_top1", "val_top3", "lr",
          "images_per_second", "test_loss", "test_top1", "test_top3", "test_precision",
          "test_recall", "test_f1", "epoch_seconds")
INTS = ("epoch", "train_samples", "val_samples", "params", "macs")


def trainable(config: dict[str, Any]) -> None:
    from ray import tune

    result: dict[str, Any] = {k: random.random() for k in FLOATS}
    result.update({k: random.randint(1, 10_000) for k in INTS})
    result.update(device="cpu", status="completed", node_id="0" * 56, gpu_ids="",
                  test_classes=[str(i) for i in range(10)],
                  test_confusion=[[random.randint(0, 9) for _ in range(10)] for _ in range(10)])
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "state.json").write_text("{}")
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))


def done_count(storage: Path) -> int:
    return sum(1 for _ in storage.glob("*/*/result.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    args = parser.parse_args()
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from hpsearch.search.preflight import few_malloc_arenas, trim_heap

    few_malloc_arenas()
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # as hpsearch: no TensorBoard logger
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    space = {"lr": tune.loguniform(1e-4, 1e-1), "weight_decay": tune.loguniform(1e-6, 1e-3),
             "optimizer": tune.choice(["sgd", "adamw"])}
    marks: dict[int, float] = {}
    over = threading.Event()
    first, late = args.trials // 10, 9 * args.trials // 10

    def watch(storage: Path) -> None:
        trimmed = time.monotonic()
        while not over.is_set():
            if late not in marks:
                done = done_count(storage)
                for mark in (first, late):
                    if mark not in marks and done >= mark:
                        marks[mark] = rss_mb()
            if time.monotonic() - trimmed > 30:
                trim_heap()
                trimmed = time.monotonic()
            time.sleep(0.5)

    with tempfile.TemporaryDirectory() as tmp:
        watcher = threading.Thread(target=watch, args=(Path(tmp),), daemon=True)
        watcher.start()
        start = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=args.trials, metric="val_top1", mode="max",
                search_alg=OptunaSearch(seed=0), max_concurrent_trials=os.cpu_count(),
                reuse_actors=True),  # as hpsearch: a finished trial's worker runs the next
            run_config=tune.RunConfig(storage_path=tmp, name="bare", verbose=0,
                                      callbacks=[CSVLoggerCallback(), JsonLoggerCallback()]))
        tuner.fit()
        wall = time.perf_counter() - start
        over.set()
        grown = rss_mb() - marks.get(first, float("nan"))
    print(f"machine: {machine()}")
    during = (marks.get(late, float("nan")) - marks.get(first, float("nan"))) * 1024 / (
        late - first)
    print(f"plain Ray Tune, {args.trials} trials: wall {wall:.0f} s, driver RSS {during:.0f} KB "
          f"per trial while trials ran (trials {first} to {late}), +{grown:.0f} MB over the "
          f"last {args.trials - first} trials to the end of fit() "
          f"({grown * 1024 / (args.trials - first):.0f} KB per trial)")


if __name__ == "__main__":
    main()

"""What MLflow tracking costs a sweep: the same tiny Tune sweep with and without MlflowTracker.

    .venv/bin/python bench/tracking.py [--trials 8] [--epochs 20] [--sleep 0.05]
                                       [--tracking-uri http://host:5000] [--out bench.json]

Without ``--tracking-uri`` a local ``mlflow server`` (SQLite, proxied artifacts) is started in a
temporary folder, so every call goes over REST as on a cluster. Sweeps alternate untracked /
tracked ``--repeats`` times in one process and one Ray instance; the best wall time of each is
compared. Also printed: the driver-side cost of the callback hooks (what the Tune event loop
pays), the writer thread's ``log_batch`` calls, and the single-call latencies that batching
avoids. The record (args, versions, machine, git commit, timings) is printed as JSON last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpsearch.search.tracking import MlflowTracker  # noqa: E402

EPOCH_KEYS = ("train_loss", "train_top1", "train_top3", "val_loss", "val_top1", "val_top3")


def tiny_trainable(config: dict[str, Any]) -> None:
    """Reports the per-epoch metric shape of ``trainables.fit``; ``sleep`` stands for training."""
    from ray.tune import report

    epochs = config["epochs"]
    for epoch in range(1, epochs + 1):
        time.sleep(config["sleep"])
        m: dict[str, Any] = {k: 1.0 / (epoch + i) for i, k in enumerate(EPOCH_KEYS)}
        m.update(epoch=epoch, train_samples=1024, val_samples=256, lr=config["lr"],
                 images_per_second=5000.0, epoch_seconds=config["sleep"], params=12345,
                 macs=678901, status="completed" if epoch == epochs else "running")
        if epoch == epochs:
            m.update(test_loss=0.5, test_top1=0.8, test_top3=0.95, test_precision=0.79,
                     test_recall=0.8, test_f1=0.795,
                     test_confusion=[[8, 1, 1], [0, 9, 1], [1, 0, 9]])
        report(m)


class TimedTracker(MlflowTracker):
    """MlflowTracker that also times its hooks (driver side) and ``log_batch`` (writer side)."""

    hook_seconds = 0.0
    hook_calls = 0
    batch_seconds = 0.0
    batch_calls = 0
    close_seconds = 0.0

    def on_trial_result(self, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        super().on_trial_result(*args, **kwargs)
        self.hook_seconds += time.perf_counter() - t0
        self.hook_calls += 1

    def close(self, timeout: float | None = None) -> bool:
        t0 = time.perf_counter()
        ok = super().close(timeout)
        self.close_seconds = time.perf_counter() - t0
        return ok

    def _open(self) -> Any:  # bench-only peek at the private store to time log_batch
        store = super()._open()
        if not getattr(store, "_timed", False):
            inner = store.client.log_batch

            def timed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return inner(*args, **kwargs)
                finally:
                    self.batch_seconds += time.perf_counter() - t0
                    self.batch_calls += 1

            store.client.log_batch = timed
            store._timed = True
        return store


def run_sweep(storage: Path, name: str, args: argparse.Namespace,
              callbacks: list[Any]) -> float:
    from ray import tune
    from ray.tune import RunConfig

    space = {"lr": tune.grid_search([10 ** -(1 + i / 4) for i in range(args.trials)]),
             "epochs": args.epochs, "sleep": args.sleep}
    tuner = tune.Tuner(tiny_trainable, param_space=space,
                       run_config=RunConfig(name=name, storage_path=str(storage),
                                            callbacks=callbacks, verbose=0))
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    if results.errors:
        raise SystemExit(f"bench sweep {name} had failing trials: {results.errors}")
    return wall


def call_latency_ms(uri: str) -> dict[str, float]:
    """Single ``log_metric`` vs one ``log_batch`` of 500 points against this server."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    exp = client.create_experiment(f"bench-latency-{time.time():.0f}")
    run_id = client.create_run(exp).info.run_id
    t0 = time.perf_counter()
    for i in range(20):
        client.log_metric(run_id, "x", float(i), step=i)
    single = (time.perf_counter() - t0) / 20
    now = int(time.time() * 1000)
    t0 = time.perf_counter()
    for j in range(5):
        client.log_batch(run_id, [Metric(f"k{i % 25}", float(i), now, 100 + j * 500 + i)
                                  for i in range(500)])
    batch = (time.perf_counter() - t0) / 5
    client.set_terminated(run_id)
    return {"log_metric_ms": single * 1000, "log_batch_500_ms": batch * 1000}


def machine() -> dict[str, Any]:
    import mlflow
    import ray

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"host": socket.gethostname(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "ray": ray.__version__, "mlflow": mlflow.__version__, "git_commit": commit}


def bench(args: argparse.Namespace, uri: str, work: Path) -> dict[str, Any]:
    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        warm = argparse.Namespace(**{**vars(args), "trials": 1, "epochs": 2})
        run_sweep(work / "runs", "warmup", warm, [])
        plain, tracked, trackers = [], [], []
        for i in range(args.repeats):
            plain.append(run_sweep(work / "runs", f"plain{i}", args, []))
            tracker = TimedTracker(sweep_name=f"tracked{i}", run_dir=work / "runs" / f"tracked{i}",
                                   tracking_uri=uri, experiment="hpsearch-bench",
                                   sweep_params={"trials": args.trials, "epochs": args.epochs})
            tracked.append(run_sweep(work / "runs", f"tracked{i}", args, [tracker]))
            trackers.append(tracker)
    finally:
        ray.shutdown()

    epochs = args.trials * args.epochs
    best = min(range(args.repeats), key=lambda i: tracked[i])
    t = trackers[best]
    return {
        "args": vars(args), "tracking_uri": uri, "machine": machine(),
        "wall_untracked_s": min(plain), "wall_tracked_s": min(tracked),
        "all_untracked_s": plain, "all_tracked_s": tracked,
        "ratio": min(tracked) / min(plain),
        "logging_cost_per_epoch_ms": (min(tracked) - min(plain)) / epochs * 1000,
        "driver_hook_us_per_result": t.hook_seconds / max(t.hook_calls, 1) * 1e6,
        "writer_log_batch_calls": t.batch_calls,
        "writer_log_batch_ms_mean": t.batch_seconds / max(t.batch_calls, 1) * 1000,
        "writer_log_batch_s_total": t.batch_seconds,
        "close_drain_s": t.close_seconds,
        "mlflow_pending_marker": t.pending,
        **call_latency_ms(uri),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per fake epoch")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tracking-uri", help="an existing server; default: start one")
    parser.add_argument("--out", type=Path, help="also write the JSON record here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hpsearch-bench-") as tmp:
        work = Path(tmp)
        if args.tracking_uri:
            record = bench(args, args.tracking_uri, work)
        else:
            from tests.mlflow_server import MlflowServer

            with MlflowServer(work / "mlflow") as server:
                record = bench(args, server.uri, work)

    n = args.trials * args.epochs
    print(f"\n{args.trials} trials x {args.epochs} epochs ({n} results), "
          f"{args.sleep * 1000:.0f} ms per fake epoch, {args.cpus} CPUs, "
          f"{record['tracking_uri']}")
    print(f"  wall untracked {record['wall_untracked_s']:.2f} s   tracked "
          f"{record['wall_tracked_s']:.2f} s   ratio {record['ratio']:.3f}")
    print(f"  logging cost per epoch (wall difference / results): "
          f"{record['logging_cost_per_epoch_ms']:.2f} ms")
    print(f"  Tune event loop pays {record['driver_hook_us_per_result']:.1f} us per result "
          f"(enqueue only)")
    print(f"  writer thread: {record['writer_log_batch_calls']} log_batch calls, "
          f"{record['writer_log_batch_ms_mean']:.1f} ms each, "
          f"{record['writer_log_batch_s_total']:.2f} s in all; final drain "
          f"{record['close_drain_s']:.2f} s")
    print(f"  server latency: log_metric {record['log_metric_ms']:.1f} ms, log_batch(500) "
          f"{record['log_batch_500_ms']:.1f} ms -> unbatched, {n} results x ~20 metrics would "
          f"cost ~{n * 20 * record['log_metric_ms'] / 1000:.1f} s of calls")
    print(json.dumps(record))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

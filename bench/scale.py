"""Scale: a sweep of thousands of tiny trials against one of hundreds, in one process.

Tiny trials (64 images, 1 epoch, a small MLP) measure the machinery, not training. For each
size it prints:

- per-trial wall = (wall seconds - MLflow lag) x slots / trials (ratio large / small: target
  <= 1.0 + noise);
- the driver's RSS growth per trial while trials run: from the first tenth of the trials
  done (past Ray's start and the first trials' one-time costs) to nine tenths (before the
  sweep's end; target <= 0.05 MB); and from the first tenth to the end of ``fit()``, which
  adds the end of the sweep: Tune's ResultGrid reads every trial's ``result.json`` into a
  DataFrame, and the summary imports its plotting libraries;
- MLflow's lag: seconds from the last trial's end until every result reached MLflow, and the
  count of child runs there (target: all of them, within 60 s);
- the searcher's own time per suggestion (Optuna TPE by default), in the first and the last
  tenth of the trials (target: bounded);

and for the large sweep the wall time of ``hpsearch report`` (target <= 60 s).

Usage: python bench/scale.py [--small 500] [--large 5000] [--algorithm optuna]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import machine, sweep

from hpsearch.search.algorithms import TruthfulOptunaSearch
from hpsearch.search.sweepdir import DRIVER_FILE, MARKER_FILE
from hpsearch.search.tracking import MlflowTracker
from hpsearch.search.tracking.store import all_runs


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timed:
    """Wall seconds of each call of ``cls.name``, and the CPU seconds of the calling thread
    in it (the rest is waiting, e.g. for the GIL), for the benchmark only."""

    def __init__(self, cls: type, name: str) -> None:
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        original = getattr(cls, name)

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - start)
                self.cpu.append(time.thread_time() - cpu)

        setattr(cls, name, timed)


SUGGEST = Timed(TruthfulOptunaSearch, "suggest")
MLFLOW_END = Timed(MlflowTracker, "on_experiment_end")


def child_runs(tracking_uri: str, experiment: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return sum(1 for _ in all_runs(client, exp.experiment_id, "tags.mlflow.parentRunId != ''"))


def worker_starts() -> int:
    """Ray worker processes the last Ray session started (each imports torch: seconds of CPU).
    Tune reuses a finished trial's worker for the next trial only when it has one waiting."""
    logs = Path(tempfile.gettempdir(), "ray", "session_latest", "logs")
    return len(list(logs.glob("python-core-worker-*.log")))


def rss_when_done(run_dir: Path, marks: tuple[int, ...], seen: dict[int, tuple[int, float]],
                  over: threading.Event) -> None:
    """Records the driver's RSS once the sweep's driver file says each of ``marks`` trials
    have finished: ``seen[mark] = (trials done, MB)``."""
    import json

    while not over.is_set() and len(seen) < len(marks):
        try:
            now = json.loads((run_dir / DRIVER_FILE).read_text())["progress"]["done"]
        except (OSError, ValueError, KeyError, TypeError):
            now = 0
        for mark in marks:
            if now >= mark and mark not in seen:
                seen[mark] = (now, rss_mb())
        time.sleep(0.5)


def run(trials: int, algorithm: str, workdir: Path) -> dict[str, float]:
    spec = {"name": f"bench_scale_{trials}",
            "fixed": {"dataset": "fashion_mnist", "train_limit": 64, "eval_limit": 64,
                      "model": "mlp", "fc_width": 16, "batch_size": 32},
            "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                      "weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-3},
                      "optimizer": {"type": "choice", "values": ["sgd", "adamw"]}},
            "search": {"algorithm": algorithm, "seed": 0}, "scheduler": {"name": "none"},
            "budget": {"trials": trials, "max_epochs": 1}, "resources": {"cpu": 1}}
    SUGGEST.seconds.clear()
    SUGGEST.cpu.clear()
    MLFLOW_END.seconds.clear()
    seen: dict[int, tuple[int, float]] = {}
    over = threading.Event()
    watcher = threading.Thread(target=rss_when_done, daemon=True, args=(
        workdir / "runs" / spec["name"], (trials // 10, 9 * trials // 10), seen, over))
    watcher.start()
    outcome, wall = sweep(spec, workdir)
    over.set()
    first, first_mb = seen.get(trials // 10, (0, float("nan")))
    late, late_mb = seen.get(9 * trials // 10, (0, float("nan")))
    # Growth while trials run, and to the end of fit(), which reads every trial's results
    # into a DataFrame for its ResultGrid
    during = (late_mb - first_mb) * 1024 / max(1, late - first)
    grown = rss_mb() - first_mb
    counted = trials - first
    assert outcome.trials == trials, outcome.counts
    caught_up = not (outcome.run_dir / MARKER_FILE).exists()
    children = child_runs(f"sqlite:///{workdir}/mlflow.db", spec["name"])
    workers = worker_starts()
    # a suggestion that finds the budget spent is no suggestion: count the real ones
    asks, cpus = SUGGEST.seconds[:trials], SUGGEST.cpu[:trials]
    tenth = max(1, len(asks) // 10)

    def by_tenth(values: list[float]) -> list[float]:
        return [1000 * sum(part) / len(part)
                for part in (values[i:i + tenth] for i in range(0, len(values), tenth))][:10]

    tenths, cpu_tenths = by_tenth(asks), by_tenth(cpus)
    lag = sum(MLFLOW_END.seconds)  # reported apart: the writer catching up after the trials
    out = {"wall": wall, "per_trial": (wall - lag) * (os.cpu_count() or 1) / trials,
           "kb_per_trial": grown * 1024 / counted, "kb_during": during, "mlflow_lag": lag,
           "children": children, "ask_first_ms": tenths[0],
           "ask_last_ms": 1000 * sum(asks[-tenth:]) / tenth, "ask_tenths": tenths,
           "ask_cpu_tenths": cpu_tenths, "workers": workers}
    print(f"{trials} trials ({algorithm}): wall {wall:.0f} s, {out['per_trial']:.2f} slot-s per "
          f"trial, {workers} Ray worker processes started, driver RSS {during:.0f} KB per "
          f"trial while trials ran (trials {first} to {late}), +{grown:.0f} MB from trial "
          f"{first} to the end of fit() ({out['kb_per_trial']:.0f} KB per trial); MLflow "
          f"caught up {out['mlflow_lag']:.1f} s after the last trial ({children} child runs, "
          f"marker cleared: {caught_up}); suggestion {out['ask_first_ms']:.1f} ms in the first "
          f"tenth, {out['ask_last_ms']:.1f} ms in the last (by tenth: "
          f"{' '.join(f'{ms:.0f}' for ms in tenths)}; the suggesting thread's CPU: "
          f"{' '.join(f'{ms:.0f}' for ms in cpu_tenths)})", flush=True)
    return out


def report_seconds(trials: int, workdir: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hpsearch", "report", f"bench_scale_{trials}",
                    "--storage", str(workdir / "runs"), "--out", str(workdir / "report")],
                   check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--algorithm", default="optuna", choices=["optuna", "random"],
                        help="optuna: TPE, the default sampler")
    args = parser.parse_args()
    # MLflow's writer thread may still be uploading plots when a sweep returns
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        small = run(args.small, args.algorithm, Path(tmp, "small"))
        large = run(args.large, args.algorithm, Path(tmp, "large"))
        report = report_seconds(args.large, Path(tmp, "large"))
    print(f"machine: {machine()}")
    print(f"per-trial overhead ratio {args.large} vs {args.small} = "
          f"{large['per_trial'] / small['per_trial']:.2f} (target <= 1.0 + noise); driver RSS "
          f"growth {large['kb_during']:.0f} KB per trial while trials ran (target <= 51), "
          f"{large['kb_per_trial']:.0f} to the end of fit(); MLflow "
          f"{large['mlflow_lag']:.0f} s after the sweep (target <= 60); report {report:.0f} s "
          f"(target <= 60); suggestion {large['ask_first_ms']:.1f} -> "
          f"{large['ask_last_ms']:.1f} ms from the first to the last tenth of the trials")


if __name__ == "__main__":
    main()

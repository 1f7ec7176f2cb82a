"""Regenerate ``sweeps/``: two tiny real sweeps, cut down to the files the report reads.

Run once by hand (``.venv/bin/python -m tests.search.golden.make_sweeps``), then refresh the
expected outputs with ``HPSEARCH_UPDATE_GOLDEN=1 pytest tests/search/test_report_golden.py``.
Kept per sweep: ``hpsearch.json``; the driver file's host and state; Tune's newest
``experiment_state-*.json`` with each trial's id, status, folder and config only (no pickles);
per trial ``params.json``, ``result.json``, ``error.txt``. Checkpoints, pickles and event files
are dropped; the temporary paths become ``/golden``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import yaml

from hpsearch.search.sweepdir import DRIVER_FILE

HERE = Path(__file__).resolve().parent
KEPT_TRIAL_FILES = ("params.json", "result.json", "error.txt")
_SPECS = [
    {"name": "golden_search", "description": "tiny random search for the report's golden test",
     "fixed": {"model": "cnn", "batch_size": 32, "train_limit": 200},
     "space": {"optimizer": ["adam", "sgd"],
               "lr": {"type": "loguniform", "low": 1.0e-4, "high": 0.3},
               "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
               "channels": [[4, 8], [8, 16], [64, 128]]},
     "search": {"algorithm": "random", "seed": 7},
     "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
     "constraints": {"max_params": 20000},
     "budget": {"trials": 10, "max_epochs": 2},
     "resources": {"cpu": 1, "max_concurrent": 1, "max_failures": 0}},
    {"name": "golden_ofat", "design": "ofat",
     "fixed": {"model": "mlp", "batchnorm": True, "optimizer": "sgd"},
     "baseline": {"lr": 0.05, "batch_size": 32},
     "space": {"lr": [0.05, 1.0e-6, 1.0e6], "batch_size": [32, 1]},
     "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
     "budget": {"max_epochs": 2},
     "resources": {"cpu": 1, "max_concurrent": 1, "max_failures": 0}},
]


def _trimmed_state(text: str) -> str:
    """Tune's snapshot with only what :func:`search.sweepdir.read_record` reads untrusted."""
    data = json.loads(text)
    entries = []
    for trial_json, meta_json in data["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        last = meta.get("last_result") or {}
        entries.append([
            json.dumps({k: trial.get(k) for k in ("trial_id", "status", "relative_logdir",
                                                  "config")}),
            json.dumps({"last_result": {k: last[k] for k in ("epoch", "training_iteration")
                                        if k in last}})])
    return json.dumps({"trial_data": entries}, indent=1)


def _copy_trimmed(run_dir: Path, dest: Path, tmp: str) -> None:
    def put(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace(tmp, "/golden"))

    put(dest / "hpsearch.json", (run_dir / "hpsearch.json").read_text())
    driver = json.loads((run_dir / DRIVER_FILE).read_text())
    put(dest / DRIVER_FILE, json.dumps({k: driver[k] for k in ("host", "state")}, indent=1))
    state = max(run_dir.glob("experiment_state-*.json"), key=lambda p: p.name)
    put(dest / state.name, _trimmed_state(state.read_text()))
    for trial_dir in sorted(run_dir.glob("trial_*")):
        for name in KEPT_TRIAL_FILES:
            if (trial_dir / name).is_file():
                put(dest / trial_dir.name / name, (trial_dir / name).read_text())


def main() -> None:
    import ray

    from hpsearch.search.runner import run_sweep
    from hpsearch.search.spec import parse_spec
    from tests.fakedata import write_mnist

    tmp = tempfile.mkdtemp(prefix="golden-")
    data_dir = write_mnist(Path(tmp) / "mnist", n_train=600, n_test=200)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for raw in _SPECS:
            spec = {**raw, "storage": f"{tmp}/runs",
                    "fixed": {"dataset": "mnist", "data_dir": str(data_dir), "fc_width": 32,
                              "device": "cpu", **raw["fixed"]}}
            outcome = run_sweep(parse_spec(spec), yaml.safe_dump(spec, sort_keys=False),
                                tracking_uri=f"sqlite:///{tmp}/mlflow.db", echo=print)
            dest = HERE / "sweeps" / spec["name"]
            shutil.rmtree(dest, ignore_errors=True)
            _copy_trimmed(Path(outcome.run_dir), dest, tmp)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

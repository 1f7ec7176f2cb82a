"""Exactly-once under any kill timing: the driver of a sweep SIGKILLed at many moments of its
life, then ``hpsearch resume``; Ray's record and MLflow must then agree, trial by trial and epoch
by epoch.

Each kill is at one moment, found from what the sweep's folder holds (the driver's own
progress), optionally a little later; one sweep is killed at several moments in turn (a chain),
resumed after each. What a user checks after the last resume:
- every planned trial is there once, in Tune's state, on disk and in MLflow; no config twice;
- each trial's ``result.json`` holds every epoch once, and its MLflow run the same epochs;
- no MLflow run is left RUNNING, and each run's status tag is the trial's status;
- no "MLflow missed" line when MLflow never failed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hpsearch.search.tracking.values import run_status
from hpsearch.trainables.vocab import Status
from tests.driver import hpsearch, sigkill_when
from tests.fakedata import write_mnist

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("mlflow_db")]

NAME = "kills"


def _state_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("experiment_state-*.json"))


def _snapshot_ids(run_dir: Path) -> set[str]:
    """Trial ids in any experiment snapshot Tune has written so far (torn ones skipped)."""
    ids: set[str] = set()
    for path in _state_files(run_dir):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for entry in data.get("trial_data", []):
            ids.add(json.loads(entry[0])["trial_id"])
    return ids


def _trial_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("trial_*") if p.is_dir())


def _rows(trial_dir: Path) -> list[dict]:
    try:
        lines = (trial_dir / "result.json").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _checkpoint_not_in_snapshot(run_dir: Path) -> bool:
    known = _snapshot_ids(run_dir)
    return any(list(d.glob("checkpoint_*")) and d.name.removeprefix("trial_") not in known
               for d in _trial_dirs(run_dir))


def _n_with_rows(n: int) -> Callable[[Path], bool]:
    return lambda run_dir: sum(1 for d in _trial_dirs(run_dir) if _rows(d)) >= n


def _n_dirs(n: int) -> Callable[[Path], bool]:
    return lambda run_dir: len(_trial_dirs(run_dir)) >= n


def _n_final(n: int) -> Callable[[Path], bool]:
    def ready(run_dir: Path) -> bool:
        return sum(1 for d in _trial_dirs(run_dir)
                   if any(r.get("status") == "completed" for r in _rows(d))) >= n
    return ready


def _mlflow_runs(n: int) -> Callable[[Path], bool]:
    def ready(run_dir: Path) -> bool:
        try:
            data = json.loads((run_dir / "mlflow_runs.json").read_text())
        except (OSError, ValueError):
            return False
        return any(len(v.get("trials", {})) >= n for v in data.values())
    return ready


def _ended_and_open_in_snapshot(run_dir: Path) -> bool:
    """Tune's newest snapshot has a finished trial and one still under way: a resumed
    scheduler is handed both (Ray's HyperBand then waited for ever for the finished one)."""
    try:
        data = json.loads(_state_files(run_dir)[-1].read_text())
    except (IndexError, OSError, ValueError):
        return False
    statuses = {json.loads(entry[0])["status"] for entry in data.get("trial_data", [])}
    return "TERMINATED" in statuses and bool(statuses - {"TERMINATED", "ERROR"})


def _recorded_checkpoint_pruned(run_dir: Path) -> bool:
    """A trial under way has pruned the checkpoint Tune's newest snapshot would resume it from
    (it keeps its newest two; the snapshot can be epochs old)."""
    from hpsearch.search.sweepdir import read_record

    try:
        record = read_record(run_dir, trusted=True)
    except (OSError, ValueError):
        return False
    return record is not None and any(
        not t.over and t.checkpoint_name and t.dirname
        and not (run_dir / t.dirname / t.checkpoint_name).is_dir()
        for t in record.trials.values())


def _second_checkpoint(run_dir: Path) -> bool:
    return any((d / "checkpoint_000001").is_dir() for d in _trial_dirs(run_dir))


# (moment, extra delay in seconds): spread over the sweep's life.
MOMENTS: dict[str, tuple[Callable[[Path], bool], float]] = {
    "first-trial-folder": (_n_dirs(1), 0.0),
    "first-mlflow-run": (_mlflow_runs(1), 0.0),
    "first-result": (_n_with_rows(1), 0.0),
    "checkpoint-before-snapshot": (_checkpoint_not_in_snapshot, 0.0),
    "checkpoint-before-snapshot+0.7s": (_checkpoint_not_in_snapshot, 0.7),
    "second-checkpoint": (_second_checkpoint, 0.0),
    "recorded-checkpoint-pruned": (_recorded_checkpoint_pruned, 0.0),
    "first-completed": (_n_final(1), 0.0),
    "ended-and-open-in-snapshot": (_ended_and_open_in_snapshot, 0.0),
    "three-trials-reported": (_n_with_rows(3), 0.5),
    "last-trial-started": (_n_dirs(6), 0.0),
    "four-completed": (_n_final(4), 0.3),
    "five-mlflow-runs+0.5s": (_mlflow_runs(5), 0.5),
}


# What each chain searches with: the grid (six distinct configs by construction) with ASHA,
# and Optuna samplers, whose state (the study, the sampler's own) must come back from Tune's
# record too; a sampled lr is continuous, so a config trained twice is a duplicate there as
# well. Each entry overrides sections of :func:`_spec`'s sweep. HyperBand's brackets, which
# Tune does not save, must be rebuilt on resume (search.algorithms.ResumableHyperBand).
def _sampled(sampler: str, **sections: object) -> dict:
    return {"space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                      "optimizer": {"type": "choice", "values": ["adam", "sgd"]}},
            "budget": {"max_epochs": 3, "trials": 6},
            "search": {"algorithm": "optuna", "sampler": sampler, "seed": 3}, **sections}


STRATEGIES: dict[str, dict] = {
    "grid+asha": {},
    "tpe+hyperband": _sampled("tpe", scheduler={"name": "hyperband", "reduction_factor": 2}),
    "cmaes+asha": _sampled("cmaes"),
    "gp+none": _sampled("gp", scheduler="none"),
    "qmc+asha": _sampled("qmc"),
    "random+asha": {**_sampled("tpe"), "search": {"algorithm": "random", "seed": 3}},
    # two objectives (NSGA-II's Pareto front): Optuna is told a list of values
    # and ten epochs, so a trial outruns Tune's snapshot by more than the two checkpoints
    # it keeps (see SNAPSHOT_EVERY_S)
    "nsgaii+none": {**_sampled("nsgaii", scheduler="none", objective={"metrics": [
        {"name": "val_top1", "mode": "max"}, {"name": "params", "mode": "min"}]}),
        "budget": {"max_epochs": 10, "trials": 6}},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("data"), n_train=1200, n_test=200)


def _spec(tmp_path: Path, data: Path, strategy: str = "grid+asha") -> Path:
    """The kill tests' sweep: six trials, three epochs, on ``strategy`` (a key of
    :data:`STRATEGIES`)."""
    spec = {
        "name": NAME,
        "fixed": {"dataset": "mnist", "data_dir": str(data), "model": "cnn",
                  "channels": [8, 16], "fc_width": 32, "batch_size": 32, "device": "cpu"},
        # six distinct configs: a config trained twice is a duplicate, never a coincidence;
        # grid order puts the slow learners (lr 1e-4) last, so ASHA stops them at epoch 1
        "space": {"lr": {"type": "grid", "values": [0.03, 0.003, 0.0001]},
                  "optimizer": {"type": "grid", "values": ["adam", "sgd"]}},
        "search": {"algorithm": "grid"},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "budget": {"max_epochs": 3},
        "resources": {"cpu": 1},
        "storage": str(tmp_path / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        **STRATEGIES[strategy],
    }
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _check_consistent(tmp_path: Path, run_dir: Path, output: str, *, trials: int = 6,
                      keys: tuple[str, ...] = ("lr", "optimizer")) -> None:
    """Every one of ``trials`` trials (distinct in ``keys``) and every epoch once in Ray's
    record and in MLflow (``tmp_path``/mlflow.db, the experiment named as the folder)."""
    from mlflow import MlflowClient

    states = _state_files(run_dir)
    state = json.loads(states[-1].read_text())
    tune = {}
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        tune[trial["trial_id"]] = trial
    assert len(tune) == trials, f"Tune's record has {len(tune)} trials, {trials} planned"
    folders = {d.name.removeprefix("trial_") for d in _trial_dirs(run_dir)}
    assert folders == set(tune), f"trial folders Tune does not know: {folders - set(tune)}"
    configs = [json.dumps({k: t["config"][k] for k in keys}, sort_keys=True)
               for t in tune.values()]
    assert len(set(configs)) == trials, f"a config was trained twice: {sorted(configs)}"

    epochs, statuses = {}, {}
    for trial_id in tune:
        rows = _rows(run_dir / f"trial_{trial_id}")
        steps = [r["epoch"] for r in rows]
        assert steps == list(range(1, len(steps) + 1)) and steps, \
            f"trial {trial_id}: epochs {steps} in result.json, each once expected"
        epochs[trial_id] = steps
        last = rows[-1]["status"]
        statuses[trial_id] = "stopped_early" if last == "running" else last

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(run_dir.name)
    runs = client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'trial'")
    by_trial: dict[str, list] = {}
    for run in runs:
        by_trial.setdefault(run.data.tags["hpsearch.trial_id"], []).append(run)
    assert set(by_trial) == set(tune), \
        f"MLflow runs of trials Ray does not have: {set(by_trial) - set(tune)}; " \
        f"missing: {set(tune) - set(by_trial)}"
    for trial_id, found in by_trial.items():
        assert len(found) == 1, f"trial {trial_id} has {len(found)} MLflow runs"
        run = found[0]
        assert run.info.status == run_status(Status(statuses[trial_id])), \
            f"trial {trial_id} ({statuses[trial_id]}): MLflow run {run.info.status}"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")]
        assert sorted(steps) == epochs[trial_id], \
            f"trial {trial_id}: MLflow epochs {sorted(steps)}, Ray's {epochs[trial_id]}"
        assert run.data.tags["hpsearch.status"] == statuses[trial_id], trial_id
    parents = client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'sweep'")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert "MLflow missed" not in output, output


# Each chain is one sweep whose driver is SIGKILLed at each of its moments in turn: after a kill
# the sweep is resumed, and that resumed driver is the one killed at the next moment; after the
# last kill it is resumed to its end and checked. A chain's moments come in the order a sweep
# passes them; one that already holds when the resumed driver starts kills it as it restores, a
# moment worth covering too. A moment that holds only for a while (a checkpoint Tune's snapshot
# does not know yet) may never come again in a resumed sweep whose trials Tune already knows
# (seen: a grid whose six trials were all in the first snapshot, trained in 3 s), so it opens a
# chain, in a fresh sweep. Seven chains, one per search strategy, cover the thirteen moments:
# each strategy's state (Optuna's study and sampler, HyperBand's brackets) is killed and
# restored at least once, for about two thirds of the cost of one sweep per moment.
CHAINS: dict[str, tuple[str, ...]] = {
    "early": ("first-trial-folder", "first-result", "ended-and-open-in-snapshot"),
    "middle": ("first-mlflow-run", "second-checkpoint"),
    "gap": ("checkpoint-before-snapshot", "five-mlflow-runs+0.5s"),
    "gap-late": ("checkpoint-before-snapshot+0.7s", "last-trial-started"),
    "completed": ("first-completed",),
    "reported": ("three-trials-reported",),
    "four": ("recorded-checkpoint-pruned", "four-completed"),
}
# The strategy each chain's sweep uses, every one of STRATEGIES once. "four-completed" needs
# four trials to complete: no scheduler (NSGA-II's two objectives take none) or ASHA on the
# grid's order (its slow learners come last, so ASHA stops those).
CHAIN_STRATEGY = {"early": "tpe+hyperband", "middle": "grid+asha", "gap": "cmaes+asha",
                  "gap-late": "gp+none", "completed": "random+asha", "reported": "qmc+asha",
                  "four": "nsgaii+none"}
# How often a chain's drivers write Tune's snapshot (TUNE_GLOBAL_CHECKPOINT_S; "auto" is
# 10-40 s here). The early chain's sweep may end before an auto snapshot holds a finished trial
# beside open ones: every second (every 2 s, one CI run's last resume trained the six trials
# in 6 s and no snapshot held both). The "four" chain needs a snapshot taken while trials
# train that is then more than two epochs old: every 6 s, its ten epochs taking 0.5-2.5 s
# each on these 2 cores (with "auto" an idle CI run's six trials trained five epochs each
# between two snapshots, and the moment never came).
SNAPSHOT_EVERY_S = {"early": 1, "four": 6}
# moments that hold only for a while: each opens its chain
TRANSIENT = [m for m, (ready, _) in MOMENTS.items()
             if ready in (_checkpoint_not_in_snapshot, _recorded_checkpoint_pruned)]


def test_every_moment_is_in_a_chain() -> None:
    chained = [m for chain in CHAINS.values() for m in chain]
    assert sorted(chained) == sorted(MOMENTS), set(MOMENTS) ^ set(chained)
    assert CHAIN_STRATEGY.keys() == CHAINS.keys()
    assert sorted(CHAIN_STRATEGY.values()) == sorted(STRATEGIES)
    assert all(m not in chain[1:] for chain in CHAINS.values() for m in TRANSIENT)


@pytest.mark.parametrize("chain", list(CHAINS))
def test_driver_killed_at_any_moment_resumes_exactly_once(chain: str, tmp_path: Path,
                                                          data_dir: Path) -> None:
    run_dir = tmp_path / "runs" / NAME
    resume = ("resume", NAME, "--storage", str(tmp_path / "runs"))
    driver = ("sweep", str(_spec(tmp_path, data_dir, CHAIN_STRATEGY[chain])))
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": str(SNAPSHOT_EVERY_S[chain])} \
        if chain in SNAPSHOT_EVERY_S else None
    for moment in CHAINS[chain]:
        ready, delay = MOMENTS[moment]
        sigkill_when(driver, lambda ready=ready: ready(run_dir), cwd=tmp_path, delay=delay,
                     env=env)
        time.sleep(1)  # let Ray's fate-shared processes of the dead driver go
        driver = resume
    recorded = bool(_snapshot_ids(run_dir))  # Tune had written a readable snapshot
    out = hpsearch(*resume, cwd=tmp_path, timeout=400, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_consistent(tmp_path, run_dir, out.stdout + out.stderr)
    if recorded:  # resumed from Tune's record, not started over
        assert "starting it again" not in out.stdout, out.stdout


def test_sync_repairs_what_older_versions_left_in_mlflow(tmp_path: Path, data_dir: Path) -> None:
    """Runs of trials Ray never recorded, left RUNNING; epochs Ray's record lacks on a finished
    run; stale status tags: ``hpsearch sync`` of the ended sweep makes MLflow equal Ray's
    record."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    spec = _spec(tmp_path, data_dir)
    out = hpsearch("sweep", str(spec), cwd=tmp_path, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / NAME
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(NAME)
    parent = client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'sweep'")[0]
    children = client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'trial'")
    stopped = next(r for r in children if r.data.tags["hpsearch.status"] == "stopped_early")
    client.log_batch(stopped.info.run_id, metrics=[
        Metric("val_top1", 0.5, 0, step) for step in (2, 3)])  # epochs Ray never recorded
    client.set_tag(children[0].info.run_id, "hpsearch.status", "running")
    orphan = client.create_run(exp.experiment_id, tags={
        "mlflow.parentRunId": parent.info.run_id, "hpsearch.role": "trial",
        "hpsearch.trial_id": "0rphan00", "hpsearch.status": "running"})
    client.log_metric(orphan.info.run_id, "val_top1", 0.1, step=1)

    out = hpsearch("sync", NAME, "--storage", str(tmp_path / "runs"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_consistent(tmp_path, run_dir, out.stdout + out.stderr)

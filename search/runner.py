"""Where trials run: a validated SweepSpec becomes a Ray Tune run (local, or an existing cluster).

Order of work, so that nothing starts on bad input: spec validated (cheap) -> preflight (data
resolvable, GPUs present, a feasible config exists) -> ``ray.init`` -> dataset decoded once and
put in the object store -> ``Tuner.fit()``. A sweep's folder ``<storage>/<name>/`` holds Tune's
experiment state plus ``hpsearch.json`` (the spec and where its tracking goes), which is what
``resume``, ``sync`` and ``report`` read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.spec import SweepSpec, parse_spec, spec_fingerprint
from search.storage import Location, is_uri, location, storage_error, write_atomic
from trainables.config import TrialConfig, parse_trial_config
from trainables.errors import UserError

__all__ = ["META_FILE", "SweepOutcome", "find_sweep", "load_meta", "resume_sweep",
           "run_dir_for", "run_sweep", "submit_sweep"]

META_FILE = "hpsearch.json"
# Settings that decide which data a trial sees: one decoded copy serves the whole sweep.
_DATA_KEYS = ("dataset", "data_dir", "val_fraction", "split_seed", "train_limit", "eval_limit")


@dataclass
class SweepOutcome:
    """What a finished sweep printed as its last line, as data."""

    name: str
    run_dir: Location
    trials: int
    best: dict[str, Any] | None
    tracking_uri: str
    counts: dict[str, int]


def run_dir_for(name: str, storage: str | os.PathLike[str] | None) -> Location:
    """``<storage>/<name>``: an absolute local path (Tune needs one every node sees, e.g. a
    shared volume) or a URI such as ``s3://bucket/runs/<name>`` (see :mod:`search.storage`)."""
    root = storage or os.environ.get("HPSEARCH_STORAGE") or "runs"
    return location(root) / name


def load_meta(name: str, storage: str | None = None) -> dict[str, Any]:
    """The ``hpsearch.json`` of an existing sweep, or a UserError naming the sweeps there are."""
    run_dir = run_dir_for(name, storage)
    return _read_meta(run_dir, name)


def _read_meta(run_dir: Location, name: str) -> dict[str, Any]:
    meta = run_dir / META_FILE
    try:
        if meta.is_file():
            return json.loads(meta.read_text())
        root = run_dir.parent
        found = sorted(p.parent.name for p in root.glob(f"*/{META_FILE}")) if root.is_dir() else []
    except (OSError, ValueError) as err:  # pyarrow: unknown scheme, no bucket, no credentials
        raise UserError(storage_error(run_dir.parent, err)) from None
    raise UserError(f"no sweep named '{name}' under {root}/"
                    f"{'; found: ' + ', '.join(found) if found else ' (no sweeps there)'}")


def _check_storage(run_dir: Location) -> bool:
    """Before anything starts, and leaving nothing behind: the storage path opens and takes
    writes. Returns whether a sweep of this name already has its ``hpsearch.json`` there."""
    try:
        if (run_dir / META_FILE).exists():
            return True
        if isinstance(run_dir, Path):
            existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
            if not os.access(existing, os.W_OK):
                raise PermissionError(f"{existing} is not writable")
            return False
        root = run_dir.parent
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".hpsearch-probe-{run_dir.name}"
        probe.write_text("ok")
        probe.unlink()
    except (OSError, ValueError) as err:  # pyarrow: unknown scheme, no bucket, no credentials
        raise UserError(storage_error(run_dir.parent, err)) from None
    return False


def _base_config(spec: SweepSpec) -> TrialConfig:
    return parse_trial_config(spec.trial_defaults(), prefix="fixed.")


def _preflight(spec: SweepSpec, address: str | None) -> None:
    """Checks that need torch but no Ray: data settings fixed, GPUs present, data resolvable."""
    varied = [k for k in _DATA_KEYS if k in spec.space]
    if varied:
        raise UserError(f"space.{varied[0]}: data settings ({', '.join(_DATA_KEYS)}) must be "
                        "fixed for a sweep (one decoded copy is shared by every trial); "
                        "move it to `fixed`")
    if spec.resources.gpu > 0 and address is None:
        import torch

        if torch.cuda.device_count() == 0:
            raise UserError(f"resources.gpu: {spec.resources.gpu} GPU per trial asked for, but "
                            "no CUDA GPU is visible here; set resources.gpu: 0 (the same spec "
                            "runs on CPUs)")


def _check_candidates(spec: SweepSpec, bundle: Any, configs: list[dict[str, Any]],
                      enumerated: bool) -> None:
    """Before Ray: candidate configs must build for this data (e.g. an ImageNet stem needs big
    enough images) and, with cost limits, at least one must fit them. Grid/OFAT configs are all
    checked; for sampled spaces, an error only when no sampled config works."""
    from trainables.cost import constraint_violation
    from trainables.models import trial_cost

    limits = {"max_params": spec.max_params, "max_macs": spec.max_macs}
    smallest: dict[str, int] | None = None
    problems: list[str] = []
    fits = 0
    for values in configs:
        config = parse_trial_config({**spec.trial_defaults(), **values})
        try:
            cost = trial_cost(config, bundle)
        except UserError as err:
            problems.append(f"space: the config {values} cannot run: {err}")
            continue
        if constraint_violation(cost, limits) is None:
            fits += 1
        elif smallest is None or cost["params"] < smallest["params"]:
            smallest = cost
    if problems and (enumerated or len(problems) == len(configs)):
        raise UserError("\n".join(problems))
    if fits == 0 and smallest is not None:
        raise UserError(
            f"constraints: none of {len(configs)} candidate configs fits "
            f"max_params={spec.max_params}, max_macs={spec.max_macs}; the smallest has "
            f"params {smallest['params']:,} and MACs {smallest['macs']:,}")


def _candidates(spec: SweepSpec, n: int = 32) -> list[dict[str, Any]]:
    from search.space import define_by_run, grid_configs, ofat_configs

    if spec.design == "ofat":
        return ofat_configs(spec)
    if spec.search.algorithm == "grid":
        return grid_configs(spec)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.search.seed))
    define = define_by_run(spec)
    return [define(study.ask()) for _ in range(n)]


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address is None:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=True)
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)


def _slots(spec: SweepSpec) -> int:
    import ray

    res = ray.cluster_resources()
    if spec.resources.gpu > 0 and res.get("GPU", 0) < spec.resources.gpu:
        raise UserError(f"resources.gpu: {spec.resources.gpu} GPU per trial asked for, but the "
                        f"Ray cluster has {res.get('GPU', 0):g} GPUs; set resources.gpu: 0")
    if res.get("CPU", 0) < spec.resources.cpu:
        raise UserError(f"resources.cpu: {spec.resources.cpu} CPUs per trial asked for, but the "
                        f"Ray cluster has {res.get('CPU', 0):g}")
    slots = math.floor(res.get("CPU", 1) / spec.resources.cpu + 1e-9)
    if spec.resources.gpu > 0:
        slots = min(slots, math.floor(res["GPU"] / spec.resources.gpu + 1e-9))
    if spec.resources.max_concurrent:
        slots = min(slots, spec.resources.max_concurrent)
    return max(1, slots)


def _quiet_tune(slots: int) -> None:
    """Our progress lines replace Tune's tables; keep every slot fed with a pending trial."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no banner, no tables
    # Tune keeps one pending trial for non-random searchers unless told otherwise, which
    # leaves slots idle between trials (the "OptunaSearch uses 1 of 2 CPUs" symptom).
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(slots)


def _trainable(spec: SweepSpec, bundle: Any) -> Any:
    from ray import tune

    from trainables.tune_adapter import train_trial

    objective = dict(zip(spec.metrics, spec.modes, strict=True)) if spec.is_multi_objective \
        else {spec.metric: spec.mode}
    limits = {"max_params": spec.max_params, "max_macs": spec.max_macs}
    trainable = tune.with_parameters(train_trial, data=bundle.to_arrays(), limits=limits,
                                     objective=objective)
    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _callbacks(spec: SweepSpec, run_dir: Location, tracking_uri: str, total: int,
               echo: Callable[[str], None]) -> list[Any]:
    from search.progress import ProgressPrinter
    from search.tracking import MlflowTracker

    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    tracker = MlflowTracker(
        sweep_name=spec.name, run_dir=run_dir, tracking_uri=tracking_uri,
        experiment=spec.tracking.experiment or spec.name, spec_yaml=_resolved_yaml(spec),
        sweep_params=_sweep_params(spec), objective=(metric, mode))
    return [tracker, ProgressPrinter(total, metric, mode, echo=echo)]


def _resolved_yaml(spec: SweepSpec) -> str:
    """The spec as it runs (``--set`` overrides applied, defaults filled in), for MLflow."""
    import yaml

    return yaml.safe_dump(spec.to_dict(), sort_keys=False)


def _sweep_params(spec: SweepSpec) -> dict[str, Any]:
    return {"search": spec.search.algorithm, "seed": spec.search.seed,
            "scheduler": spec.scheduler.name, "design": spec.design or "search",
            "trials": spec.budget.trials, "max_epochs": spec.budget.max_epochs,
            "cpu_per_trial": spec.resources.cpu, "gpu_per_trial": spec.resources.gpu,
            "max_params": spec.max_params, "max_macs": spec.max_macs,
            "objective": ",".join(spec.metrics) if spec.is_multi_objective else spec.metric}


def _prepare(spec: SweepSpec, address: str | None) -> tuple[Any, int]:
    from trainables.data import load_data

    _preflight(spec, address)
    bundle = load_data(_base_config(spec))
    _check_candidates(spec, bundle, _candidates(spec),
                      enumerated=spec.design == "ofat" or spec.search.algorithm == "grid")
    _init_ray(address)
    return bundle, _slots(spec)


def run_sweep(spec: SweepSpec, spec_text: str, *, address: str | None = None,
              tracking_uri: str | None = None, echo: Callable[[str], None] = print,
              ) -> SweepOutcome:
    """Run a whole sweep to the end and summarise it."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig

    from search.algorithms import build_scheduler, build_searcher, planned_trials

    run_dir = run_dir_for(spec.name, spec.storage)
    if _check_storage(run_dir):
        raise UserError(f"a sweep named '{spec.name}' already exists in {run_dir}; continue it "
                        f"with `hpsearch resume {spec.name}` or choose another `name`")
    bundle, slots = _prepare(spec, address)
    from search.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(tracking_uri or spec.tracking.uri)
    total = planned_trials(spec)
    _quiet_tune(slots)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_meta(run_dir, spec, spec_text, tracking_uri)

    echo(f"hpsearch sweep '{spec.name}': {total} trials, {slots} at once "
         f"({spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU each), "
         f"search {spec.search.algorithm if spec.design != 'ofat' else 'ofat'}, "
         f"scheduler {spec.scheduler.name}; results in {run_dir}")
    # metric/mode live on the searcher and scheduler (Tune rejects them in both places).
    tuner = tune.Tuner(
        _trainable(spec, bundle),
        param_space=dict(spec.trial_defaults()),
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(spec),
            scheduler=build_scheduler(spec),
            num_samples=total,
            max_concurrent_trials=slots,
            time_budget_s=spec.time_limit_seconds,
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            # One warm worker process per slot, reused trial after trial: no Python + torch
            # start-up per trial (seconds each, which tiny trials would spend idle).
            reuse_actors=True,
        ),
        run_config=RunConfig(
            name=spec.name,
            storage_path=str(run_dir.parent),
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            failure_config=FailureConfig(max_failures=spec.resources.max_failures),
            callbacks=_callbacks(spec, run_dir, tracking_uri, total, echo),
            verbose=0,
        ),
    )
    start = time.monotonic()
    results = tuner.fit()
    return _summarise(spec, run_dir, results, tracking_uri, time.monotonic() - start, echo)


def find_sweep(name_or_path: str, storage: str | None = None) -> tuple[Location, dict[str, Any]]:
    """A sweep's folder and its ``hpsearch.json``, from its name (under the storage dir) or a
    path or URI of the folder; a UserError naming the sweeps there are when there is none."""
    given = location(name_or_path)
    if is_uri(name_or_path) or (given / META_FILE).is_file():
        return given, _read_meta(given, given.name)
    return run_dir_for(name_or_path, storage), load_meta(name_or_path, storage)


def resume_sweep(name: str, *, storage: str | None = None, spec: SweepSpec | None = None,
                 address: str | None = None, echo: Callable[[str], None] = print,
                 ) -> SweepOutcome:
    """Continue an interrupted sweep from Tune's experiment state and the trials' checkpoints."""
    from ray import tune

    meta = load_meta(name, storage)
    saved = parse_spec(meta["spec"], source=f"{name}/{META_FILE}")
    if spec is not None and spec_fingerprint(spec) != meta["fingerprint"]:
        raise UserError(f"resume {name}: the spec changed incompatibly since the sweep started "
                        "(space, fixed settings, objective, search, scheduler or max_epochs); "
                        "start a new sweep under another `name` instead")
    spec = spec or saved
    run_dir = run_dir_for(name, storage or meta.get("storage"))
    if not tune.Tuner.can_restore(str(run_dir)):
        raise UserError(f"resume {name}: {run_dir} holds no Tune experiment state to resume "
                        "(the sweep was interrupted before its first trial started)")
    bundle, slots = _prepare(spec, address)
    _quiet_tune(slots)
    tracking_uri = meta["tracking_uri"]
    from search.algorithms import planned_trials

    tuner = tune.Tuner.restore(str(run_dir), _trainable(spec, bundle), resume_unfinished=True,
                               resume_errored=True, param_space=dict(spec.trial_defaults()))
    # Fresh callbacks: the pickled ones would carry the dead driver's state.
    tuner._local_tuner.get_run_config().callbacks = _callbacks(
        spec, run_dir, tracking_uri, planned_trials(spec), echo)
    echo(f"hpsearch resume '{name}': continuing from {run_dir}")
    start = time.monotonic()
    results = tuner.fit()
    return _summarise(spec, run_dir, results, tracking_uri, time.monotonic() - start, echo)


def submit_sweep(spec_text: str, spec: SweepSpec, address: str, *, follow: bool = False,
                 echo: Callable[[str], None] = print) -> str:
    """Send a sweep to a running Ray cluster as a Ray Job (``hpsearch sweep --address auto``
    on the head node); returns the job id. Token auth: ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + 60
    while True:
        try:
            client = JobSubmissionClient(address)
            job_id = client.submit_job(
                # The spec travels as an env var: no working_dir package to upload or to be
                # garbage-collected under the running driver.
                entrypoint="hpsearch sweep env:HPSEARCH_SPEC_YAML --address auto",
                runtime_env={"env_vars": {"HPSEARCH_SPEC_YAML": spec_text}},
                submission_id=f"hpsearch-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                metadata={"hpsearch.sweep": spec.name})
            break
        except Exception as err:  # noqa: BLE001 - connection refused, auth, bad URL: one line
            text = str(err).strip()
            if "try again later" in text and time.monotonic() < deadline:
                time.sleep(3)  # the head's job agent is still starting
                continue
            first = text.splitlines()[0] if text else type(err).__name__
            raise UserError(f"--address {address}: the Ray job API refused or could not be "
                            f"reached ({first[:300]}); is the cluster up, and RAY_AUTH_MODE=token "
                            "with the cluster's RAY_AUTH_TOKEN set?") from None
    echo(f"submitted sweep '{spec.name}' as Ray job {job_id} to {address}")
    echo(f"  follow:  ray job logs {job_id} --address {address} --follow")
    echo(f"  status:  ray job status {job_id} --address {address}")
    echo(f"  dashboard: {address}")
    if follow:
        import asyncio

        async def tail() -> None:
            async for chunk in client.tail_job_logs(job_id):
                echo(chunk.rstrip("\n"))

        asyncio.run(tail())
        status = client.get_job_status(job_id)
        echo(f"job {job_id}: {status}")
        if str(status) != "SUCCEEDED":
            raise SystemExit(1)
    return job_id


def _write_meta(run_dir: Location, spec: SweepSpec, spec_text: str, tracking_uri: str) -> None:
    from search.tracking import git_commit

    meta = {"name": spec.name, "spec": spec.to_dict(), "spec_yaml": spec_text,
            "fingerprint": spec_fingerprint(spec), "storage": str(run_dir.parent),
            "tracking_uri": tracking_uri,
            "experiment": spec.tracking.experiment or spec.name, "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(run_dir / META_FILE, json.dumps(meta, indent=2))


def _summarise(spec: SweepSpec, run_dir: Location, results: Any, tracking_uri: str,
               wall_s: float, echo: Callable[[str], None]) -> SweepOutcome:
    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    counts: dict[str, int] = {}
    best: dict[str, Any] | None = None
    for r in results:
        m = r.metrics or {}
        status = "failed" if r.error else str(m.get("status", "unknown"))
        status = "stopped" if status == "running" else status
        counts[status] = counts.get(status, 0) + 1
        if r.metrics_dataframe is None or metric not in r.metrics_dataframe or status in (
                "rejected", "failed"):
            continue
        series = r.metrics_dataframe[metric]
        value = float(series.max() if mode == "max" else series.min())
        if best is None or (value > best["value"] if mode == "max" else value < best["value"]):
            best = {"value": value, "trial_id": m.get("trial_id"), "config": r.config,
                    "path": r.path}
    detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    echo(f"done in {wall_s:.0f}s: {len(results)} trials ({detail})")
    if best:
        varied = {k: best["config"][k] for k in spec.space if k in best["config"]}
        echo(f"best {metric} {best['value']:.4f}: trial {best['trial_id']} {varied}")
    echo(f"results: {run_dir} | MLflow: {tracking_uri} (experiment "
         f"'{spec.tracking.experiment or spec.name}') | report: hpsearch report {spec.name}")
    if (run_dir / "mlflow_pending").exists():
        echo(f"MLflow missed some results (it was unreachable): `hpsearch sync {spec.name}` "
             "replays them from the trial folders")
    return SweepOutcome(spec.name, run_dir, len(results), best, tracking_uri, counts)

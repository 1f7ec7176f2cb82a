"""Where trials run: a validated SweepSpec becomes a Ray Tune run (local, or an existing cluster).

Order of work, so that nothing starts on bad input: spec validated (cheap) -> preflight (data
resolvable, GPUs present, a feasible config exists) -> ``ray.init`` -> dataset decoded once and
put in the object store -> ``Tuner.fit()``. A sweep's folder ``<storage>/<name>/`` holds Tune's
experiment state plus ``hpsearch.json`` (the spec and where its tracking goes), which is what
``resume``, ``sync`` and ``report`` read; :mod:`search.sweepdir` reads and writes that folder.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpsearch.search.console import quiet_trial_errors
from hpsearch.search.spec import SweepSpec, parse_spec, spec_fingerprint
from hpsearch.search.storage import Location
from hpsearch.search.sweepdir import (
    META_FILE,
    check_storage,
    find_sweep,
    load_meta,
    pending_reason,
    run_dir_for,
    trial_dirname,
    write_meta,
)
from hpsearch.trainables.config import TrialConfig, parse_trial_config
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import Status

__all__ = ["META_FILE", "SweepOutcome", "check_sweep", "find_sweep", "load_meta", "resume_sweep",
           "run_dir_for", "run_sweep", "submit_sweep"]

CONNECT_TIMEOUT_ENV = "HPSEARCH_CONNECT_TIMEOUT"
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


def _base_config(spec: SweepSpec) -> TrialConfig:
    return parse_trial_config(spec.trial_defaults(), prefix="fixed.")


def _ray_running() -> bool:
    """Ray already started in this process (a script or test that called ``ray.init``): its
    resources, not this machine's, are what trials get (checked in :func:`_slots`)."""
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _preflight(spec: SweepSpec, address: str | None) -> None:
    """Checks that need torch but no Ray: data settings fixed, GPUs present, data resolvable."""
    from hpsearch.trainables.plugins import settings_of

    data_keys = _DATA_KEYS + settings_of("dataset", _base_config(spec).dataset)
    varied = [k for k in data_keys if k in spec.space]
    if varied:
        raise UserError(f"space.{varied[0]}: data settings ({', '.join(data_keys)}) must be "
                        "fixed for a sweep (one decoded copy is shared by every trial); "
                        "move it to `fixed`")
    if address is not None:  # before the data is decoded: a wrong address fails at once
        _probe(address, connect_timeout())
    if address is None:  # a local Ray gets this machine's CPUs; a cluster's are checked on it
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
        if spec.resources.cpu > cpus:
            raise UserError(f"resources.cpu: {spec.resources.cpu:g} CPUs per trial asked for, "
                            f"but this machine has {cpus}; set resources.cpu: {cpus} or less, "
                            "or run on a cluster with --address")
    if spec.resources.gpu > 0 and address is None and not _ray_running():
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
    from hpsearch.trainables.config import MODELS
    from hpsearch.trainables.cost import constraint_violation
    from hpsearch.trainables.models import trial_cost

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
        except Exception:
            if MODELS.is_plugin(config.model):  # a plugin's own bug fails its trials, not all
                continue
            raise
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
    from hpsearch.search.space import define_by_run, grid_configs, ofat_configs

    if spec.design == "ofat":
        return ofat_configs(spec)
    if spec.search.algorithm == "grid":
        return grid_configs(spec)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.search.seed))
    define = define_by_run(spec)
    return [define(study.ask()) for _ in range(n)]


def connect_timeout() -> float:
    """Seconds to wait for a Ray cluster at ``--address`` (``HPSEARCH_CONNECT_TIMEOUT``)."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV, "30")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise UserError(f"{CONNECT_TIMEOUT_ENV}={raw[:40]!r}: expected seconds > 0, e.g. 30")
    return value


def _address_error(address: str, timeout: float, why: str) -> UserError:
    return UserError(f"--address {address}: no Ray cluster answered within {timeout:g} s ({why}); "
                     f"start one (`ray start --head`) or fix the address; "
                     f"{CONNECT_TIMEOUT_ENV} sets the wait")


def _probe(address: str, timeout: float) -> None:
    """Wait up to ``timeout`` s for something to accept connections at a ``host:port`` address
    (Ray's own connect retries for minutes with nothing listening)."""
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():  # "auto", or a form Ray resolves itself
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                     timeout=max(0.1, min(5.0, deadline - time.monotonic()))
                                     ).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise _address_error(address, timeout, err.strerror or str(err)) from None
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _init_ray(address: str | None, plugins: list[str] | None = None) -> None:
    import ray

    from hpsearch.trainables.plugins import plugin_roots, shipped_modules

    if ray.is_initialized():
        return
    if address is None:
        # A local Ray's workers inherit this environment: the plugins' folders on their path.
        roots = plugin_roots(plugins or [])
        if roots:
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [*roots, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
        # "local": a Ray of its own, never a cluster some `ray start` left on this machine
        # (whose workers would lack this environment)
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, configure_logging=True)
        return
    # On a cluster, plugin code from the user's folders travels with the job to every node
    # (inside a submitted job it is on the driver's path already: the job shipped it).
    shipped = [] if _in_ray_job() else shipped_modules(plugins or [])
    runtime_env = {"py_modules": shipped} if shipped else None
    timeout = connect_timeout()
    # _preflight found something listening; if it is not a Ray head, ray.init would still
    # retry for minutes.
    import threading

    watchdog = threading.Timer(timeout, _connect_stuck, (address, timeout))
    watchdog.daemon = True
    watchdog.start()
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env=runtime_env)
    except ConnectionError as err:
        raise _address_error(address, timeout, str(err).splitlines()[0][:200]) from None
    finally:
        watchdog.cancel()


def _in_ray_job() -> bool:
    """Whether this driver is a Ray job's entrypoint (``hpsearch submit``)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ  # set by Ray's job supervisor


def _connect_stuck(address: str, waited: float) -> None:
    """ray.init cannot be interrupted from another thread: say so in one line and end."""
    import sys

    err = _address_error(address, waited, "it accepts connections but did not answer as a "
                         "Ray head")
    print(f"hpsearch: error: {err}", file=sys.stderr, flush=True)
    os._exit(2)


def _slots(spec: SweepSpec, run_dir: Location, address: str | None) -> tuple[int, str]:
    """How many trials run at once, and why when fewer than the cluster fits (a share of a
    shared one). As Ray places them: per node, the trials its CPUs hold and (for GPU trials)
    its GPUs hold, a fraction ``g`` packing ``floor(1/g)`` trials per device; summed over the
    alive nodes, then capped by ``resources.max_concurrent`` or a fair share."""
    import ray

    per = spec.resources
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")] or [ray.cluster_resources()]
    gpus = [n.get("GPU", 0) for n in nodes]
    if per.gpu > 0 and max(gpus) < per.gpu:
        where, fix = ("the Ray cluster has none", "0") if not any(gpus) else (
            f"no node has more than {max(gpus):g}", f"at most {max(gpus):g}")
        raise UserError(f"resources.gpu: {per.gpu:g} GPU per trial asked for, but {where}; "
                        f"set resources.gpu: {fix}")
    cpus = [n.get("CPU", 0) for n in nodes]
    if max(cpus) < per.cpu:
        raise UserError(f"resources.cpu: {per.cpu:g} CPUs per trial asked for, but no node of the "
                        f"Ray cluster has more than {max(cpus):g}")

    def fits(res: dict[str, float]) -> int:
        count = math.floor(res.get("CPU", 0) / per.cpu + 1e-9)
        if per.gpu >= 1:
            count = min(count, math.floor(res.get("GPU", 0) / per.gpu + 1e-9))
        elif per.gpu > 0:
            count = min(count, math.floor(res.get("GPU", 0) + 1e-9) * packed(per.gpu))
        return count

    slots = max(1, sum(fits(res) for res in nodes))
    if per.max_concurrent:
        return min(slots, per.max_concurrent), ""
    from hpsearch.search.driver import fair_share

    return fair_share(slots, run_dir, shared=address is not None)


def packed(gpu: float) -> int:
    """Trials one device holds at ``gpu`` per trial (below 1): Ray packs whole fractions."""
    return math.floor(1 / gpu + 1e-9)


def packing_note(spec: SweepSpec) -> str | None:
    """A warning when a GPU fraction leaves part of each device unused (0.3: 3 trials, not
    3.33)."""
    gpu = spec.resources.gpu
    if not 0 < gpu < 1 or abs(1 / gpu - packed(gpu)) < 1e-6:
        return None
    n = packed(gpu)
    return (f"warning: resources.gpu: {gpu:g} packs {n} trials per GPU, not {1 / gpu:.2f} "
            f"({1 - n * gpu:.0%} of each device stays unclaimed); 1/{n} = {1 / n:.3g} "
            f"claims it all")


def _quiet_tune(slots: int) -> None:
    """Our progress lines replace Tune's tables; keep every slot fed with a pending trial."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no banner, no tables
    # Tune keeps one pending trial for non-random searchers unless told otherwise, which
    # leaves slots idle between trials (the "OptunaSearch uses 1 of 2 CPUs" symptom).
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(slots)
    quiet_trial_errors()
    # A trial stopped (`hpsearch stop`) before its first epoch has no results yet: Tune's
    # result grid warns about each one; resume runs them.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _trainable(spec: SweepSpec, bundle: Any) -> Any:
    from ray import tune

    from hpsearch.trainables.tune_adapter import train_trial

    objective = dict(zip(spec.metrics, spec.modes, strict=True)) if spec.is_multi_objective \
        else {spec.metric: spec.mode}
    limits = {"max_params": spec.max_params, "max_macs": spec.max_macs}
    trainable = tune.with_parameters(
        train_trial, data=bundle.to_arrays() if bundle is not None else None, limits=limits,
        objective=objective, plugins=list(spec.plugins))
    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _callbacks(spec: SweepSpec, run_dir: Location, tracking_uri: str, total: int,
               echo: Callable[[str], None], bundle: Any, slots: int) -> list[Any]:
    """MLflow's tracker, the progress line, and the driver file last (it reads the line)."""
    from hpsearch.search.driver import SweepDriver
    from hpsearch.search.progress import ProgressPrinter
    from hpsearch.search.tracking import MlflowTracker
    from hpsearch.search.tracking.dataset import dataset_info

    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    tracker = MlflowTracker(
        sweep_name=spec.name, run_dir=run_dir, tracking_uri=tracking_uri,
        experiment=spec.experiment_name, spec_yaml=_resolved_yaml(spec),
        sweep_params=_sweep_params(spec), objective=(metric, mode),
        dataset=dataset_info(bundle, _base_config(spec)))
    printer = ProgressPrinter(total, metric, mode, echo=echo)
    driver = SweepDriver(run_dir, {"name": spec.name, "tracking_uri": tracking_uri,
                                   "experiment": spec.experiment_name, "slots": slots},
                         printer.snapshot, echo)
    return [tracker, printer, driver]


def _fit(tuner: Any, callbacks: list[Any], spec: SweepSpec, run_dir: Location,
         tracking_uri: str, stopper: Any, echo: Callable[[str], None]) -> SweepOutcome:
    """``tuner.fit()`` with the driver file kept; the outcome, or how a stop left it."""
    from hpsearch.trainables.vocab import SweepState

    driver = next(c for c in callbacks if hasattr(c, "stop_asked"))
    driver.start()
    start = time.monotonic()
    try:
        results = tuner.fit()
    except BaseException:
        driver.finish(SweepState.STOPPED if driver.stop_asked() else SweepState.INTERRUPTED)
        raise
    wall_s = time.monotonic() - start
    if driver.stop_asked():
        driver.finish(SweepState.STOPPED)
        snap = driver.progress
        echo(f"stopped after {wall_s:.0f}s: {snap['done']}/{snap['total']} trials done, every "
             f"finished epoch kept; `hpsearch resume {spec.name}` continues it")
        return SweepOutcome(spec.name, run_dir, len(results), None, tracking_uri,
                            {SweepState.STOPPED: len(results)})
    ended_itself = stopper is not None and stopper.reason
    if ended_itself:
        echo(f"sweep ended early: {stopper.reason}")
    snap = driver.snapshot()
    over = not snap["running"] and snap["done"] == snap["trials"]
    driver.finish(SweepState.FINISHED if over and (
        snap["done"] >= snap["total"] or spec.time_limit_seconds or ended_itself)
        else SweepState.INTERRUPTED)
    return _summarise(spec, run_dir, results, tracking_uri, wall_s, echo)


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


def _before_ray(spec: SweepSpec, address: str | None) -> Any:
    """Every check a sweep makes before Ray starts; the decoded data."""
    from hpsearch.trainables.config import BUILTIN_TRAINABLE
    from hpsearch.trainables.data import load_data

    _preflight(spec, address)
    if spec.search.warm_start:  # the earlier sweeps exist and are compatible
        from hpsearch.search.warmstart import warm_start

        warm_start(spec)
    if _base_config(spec).trainable != BUILTIN_TRAINABLE:
        return None  # a whole training function: no images to decode, no model to measure
    bundle = load_data(_base_config(spec))
    _check_candidates(spec, bundle, _candidates(spec),
                      enumerated=spec.design == "ofat" or spec.search.algorithm == "grid")
    return bundle


def _prepare(spec: SweepSpec, address: str | None, run_dir: Location) -> tuple[Any, int, str]:
    bundle = _before_ray(spec, address)
    _init_ray(address, spec.plugins)
    return bundle, *_slots(spec, run_dir, address)


def _check_new(spec: SweepSpec) -> Location:
    run_dir = run_dir_for(spec.name, spec.storage)
    if check_storage(run_dir):
        raise UserError(f"a sweep named '{spec.name}' already exists in {run_dir}; continue it "
                        f"with `hpsearch resume {spec.name}` or choose another `name`")
    return run_dir


def check_sweep(spec: SweepSpec, address: str | None = None) -> None:
    """``hpsearch sweep --check``: every rule :func:`run_sweep` applies before Ray starts (the
    storage usable and the name free, data found and decodable, resources there, a candidate
    config that builds and fits the constraints), with nothing started or written."""
    _check_new(spec)
    _before_ray(spec, address)


def run_sweep(spec: SweepSpec, spec_text: str, *, address: str | None = None,
              tracking_uri: str | None = None, echo: Callable[[str], None] = print,
              again: bool = False) -> SweepOutcome:
    """Run a whole sweep to the end and summarise it.

    ``again``: the sweep's folder exists from a driver killed before Tune's first snapshot;
    whatever it left (trial folders, MLflow trial runs) is cleared and the sweep starts over.
    """
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig

    from hpsearch.search.algorithms import build_scheduler, build_searcher, planned_trials

    run_dir = run_dir_for(spec.name, spec.storage) if again else _check_new(spec)
    bundle, slots, share = _prepare(spec, address, run_dir)
    from hpsearch.search.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(tracking_uri or spec.tracking.uri)
    total = planned_trials(spec)
    _quiet_tune(slots)
    run_dir.mkdir(parents=True, exist_ok=True)
    if again:
        from hpsearch.search.reconcile import TuneRecord, rollback

        rollback(run_dir, TuneRecord("", {}))  # no trial was recorded: none is kept
        _reconcile_mlflow(spec, run_dir, load_meta(spec.name, str(run_dir.parent)))
    else:
        _write_meta(run_dir, spec, spec_text, tracking_uri)

    echo(f"hpsearch sweep '{spec.name}': {total} trials, {slots} at once "
         f"({spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU each"
         f"{'; ' + share if share else ''}), "
         f"search {_search_words(spec)}, scheduler {spec.scheduler.name}; results in {run_dir}")
    if packing_note(spec):
        echo(packing_note(spec))
    if spec.search.warm_start:
        from hpsearch.search.warmstart import warm_start

        echo(warm_start(spec).summary(spec.search.warm_start))
    from hpsearch.search.stopping import study_stopping

    stopper, stop_callbacks = study_stopping(spec)
    callbacks = _callbacks(spec, run_dir, tracking_uri, total, echo, bundle, slots) \
        + stop_callbacks
    # metric/mode live on the searcher and scheduler (Tune rejects them in both places).
    tuner = tune.Tuner(
        _trainable(spec, bundle),
        param_space=dict(spec.trial_defaults()),
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(spec),
            scheduler=build_scheduler(spec),
            num_samples=total,
            # HyperBand pauses a rung's trials until the whole bracket reaches it: paused
            # trials hold no slot, so the cap counts them apart (pending stays at `slots`)
            max_concurrent_trials=total if spec.scheduler.name == "hyperband" else slots,
            time_budget_s=spec.time_limit_seconds,
            trial_dirname_creator=lambda t: trial_dirname(t.trial_id),
            # One warm worker process per slot, reused trial after trial: no Python + torch
            # start-up per trial (seconds each, which tiny trials would spend idle).
            reuse_actors=True,
        ),
        run_config=RunConfig(
            name=spec.name,
            storage_path=str(run_dir.parent),
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            failure_config=FailureConfig(max_failures=spec.resources.max_failures),
            callbacks=callbacks,
            stop=stopper,
            verbose=0,
        ),
    )
    return _fit(tuner, callbacks, spec, run_dir, tracking_uri, stopper, echo)


def _search_words(spec: SweepSpec) -> str:
    if spec.design == "ofat":
        return "ofat"
    if spec.search.algorithm == "optuna":
        return f"optuna ({spec.search.sampler_name})"
    return spec.search.algorithm


def resume_sweep(name: str, *, storage: str | None = None, spec: SweepSpec | None = None,
                 address: str | None = None, echo: Callable[[str], None] = print,
                 ) -> SweepOutcome:
    """Continue an interrupted sweep from Tune's experiment state and the trials' checkpoints.

    Tune's last snapshot is the record: the folder is first brought in line with it
    (:func:`search.reconcile.rollback`) and MLflow with both (``sync`` with repair), so every
    trial and every epoch ends up in Ray's record and in MLflow exactly once. A sweep killed
    before Tune's first snapshot starts again from its saved spec.
    """
    from ray import tune

    from hpsearch.search.reconcile import read_record, rollback

    meta = load_meta(name, storage)
    saved = parse_spec(meta["spec"], source=f"{name}/{META_FILE}")
    if spec is not None and spec_fingerprint(spec) != meta["fingerprint"]:
        raise UserError(f"resume {name}: the spec changed incompatibly since the sweep started "
                        "(space, fixed settings, objective, search, scheduler or max_epochs); "
                        "start a new sweep under another `name` instead")
    spec = spec or saved
    run_dir = run_dir_for(name, storage or meta.get("storage"))
    record = read_record(run_dir, drop_torn=True, trusted=True)  # Tune unpickles it too
    tracking_uri = meta["tracking_uri"]
    if record is None or not tune.Tuner.can_restore(str(run_dir)):
        echo(f"hpsearch resume '{name}': killed before Tune's first snapshot; starting it again")
        return run_sweep(spec, meta.get("spec_yaml", ""), address=address,
                         tracking_uri=tracking_uri, echo=echo, again=True)
    bundle, slots, share = _prepare(spec, address, run_dir)
    _quiet_tune(slots)
    rollback(run_dir, record)
    from hpsearch.search.algorithms import planned_trials

    if planned_trials(spec) != planned_trials(saved):  # resume --set budget.trials=N
        from hpsearch.search.reconcile import set_trial_budget

        started = set_trial_budget(run_dir, planned_trials(spec))
        write_meta(run_dir, {**meta, "spec": spec.to_dict()})
        echo(f"hpsearch resume '{name}': the budget is now {planned_trials(spec)} trials "
             f"(was {planned_trials(saved)}; {started} started)")
    _reconcile_mlflow(spec, run_dir, meta)

    tuner = tune.Tuner.restore(str(run_dir), _trainable(spec, bundle), resume_unfinished=True,
                               resume_errored=True, param_space=dict(spec.trial_defaults()))
    # Fresh callbacks and stopper: the pickled ones would carry the dead driver's state.
    from hpsearch.search.stopping import study_stopping

    stopper, stop_callbacks = study_stopping(spec)
    callbacks = _callbacks(spec, run_dir, tracking_uri, planned_trials(spec), echo, bundle,
                           slots) + stop_callbacks
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = callbacks
    run_config.stop = stopper
    echo(f"hpsearch resume '{name}': continuing from {run_dir}, {slots} trials at once"
         f"{' (' + share + ')' if share else ''}")
    return _fit(tuner, callbacks, spec, run_dir, tracking_uri, stopper, echo)


def _reconcile_mlflow(spec: SweepSpec, run_dir: Location, meta: dict[str, Any]) -> None:
    """MLflow made equal to Ray's record before the sweep goes on; when MLflow is down, the
    sweep goes on anyway and the ``mlflow_pending`` marker stays for a later ``sync``."""
    from hpsearch.search.tracking import sync

    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    try:
        sync(run_dir, spec.name, tracking_uri=meta["tracking_uri"],
             experiment=meta.get("experiment"), spec_yaml=meta.get("spec_yaml", ""),
             sweep_params=_sweep_params(spec), objective=(metric, mode), repair=True)
    except Exception as err:  # noqa: BLE001 - MLflow down: Ray's record is kept anyway
        logging.getLogger(__name__).warning(
            "MLflow at %s could not be brought in line with Ray's record now (%s); the sweep "
            "goes on, and `hpsearch sync %s` does it later", meta["tracking_uri"],
            str(err).splitlines()[0][:200] if str(err) else type(err).__name__, spec.name)


def submit_sweep(spec_text: str, spec: SweepSpec, address: str, *, follow: bool = False,
                 echo: Callable[[str], None] = print) -> str:
    """Send a sweep to a running Ray cluster as a Ray Job (``hpsearch sweep --address auto``
    on the head node); returns the job id. Token auth: ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``."""
    from ray.job_submission import JobSubmissionClient

    from hpsearch.search.driver import JOB_METADATA_KEY

    deadline = time.monotonic() + 60
    submission_id = f"hpsearch-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    while True:
        try:
            client = JobSubmissionClient(address)
            job_id = client.submit_job(
                # The spec travels as an env var: no working_dir package to upload or to be
                # garbage-collected under the running driver.
                entrypoint="hpsearch sweep env:HPSEARCH_SPEC_YAML --address auto",
                runtime_env=_job_env(spec, spec_text, submission_id, address),
                submission_id=submission_id,
                metadata={JOB_METADATA_KEY: spec.name})
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
    echo(f"  status:  hpsearch status {spec.name}  (or: ray job status {job_id} "
         f"--address {address})")
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


def _job_env(spec: SweepSpec, spec_text: str, submission_id: str,
             address: str) -> dict[str, Any]:
    """The job's runtime environment: the spec, how `hpsearch stop` reaches the job, and the
    plugins from the user's folders (Ray uploads them, so nothing has to be installed on the
    cluster)."""
    from hpsearch.search.driver import job_env
    from hpsearch.trainables.plugins import shipped_modules

    env: dict[str, Any] = {"env_vars": {"HPSEARCH_SPEC_YAML": spec_text,
                                        **job_env(submission_id, address)}}
    shipped = shipped_modules(spec.plugins)
    if shipped:
        env["py_modules"] = shipped
    return env


def _write_meta(run_dir: Location, spec: SweepSpec, spec_text: str, tracking_uri: str) -> None:
    from hpsearch.search.tracking import git_commit

    write_meta(run_dir, {
        "name": spec.name, "spec": spec.to_dict(), "spec_yaml": spec_text,
        "fingerprint": spec_fingerprint(spec), "storage": str(run_dir.parent),
        "tracking_uri": tracking_uri, "experiment": spec.experiment_name,
        "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _summarise(spec: SweepSpec, run_dir: Location, results: Any, tracking_uri: str,
               wall_s: float, echo: Callable[[str], None]) -> SweepOutcome:
    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    from hpsearch.search.progress import status_word

    counts: dict[str, int] = {}  # by the word the summary prints
    best: dict[str, Any] | None = None
    for r in results:
        m = r.metrics or {}
        last = str(m.get("status", Status.UNKNOWN))
        status = Status.FAILED if r.error else (
            Status.STOPPED_EARLY if last == Status.RUNNING else last)
        counts[status_word(status)] = counts.get(status_word(status), 0) + 1
        if r.metrics_dataframe is None or metric not in r.metrics_dataframe or status in (
                Status.REJECTED, Status.FAILED, Status.DIVERGED):  # none is a model to pick
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
    elif results:
        echo(f"no best trial: none completed or was stopped early with a {metric} "
             f"({detail}); lower the learning rates or check the data")
    echo(f"results: {run_dir} | MLflow: {tracking_uri} (experiment "
         f"'{spec.experiment_name}') | report: hpsearch report {spec.name}")
    reason = pending_reason(run_dir)
    if reason:
        echo(f"MLflow may lack some results ({reason}): `hpsearch sync {spec.name}` "
             "replays them from the trial folders")
    return SweepOutcome(spec.name, run_dir, len(results), best, tracking_uri, counts)


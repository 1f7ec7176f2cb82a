"""Before any trial starts: every check a sweep makes, Ray started or joined, and how many
trials run at once.

Order of work, so that nothing starts on bad input: data settings fixed, the cluster address
answering, CPUs/GPUs there, the data found and decoded, a candidate config that builds and fits
the cost limits (:func:`before_ray`, also ``sweep --check``) -> ``ray.init`` (:func:`init_ray`)
-> the slots, counted per node as Ray places trials (:func:`slots_for`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from typing import Any

from hpsearch.search.spec import SweepSpec
from hpsearch.search.storage import Location
from hpsearch.trainables.config import TrialConfig, parse_trial_config
from hpsearch.trainables.errors import UserError

__all__ = ["CONNECT_TIMEOUT_ENV", "base_config", "before_ray", "connect_timeout", "init_ray",
           "packed", "packing_note", "prepare", "slots_for"]

CONNECT_TIMEOUT_ENV = "HPSEARCH_CONNECT_TIMEOUT"
# Settings that decide which data a trial sees: one decoded copy serves the whole sweep.
_DATA_KEYS = ("dataset", "data_dir", "val_fraction", "split_seed", "train_limit", "eval_limit")


def base_config(spec: SweepSpec) -> TrialConfig:
    return parse_trial_config(spec.trial_defaults(), prefix="fixed.")


def _ray_running() -> bool:
    """Ray already started in this process (a script or test that called ``ray.init``): its
    resources, not this machine's, are what trials get (checked in :func:`_slots`)."""
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def preflight(spec: SweepSpec, address: str | None) -> None:
    """Checks that need torch but no Ray: data settings fixed, GPUs present, data resolvable."""
    from hpsearch.trainables.plugins import settings_of

    data_keys = _DATA_KEYS + settings_of("dataset", base_config(spec).dataset)
    varied = [k for k in data_keys if k in spec.space]
    if varied:
        raise UserError(f"space.{varied[0]}: data settings ({', '.join(data_keys)}) must be "
                        "fixed for a sweep (one decoded copy is shared by every trial); "
                        "move it to `fixed`")
    if address is not None:  # before the data is decoded: a wrong address fails at once
        probe(address, connect_timeout())
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


def check_candidates(spec: SweepSpec, bundle: Any, configs: list[dict[str, Any]],
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


def candidates(spec: SweepSpec, n: int = 32) -> list[dict[str, Any]]:
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


def probe(address: str, timeout: float) -> None:
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


def init_ray(address: str | None, plugins: list[str] | None = None) -> None:
    import ray

    from hpsearch.trainables.plugins import plugin_roots, shipped_modules

    if ray.is_initialized():
        return
    few_malloc_arenas()
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
    # preflight found something listening; if it is not a Ray head, ray.init would still
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


# glibc's ``mallopt`` parameter M_ARENA_MAX, and the arenas this driver's threads share
_M_ARENA_MAX, DRIVER_ARENAS = -8, 2


@functools.cache
def _glibc() -> Any | None:
    """The C library if it is glibc (Linux), else None (musl, macOS: allocators of their own)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # a Linux without glibc (musl)
        return None


def few_malloc_arenas() -> None:
    """Let this process's threads share :data:`DRIVER_ARENAS` glibc heap arenas, unless
    ``MALLOC_ARENA_MAX`` says otherwise (Linux with glibc only; elsewhere nothing changes).

    The driver runs dozens of threads (Tune's loop, Ray's core worker, gRPC, the MLflow
    writer); glibc gives threads up to 8 arenas per core, each holding freed memory of its own.
    At 1,000 tiny trials the driver's memory grew 174 KB per trial with the default and 110 KB
    with two arenas, at the same speed (``bench/scale.py``). Only this process: Ray's workers
    inherit no setting.
    """
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc.mallopt(_M_ARENA_MAX, DRIVER_ARENAS)
    except AttributeError:  # a C library without mallopt
        pass


def trim_heap() -> bool:
    """Give the C heap's free pages back to the OS (glibc's ``malloc_trim``); False where there
    is none. Through a sweep the driver allocates and frees for every trial (Tune's results and
    JSON, Optuna's trial copies, SQLite): glibc keeps the freed pages of its arenas, which grew
    the driver by about 30 KB per trial of memory it no longer used (``bench/scale.py``). The
    driver's heartbeat calls it; ctypes drops the GIL for the call."""
    trim = getattr(_glibc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


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


def slots_for(spec: SweepSpec, run_dir: Location, address: str | None) -> tuple[int, str]:
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


def before_ray(spec: SweepSpec, address: str | None) -> Any:
    """Every check a sweep makes before Ray starts; the decoded data."""
    from hpsearch.trainables.config import BUILTIN_TRAINABLE
    from hpsearch.trainables.data import load_data

    preflight(spec, address)
    if spec.search.warm_start:  # the earlier sweeps exist and are compatible
        from hpsearch.search.warmstart import warm_start

        warm_start(spec)
    if base_config(spec).trainable != BUILTIN_TRAINABLE:
        return None  # a whole training function: no images to decode, no model to measure
    bundle = load_data(base_config(spec))
    check_candidates(spec, bundle, candidates(spec),
                      enumerated=spec.design == "ofat" or spec.search.algorithm == "grid")
    return bundle


def prepare(spec: SweepSpec, address: str | None, run_dir: Location) -> tuple[Any, int, str]:
    bundle = before_ray(spec, address)
    init_ray(address, spec.plugins)
    return bundle, *slots_for(spec, run_dir, address)

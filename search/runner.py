"""Where trials run: a validated SweepSpec becomes a Ray Tune run (local, or an existing cluster).

Order of work, so that nothing starts on bad input: spec validated (cheap) -> the checks of
:mod:`search.preflight` (data resolvable, resources there, a feasible config exists) ->
``ray.init`` -> dataset decoded once and put in the object store -> ``Tuner.fit()``. A sweep's
folder ``<storage>/<name>/`` holds Tune's experiment state plus ``hpsearch.json`` (the spec
and where its tracking goes), which is what ``resume``, ``sync`` and ``report`` read;
:mod:`search.sweepdir` reads and writes that folder. ``submit`` lives in :mod:`search.submit`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hpsearch.search.console import quiet_trial_errors
from hpsearch.search.preflight import base_config, before_ray, packing_note, prepare
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
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import Status

__all__ = ["META_FILE", "SweepOutcome", "check_sweep", "find_sweep", "load_meta", "resume_sweep",
           "run_dir_for", "run_sweep"]


@dataclass
class SweepOutcome:
    """What a finished sweep printed as its last line, as data."""

    name: str
    run_dir: Location
    trials: int
    best: dict[str, Any] | None
    tracking_uri: str
    counts: dict[str, int]


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
    # Under PBT another trial may copy any checkpoint a trial kept: each keeps them all.
    keep = {"keep": None} if spec.scheduler.name == "pbt" else {}
    trainable = tune.with_parameters(
        train_trial, data=bundle.to_arrays() if bundle is not None else None, limits=limits,
        objective=objective, plugins=list(spec.plugins), **keep)
    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _trial_dir(trial: Any) -> str:
    """A trial's folder name (:func:`trial_dirname`). A module-level function: Tune writes it
    into every trial's state, where a lambda would be pickled whole (1.4 KB per trial, in
    memory and in each experiment snapshot)."""
    return trial_dirname(trial.trial_id)


def _callbacks(spec: SweepSpec, run_dir: Location, tracking_uri: str, total: int,
               echo: Callable[[str], None], bundle: Any, slots: int) -> list[Any]:
    """A paused trial's result file kept, Tune's record of each trial kept small, MLflow's
    tracker, the progress line, the driver file (it reads the line), and Tune's CSV and JSON
    loggers.

    Not Tune's TensorBoard logger, which Tune adds unless told not to: MLflow holds the curves,
    and at thousands of trials it was a tenth of the driver's time per result (an event file
    flushed per result) and kept ~3 KB per trial alive after the trial ended (an exit hook per
    file writer).
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from hpsearch.search.driver import SweepDriver
    from hpsearch.search.leanrecord import LeanTrialRecord
    from hpsearch.search.progress import ProgressPrinter
    from hpsearch.search.resultlog import KeepResultLog
    from hpsearch.search.tracking import MlflowTracker
    from hpsearch.search.tracking.dataset import dataset_info

    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    tracker = MlflowTracker(
        sweep_name=spec.name, run_dir=run_dir, tracking_uri=tracking_uri,
        experiment=spec.experiment_name, spec_yaml=_resolved_yaml(spec),
        sweep_params=_sweep_params(spec), objective=(metric, mode),
        dataset=dataset_info(bundle, base_config(spec)) if bundle is not None else None)
    printer = ProgressPrinter(total, metric, mode, echo=echo)
    driver = SweepDriver(run_dir, {"name": spec.name, "tracking_uri": tracking_uri,
                                   "experiment": spec.experiment_name, "slots": slots},
                         printer.snapshot, echo)
    return [KeepResultLog(), tracker, printer, driver, CSVLoggerCallback(),
            JsonLoggerCallback(),  # where Tune put its own
            LeanTrialRecord(spec.metrics)]  # last: every other callback sees the whole record


_AUTO_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


@contextlib.contextmanager
def _tune_loggers_as_given() -> Iterator[None]:
    """No logger added by Tune to the callbacks (its TensorBoard one), for one ``fit()``;
    a value the user set stays."""
    if _AUTO_LOGGERS in os.environ:
        yield
        return
    os.environ[_AUTO_LOGGERS] = "1"
    try:
        yield
    finally:
        os.environ.pop(_AUTO_LOGGERS, None)


def _fit(tuner: Any, callbacks: list[Any], spec: SweepSpec, run_dir: Location,
         tracking_uri: str, stopper: Any, echo: Callable[[str], None]) -> SweepOutcome:
    """``tuner.fit()`` with the driver file kept; the outcome, or how a stop left it."""
    from hpsearch.search.tracking import MlflowTracker
    from hpsearch.trainables.vocab import SweepState

    driver = next(c for c in callbacks if hasattr(c, "stop_asked"))
    driver.start()
    start = time.monotonic()
    limit = spec.time_limit_seconds

    def ended_itself() -> bool:
        """The sweep ended on its own rule (target, plateau, Terminator, time limit), not on a
        stop or an interrupt: Tune then ends the trials left."""
        return not driver.stop_asked() and (bool(stopper is not None and stopper.reason) or (
            limit is not None and time.monotonic() - start >= limit))

    for tracker in (c for c in callbacks if isinstance(c, MlflowTracker)):
        tracker.ended_itself = ended_itself
    try:
        with _tune_loggers_as_given():
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
    reason = stopper.reason if stopper is not None else None
    if reason:
        echo(f"sweep ended early: {reason}")
    snap = driver.snapshot()
    over = not snap["running"] and snap["done"] == snap["trials"]
    driver.finish(SweepState.FINISHED if over and (
        snap["done"] >= snap["total"] or spec.time_limit_seconds or reason)
        else SweepState.INTERRUPTED)
    return _summarise(spec, run_dir, results, tracking_uri, wall_s, echo, snap["ended"])


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
    before_ray(spec, address)


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
    bundle, slots, share = prepare(spec, address, run_dir)
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
            max_concurrent_trials=_concurrency_cap(spec, slots),
            time_budget_s=spec.time_limit_seconds,
            trial_dirname_creator=_trial_dir,
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


def _concurrency_cap(spec: SweepSpec, slots: int) -> int:
    """Tune's cap on live trials. HyperBand pauses a rung's trials until the whole bracket
    reaches it, PBT until the whole population does: paused trials hold no slot, so the cap
    counts them apart (the trials placed at once stay at ``slots`` through
    ``TUNE_MAX_PENDING_TRIALS_PG``)."""
    from hpsearch.search.algorithms import planned_trials

    return planned_trials(spec) if spec.scheduler.name in ("hyperband", "pbt") else slots


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

    from hpsearch.search.reconcile import read_record, rollback, set_concurrency

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
    bundle, slots, share = prepare(spec, address, run_dir)
    _quiet_tune(slots)
    rollback(run_dir, record)
    from hpsearch.search.algorithms import planned_trials

    if planned_trials(spec) != planned_trials(saved):  # resume --set budget.trials=N
        from hpsearch.search.reconcile import set_trial_budget

        started = set_trial_budget(run_dir, planned_trials(spec))
        write_meta(run_dir, {**meta, "spec": spec.to_dict()})
        echo(f"hpsearch resume '{name}': the budget is now {planned_trials(spec)} trials "
             f"(was {planned_trials(saved)}; {started} started)")
    # the share (or resources.max_concurrent) as of now, not as of the start: Tune would
    # restore the cap its searcher snapshot holds
    set_concurrency(run_dir, _concurrency_cap(spec, slots))
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


def _write_meta(run_dir: Location, spec: SweepSpec, spec_text: str, tracking_uri: str) -> None:
    from hpsearch.search.tracking import git_commit

    write_meta(run_dir, {
        "name": spec.name, "spec": spec.to_dict(), "spec_yaml": spec_text,
        "fingerprint": spec_fingerprint(spec), "storage": str(run_dir.parent),
        "tracking_uri": tracking_uri, "experiment": spec.experiment_name,
        "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _summarise(spec: SweepSpec, run_dir: Location, results: Any, tracking_uri: str,
               wall_s: float, echo: Callable[[str], None],
               counts: dict[str, int]) -> SweepOutcome:
    """The sweep's last lines; ``counts``: how its trials ended, by the word the progress line
    and ``hpsearch status`` use (:meth:`ProgressPrinter.snapshot`), so all three agree."""
    metric = spec.metrics[0] if spec.is_multi_objective else spec.metric
    mode = spec.modes[0] if spec.is_multi_objective else spec.mode
    best: dict[str, Any] | None = None
    for r in results:
        m = r.metrics or {}
        last = str(m.get("status", Status.UNKNOWN))
        status = Status.FAILED if r.error else (
            Status.STOPPED_EARLY if last == Status.RUNNING else last)
        if r.metrics_dataframe is None or metric not in r.metrics_dataframe or status in (
                Status.REJECTED, Status.FAILED, Status.DIVERGED):  # none is a model to pick
            continue
        series = r.metrics_dataframe[metric]
        value = float(series.max() if mode == "max" else series.min())
        if best is None or (value > best["value"] if mode == "max" else value < best["value"]):
            best = {"value": value, "trial_id": m.get("trial_id"), "config": r.config,
                    "path": r.path}
    detail = ", ".join(f"{n} {k}" for k, n in counts.items())  # completed first, as `status`
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


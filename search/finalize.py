"""``hpsearch finalize NAME``: the sweep's best trial retrained on train+val and tested once.

The best trial is the report's (:mod:`search.report`): the first completed trial in its ranking,
scored at full fidelity by the sweep's objective. Its config is trained again standalone, without
Ray, as ``hpsearch train`` runs :func:`trainables.fit.fit`: with ``val_fraction 0`` (the whole
training split), its own seed and epochs, and without ``train_limit``/``eval_limit``; then tested
once on the whole test set. The run goes to the sweep's MLflow experiment, nested under its
parent run and tagged :attr:`~trainables.vocab.Role.FINAL`, with the config as params, the
trials' metric names, the model (``mlflow.pytorch.log_model``) and a registered-model version.
:data:`~search.sweepdir.FINAL_FILE` in the sweep's folder keeps the record the report shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.search.names import plain_name
from hpsearch.search.operate import view_sweep
from hpsearch.search.report.formats import is_accuracy, missing
from hpsearch.search.storage import Location, storage_error
from hpsearch.search.sweepdir import (
    FINAL_FILE,
    PARAMS_FILE,
    find_sweep,
    has_marker,
    read_json,
    read_run_map,
    trial_dirname,
    write_json,
)
from hpsearch.trainables.config import BUILTIN_TRAINABLE, TrialConfig, parse_trial_config
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import FINAL_METRICS, HISTORY_METRICS, Status, SweepState

if TYPE_CHECKING:
    import pandas as pd

    from hpsearch.search.report.data import SweepData

__all__ = ["DROPPED", "best_trial", "final_config", "finalize"]

# Settings a sweep may use to make trials cheap that the final model drops: it trains on the
# whole training split and is tested on the whole test set.
DROPPED = ("train_limit", "eval_limit")
_EXAMPLE_IMAGES = 4  # test images logged as the MLflow model's input example


def best_trial(data: SweepData, command: str = "finalize") -> pd.Series:
    """The best completed trial as the report ranks them (every epoch run, scored by the
    objective), or a UserError when no trial completed."""
    done = data.completed[data.completed[data.score_column].notna()]
    if done.empty:
        counts = data.trials["status"].value_counts()
        shown = ", ".join(f"{n} {Status(s).label if s in tuple(Status) else s}"
                          for s, n in counts.items())
        raise UserError(f"{command} {data.name}: no trial completed every epoch with a score "
                        f"({len(data.trials)} trials: {shown}); there is no best trial to "
                        "retrain")
    return done.iloc[0]


def final_config(config: Mapping[str, Any], *, epochs: int | None = None,
                 device: str | None = None) -> tuple[TrialConfig, dict[str, Any]]:
    """A trial's config as the final model trains it: ``val_fraction 0`` (train+val), no
    :data:`DROPPED` limits, ``epochs`` and ``device`` when given; and the limits dropped
    (setting -> the trial's value)."""
    values = dict(config)
    dropped = {k: values[k] for k in DROPPED if values.get(k) is not None}
    values.update({k: None for k in DROPPED}, val_fraction=0.0)
    if epochs is not None:
        values["epochs"] = epochs
    if device is not None:
        values["device"] = device
    return parse_trial_config(values, "final config: "), dropped


def _trial_config(run_dir: Location, data: SweepData, row: pd.Series) -> dict[str, Any]:
    """The trial's own config (its ``params.json``), else its settings in the trials frame."""
    try:
        saved = read_json(run_dir / trial_dirname(str(row["trial_id"])) / PARAMS_FILE)
    except OSError:
        saved = None
    if saved:
        return saved
    out = {}
    for key in data.config_keys:
        value = row[key]
        if missing(value):
            continue
        value = value.item() if isinstance(value, np.generic) else value
        out[key] = list(value) if isinstance(value, tuple) else value
    if not missing(row["epochs_run"]) and "epochs" not in out:
        out["epochs"] = int(row["epochs_run"])
    return out


def _load(ref: str, storage: str | None,
          ) -> tuple[Location, dict[str, Any], SweepData, SweepState]:
    """The sweep's folder, meta, trials and state; a UserError when it runs or cannot be
    read."""
    from hpsearch.search.report import from_ray_dir

    run_dir, meta = find_sweep(ref, storage)
    for key in ("name", "experiment"):  # a copied or edited hpsearch.json is user input too
        if meta.get(key) is not None:
            plain_name(meta[key], f"finalize {ref}: hpsearch.json {key}")
    name = str(meta.get("name") or run_dir.name)
    try:
        state = view_sweep(run_dir, meta).state
    except OSError as err:
        raise UserError(storage_error(run_dir, err)) from None
    if state == SweepState.RUNNING:
        raise UserError(f"finalize {name}: the sweep is still running; wait for it to end or "
                        f"`hpsearch stop {name}`, then finalize it")
    try:
        data = from_ray_dir(run_dir)
    except UserError as err:  # the report's words for an empty sweep
        text = str(err)
        raise UserError(f"finalize {text.removeprefix('report ')}" if text.startswith("report ")
                        else text) from None
    return run_dir, meta, data, SweepState(state)


def _open_mlflow(run_dir: Location, meta: Mapping[str, Any], data: SweepData,
                 uri: str) -> Any:
    """The sweep's tracking store with its parent run found (created if MLflow lacks it)."""
    from hpsearch.search.tracking.store import _Store

    store = _Store(tracking_uri=uri, run_dir=run_dir, sweep_name=data.name,
                   experiment=meta.get("experiment"), objective=data.objective)
    store.ensure_parent(spec_yaml=meta.get("spec_yaml") or "")
    return store


def _mlflow_error(name: str, uri: str, err: BaseException, after: str = "") -> UserError:
    text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return UserError(f"finalize {name}: MLflow at {uri} failed ({text}){after}")


def finalize(ref: str, *, storage: str | None = None, tracking_uri: str | None = None,
             epochs: int | None = None, model_name: str | None = None,
             device: str | None = None,
             echo: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Retrain a sweep's best trial on train+val, test it once, log it to MLflow and write
    :data:`FINAL_FILE`.

    Args:
        ref: The sweep's name (under ``storage``) or its folder (a path or URI).
        storage: Where sweeps are (default ``$HPSEARCH_STORAGE`` or ``runs``).
        tracking_uri: Another MLflow than the sweep's.
        epochs: Train this many epochs instead of the trial's.
        model_name: The registered model's name (default: the sweep's name).
        device: Train on this device instead of the trial's setting.
        echo: Where the progress lines go.

    Returns:
        The record written to :data:`FINAL_FILE`; None when the retrained model diverged
        (nothing is logged then).

    Raises:
        UserError: No such sweep, it still runs, no trial completed, the data is missing, the
            device is not here, or MLflow cannot be reached.
    """
    run_dir, meta, data, state = _load(ref, storage)
    name = data.name
    row = best_trial(data)
    trial_id = str(row["trial_id"])
    config, dropped = final_config(_trial_config(run_dir, data, row), epochs=epochs,
                                   device=device)
    if config.trainable != BUILTIN_TRAINABLE:
        raise UserError(f"finalize {name}: trial {trial_id} runs trainable "
                        f"'{config.trainable}', a plugin's own training function; finalize "
                        f"retrains the built-in '{BUILTIN_TRAINABLE}' only")
    from hpsearch.search.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or meta.get("tracking_uri"))
    registered = model_name or name

    import torch

    from hpsearch.trainables.data import load_data
    from hpsearch.trainables.fit import console_reporter, fit, pick_device

    try:
        where = pick_device(config.device)
    except UserError:
        asked = f"--device {device}" if device else \
            f"trial {trial_id} ran with device '{config.device}'"
        raise UserError(f"finalize {name}: {asked} and no CUDA GPU is visible here; pass "
                        "--device cpu (or auto)") from None
    bundle = load_data(config)  # missing data: one line, before MLflow is touched
    try:
        store = _open_mlflow(run_dir, meta, data, uri)  # before training: a dead server fails fast
    except Exception as err:  # noqa: BLE001 - MLflow down or refusing: one line
        raise _mlflow_error(name, uri, err, "; nothing was trained") from None
    if has_marker(run_dir):
        echo(f"note: MLflow may lack some of the sweep's trials; `hpsearch sync {name}` "
             "adds them")

    metric, mode = data.objective
    score = float(row[data.score_column])
    shown = f"{100 * score:.2f}%" if is_accuracy(metric) else f"{score:.4g}"
    echo(f"hpsearch finalize: sweep '{name}' ({state}), best trial {trial_id} ({metric} "
         f"{shown}, {mode}imised) retrained on train+val (val_fraction 0) for "
         f"{config.epochs} epoch(s), seed {config.seed}, on {where}")
    if dropped:
        echo(f"dropped {' and '.join(f'{k} {v}' for k, v in dropped.items())}: the final model "
             "trains on the whole training split and is tested on the whole test set")
    start = time.perf_counter()
    result = fit(config, console_reporter(config.epochs, echo), data=bundle)
    wall = time.perf_counter() - start
    if result.status != Status.COMPLETED or "test_top1" not in result.metrics:
        echo(f"finalize {name}: the retrained model diverged (loss not finite at epoch "
             f"{result.metrics.get('epoch', '?')}); nothing was logged or written")
        return None
    m = result.metrics
    finals = {k: float(m[k]) for k in FINAL_METRICS if isinstance(m.get(k), int | float)}
    echo(f"final model: test top-1 {100 * m['test_top1']:.2f}%, test loss "
         f"{m['test_loss']:.4f}, params {m['params']:,}, MACs/image {m['macs']:,}, "
         f"{wall:.1f} s")
    record: dict[str, Any] = {
        "sweep": name, "trial_id": trial_id,
        "objective": {"metric": metric, "mode": mode, "trial_score": score},
        "epochs": config.epochs, "seed": config.seed, "device": str(where),
        "train_samples": int(m["train_samples"]), "test_samples": len(bundle.test_y),
        "dropped": dropped, "config": config.to_dict(), "metrics": finals,
        "params": int(m["params"]), "macs": int(m["macs"]), "wall_seconds": wall,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    model = _standalone(result.model, bundle, config, torch)
    try:
        record["mlflow"] = _log(store, record, result.history, model, bundle, registered)
    except Exception as err:  # noqa: BLE001 - logged what it could; the record still says it
        record["mlflow"] = None
        _write(run_dir, record)
        raise _mlflow_error(name, uri, err, f"; the test scores are in {run_dir / FINAL_FILE}, "
                            "the model is not in MLflow") from None
    _write(run_dir, record)
    info = record["mlflow"]
    echo(f"MLflow: run {info['run_id']} (experiment '{info['experiment']}' at {uri}, nested "
         f"under the sweep's run); registered model '{registered}' version {info['version']}")
    echo(f"wrote {run_dir / FINAL_FILE}; `hpsearch report {name}` shows it")
    return record


def _standalone(model: Any, bundle: Any, config: TrialConfig, torch: Any) -> Any:
    """The trained model as it is logged: on the CPU, in eval mode, its input normalisation
    inside (:class:`trainables.fit.ImageClassifier`)."""
    from hpsearch.trainables.fit import ImageClassifier

    model = model.to("cpu", memory_format=torch.contiguous_format)
    return ImageClassifier(model, bundle, config).eval()


def _write(run_dir: Location, record: Mapping[str, Any]) -> None:
    try:
        write_json(run_dir / FINAL_FILE, record)
    except OSError as err:
        raise UserError(storage_error(run_dir, err)) from None


def _log(store: Any, record: Mapping[str, Any], history: list[dict[str, Any]], model: Any,
         bundle: Any, registered: str) -> dict[str, Any]:
    """The final run: params, metrics, the model and its registered version."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from hpsearch.search.tracking.values import NOTE_TAG, flatten_params, now_ms

    trial_id, name = record["trial_id"], record["sweep"]
    trial_run = read_run_map(store.run_dir, store.uri).get("trials", {}).get(trial_id)
    limits = f", without {' and '.join(record['dropped'])}" if record["dropped"] else ""
    note = (f"final model of sweep {name}: trial {trial_id} (the best completed trial by "
            f"{record['objective']['metric']}) retrained on train+val for {record['epochs']} "
            f"epochs{limits}, tested once on the whole test set")
    tags = {"hpsearch.from_trial_id": trial_id, NOTE_TAG: note}
    if trial_run:
        tags["hpsearch.from_run_id"] = trial_run
    run = store.create_final(tags, f"{name}-final")
    run.add_params(flatten_params(record["config"]))
    stamp = now_ms()
    for row in history:  # the curves of the retrain: the trials' names, step = epoch
        store.add_metrics(run, {k: float(row[k]) for k in HISTORY_METRICS
                                if isinstance(row.get(k), int | float) and math.isfinite(row[k])},
                          int(row["epoch"]), stamp)
    store.add_metrics(run, {**record["metrics"], "train_samples": float(record["train_samples"])},
                      int(record["epochs"]), stamp)
    store.flush(run)

    example = (bundle.test_x[:_EXAMPLE_IMAGES].float() / 255).numpy()
    with torch.inference_mode():
        logits = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(store.uri)
    with mlflow.start_run(run_id=run.run_id):
        info = mlflow.pytorch.log_model(
            model, name="model", registered_model_name=registered, input_example=example,
            signature=infer_signature(example, logits),
            pip_requirements=mlflow.pytorch.get_default_pip_requirements())
    return {"tracking_uri": store.uri, "experiment": store.experiment_name,
            "experiment_id": store.experiment_id, "parent_run_id": store.parent.run_id,
            "run_id": run.run_id, "model_uri": info.model_uri, "registered_model": registered,
            "version": int(info.registered_model_version),
            "version_uri": f"models:/{registered}/{info.registered_model_version}"}

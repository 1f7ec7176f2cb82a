"""The sweep's best model on its parent run: the weights of the trial behind the best result
(``best/model.pt``) and what they are (``best/best.json``)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpsearch.search.storage import Location, RemotePath
from hpsearch.search.sweepdir import result_step
from hpsearch.search.tracking.store import _Store
from hpsearch.search.tracking.values import result_metrics

__all__ = ["log_best"]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"


def log_best(store: _Store, checkpoints: Mapping[str, Any] | None = None,
             only_missing: bool = False) -> Path | None:
    """The best result's trial weights (``model.pt``) as parent artifact ``best/model.pt``,
    with ``best/best.json`` (trial, run, epoch, metrics).

    Prefers the checkpoint saved with the best result; falls back to the trial's latest,
    then to Tune's record of it. On remote storage only that one checkpoint is fetched.
    """
    best, parent = store.best, store.parent
    if best.trial_id is None or best.result is None or parent is None:
        return None
    if only_missing and "best/best.json" in store.artifact_names(parent, "best"):
        return None
    child = store.children.get(best.trial_id)
    with tempfile.TemporaryDirectory() as tmp:
        found = _best_checkpoint(store, child.trial_path, best.result.get(
            "checkpoint_dir_name"), Path(tmp)) if child and child.trial_path else None
        if found is not None:
            weights = _weights_in(found[0], Path(tmp))
            if weights is not None:
                return _upload_best(store, weights, found[1])
        checkpoint = (checkpoints or {}).get(best.trial_id)
        if checkpoint is not None:
            with checkpoint.as_directory() as local:  # remote storage: a local copy
                weights = _weights_in(Path(local), Path(tmp))
                return _upload_best(store, weights, checkpoint.path if weights else None)
        return _upload_best(store, None, None)


def _best_checkpoint(store: _Store, trial_path: str, name: str | None,
                     tmp: Path) -> tuple[Path, str] | None:
    """A local folder of the trial's checkpoint ``name``, else of its newest one, and where
    that checkpoint is; from remote storage only this one checkpoint is downloaded."""
    from hpsearch.trainables.tune_adapter import CHECKPOINT_FILE, COMPLETE_FILE

    wanted = (WEIGHTS_FILE, CHECKPOINT_FILE, COMPLETE_FILE)  # all fetched from S3
    trial = store.trial_folder(trial_path)
    candidates = [trial / name] if name else []
    candidates += sorted(trial.glob("checkpoint_*"), key=str, reverse=True)
    for ckpt in candidates:
        if not _has_weights(ckpt):
            continue
        if isinstance(ckpt, RemotePath):
            local = ckpt.download(tmp / ckpt.name, skip=lambda rel: rel not in wanted)
            return local, str(ckpt)
        return ckpt, str(ckpt)
    return None


def _upload_best(store: _Store, weights: Path | None, source: str | None) -> Path | None:
    best, parent = store.best, store.parent
    if parent is None or best.result is None or best.trial_id is None:
        return None
    weights = weights if weights is not None and weights.is_file() else None
    if weights is not None:
        store.upload(parent, weights, "best")
    child = store.children.get(best.trial_id)
    info = {"trial_id": best.trial_id, "run_id": child.run_id if child else None,
            "metric": best.metric, "mode": best.mode, "value": best.value,
            "epoch": result_step(best.result),
            "checkpoint": best.result.get("checkpoint_dir_name"),
            "weights_from": source if weights else None,
            "metrics": result_metrics(best.result)}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "best.json").write_text(json.dumps(info, indent=1))
        store.upload(parent, Path(tmp) / "best.json", "best")  # last: marks "done"
    return weights


def _weights_in(ckpt: Path, tmp: Path) -> Path | None:
    """A checkpoint folder's model weights: its ``model.pt`` (any Tune checkpoint that has
    one), else the ``model`` entry of a trial's own checkpoint state, written out under
    ``tmp``."""
    import torch

    from hpsearch.trainables.tune_adapter import CHECKPOINT_FILE, load_state

    if (ckpt / WEIGHTS_FILE).is_file():
        return ckpt / WEIGHTS_FILE
    if not (ckpt / CHECKPOINT_FILE).is_file():
        return None

    try:
        state = load_state(ckpt)
    except Exception as err:  # noqa: BLE001 - foreign or corrupt: no weights, not a failure
        logger.warning("no weights from %s: %s", ckpt / CHECKPOINT_FILE, err)
        return None
    if not isinstance(state, dict) or "model" not in state:
        return None
    torch.save(state["model"], tmp / WEIGHTS_FILE)
    return tmp / WEIGHTS_FILE


def _has_weights(ckpt: Location) -> bool:
    from hpsearch.trainables.tune_adapter import CHECKPOINT_FILE

    return (ckpt / WEIGHTS_FILE).exists() or (ckpt / CHECKPOINT_FILE).exists()

"""The sweep's dataset as an MLflow dataset input of every run: name, digest, split sizes and
class names (the runs table's "Dataset" column; the confusion matrices' labels)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["dataset_info", "dataset_input", "read_dataset"]

# How the data was chosen (the decoded tensors' digest says what it is).
_SOURCE_KEYS = ("dataset", "val_fraction", "split_seed", "train_limit", "eval_limit", "resize")
SOURCE_TYPE = "hpsearch"
_SPLITS = ("train", "val", "test")


def dataset_info(bundle: Any, config: Any) -> dict[str, Any]:
    """What MLflow shows of a decoded :class:`~trainables.bundle.DataBundle`: its name, a
    digest of its tensors, its split sizes and class names, and the settings that chose it
    (``config``, a :class:`~trainables.config.TrialConfig`)."""
    digest = hashlib.sha256()
    for split in _SPLITS:
        for part in ("x", "y"):
            tensor = getattr(bundle, f"{split}_{part}")
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.contiguous().numpy().tobytes())
    settings = config.to_dict()
    return {"name": bundle.name, "digest": digest.hexdigest()[:12],
            "source": {k: settings.get(k) for k in _SOURCE_KEYS},
            "splits": {s: len(getattr(bundle, f"{s}_y")) for s in _SPLITS},
            "classes": list(bundle.classes)}


def dataset_input(info: Mapping[str, Any]) -> Any:
    """:func:`dataset_info` as MLflow's ``DatasetInput`` (context ``train``); the profile
    holds the split sizes and class names."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    profile = {"num_rows": sum(info["splits"].values()),
               **{f"{s}_rows": n for s, n in info["splits"].items()},
               "classes": list(info["classes"])}
    dataset = Dataset(name=info["name"], digest=info["digest"], source_type=SOURCE_TYPE,
                      source=json.dumps(info["source"]), profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "train")])


def read_dataset(run: Any) -> dict[str, Any] | None:
    """:func:`dataset_info` back from a run's dataset input; None when it has none."""
    for item in getattr(run, "inputs", None) and run.inputs.dataset_inputs or ():
        ds = item.dataset
        if ds.source_type != SOURCE_TYPE:
            continue
        try:
            profile, source = json.loads(ds.profile or "{}"), json.loads(ds.source or "{}")
        except ValueError:
            return None
        return {"name": ds.name, "digest": ds.digest, "source": source,
                "splits": {s: profile.get(f"{s}_rows") for s in _SPLITS},
                "classes": list(profile.get("classes") or [])}
    return None

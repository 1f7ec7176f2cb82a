"""Sweep spec files as a user might get them wrong: a small good spec, a way to change one
field of it, and a table of bad spec files with the phrase each one's error must contain.

Every case is checked in-process through the spec parser (tests/search/test_spec.py); a
handful also go through the real ``hpsearch`` command (tests/test_bad_input.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BAD_SPECS", "DELETE", "GOOD", "LAUGHS", "spec_with", "write_spec"]

GOOD: dict[str, Any] = {
    "name": "bad",
    "fixed": {"dataset": "mnist", "model": "cnn", "channels": [8, 16]},
    "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
              "optimizer": ["adam", "sgd"],
              "momentum": {"type": "uniform", "low": 0.5, "high": 0.9,
                           "when": {"optimizer": "sgd"}}},
    "search": {"algorithm": "optuna", "seed": 0},
    "scheduler": {"name": "asha", "grace_period": 1},
    "budget": {"trials": 4, "max_epochs": 2},
    "resources": {"cpu": 1},
}
DELETE = object()
# Nine levels of nine aliases each: ~400 bytes that expand to 9**9 strings.
LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


def spec_with(path: str, value: Any) -> dict[str, Any]:
    """A copy of GOOD with the dotted ``path`` set to ``value`` (removed for DELETE)."""
    spec = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return spec


def write_spec(path: Path, spec: Any) -> Path:
    """``spec`` written to ``path``: bytes and text as they are, a mapping as YAML."""
    if isinstance(spec, bytes):
        path.write_bytes(spec)
    else:
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


# (case id, spec mapping or raw YAML text/bytes, expected phrase in the error)
BAD_SPECS: list[tuple[str, Any, str]] = [
    ("yaml-syntax", "name: x\nspace: {lr: [0.1, 0.2}\n", ":2:"),
    ("top-level-list", "- a\n- b\n", "top level must be a mapping"),
    ("typo-top-level", {**GOOD, "serach": {}}, "did you mean 'search'"),
    ("unknown-space-setting", spec_with("space.learning_rate", [0.1, 0.2]),
     "space.learning_rate"),
    ("wrong-type-trials", spec_with("budget.trials", "ten"), "budget.trials"),
    ("zero-trials", spec_with("budget.trials", 0), "budget.trials"),
    ("zero-epochs", spec_with("budget.max_epochs", 0), "budget.max_epochs"),
    ("empty-choice", spec_with("space.optimizer", []), "space.optimizer"),
    ("low-ge-high", spec_with("space.lr", {"type": "uniform", "low": 0.1, "high": 0.01}),
     "space.lr"),
    ("log-low-zero", spec_with("space.lr", {"type": "loguniform", "low": 0, "high": 0.1}),
     "space.lr.low"),
    ("unknown-dist-type", spec_with("space.lr", {"type": "gaussian", "low": 0, "high": 1}),
     "space.lr"),
    ("unknown-model", spec_with("fixed.model", "resnet50"), "unknown model 'resnet50'"),
    ("unknown-dataset", spec_with("fixed.dataset", "imagenet"), "unknown dataset 'imagenet'"),
    ("unknown-optimizer-choice", spec_with("space.optimizer", ["adam", "adamm"]),
     "unknown optimizer 'adamm'"),
    ("unknown-augmentation", spec_with("space.augment", [["hflip"], ["flip"]]),
     "unknown augmentation 'flip'"),
    ("unknown-activation", spec_with("fixed.activation", "swish"),
     "unknown activation 'swish'"),
    ("unknown-scheduler", spec_with("scheduler.name", "hyperbnd"), "scheduler.name"),
    ("unknown-algorithm", spec_with("search.algorithm", "bayes"), "search.algorithm"),
    ("pruner-key", spec_with("search.pruner", "median"), "scheduler"),
    ("grid-continuous", spec_with("search.algorithm", "grid"),
     "grid search needs finite values"),
    ("asha-multi-objective", spec_with("objective", {"metrics": [
        {"name": "val_top1", "mode": "max"}, {"name": "params", "mode": "min"}]}), "ASHA"),
    ("bad-mode", spec_with("objective", {"metric": "val_top1", "mode": "maximize"}),
     "objective.mode"),
    ("unknown-metric", spec_with("objective", {"metric": "accuracy", "mode": "max"}),
     "objective.metric"),
    ("cpu-zero", spec_with("resources.cpu", 0), "resources.cpu"),
    ("gpu-negative", spec_with("resources.gpu", -1), "resources.gpu"),
    ("when-unknown-key", spec_with("space.momentum.when", {"optimiser": "sgd"}), "when"),
    ("fixed-and-space", spec_with("fixed.lr", 0.01), "space.lr"),
    ("ofat-without-baseline", spec_with("design", "ofat"), "baseline"),
    ("bad-time-limit", spec_with("budget.time_limit", "soon"), "budget.time_limit"),
    ("bad-name", spec_with("name", "my sweep!"), "name"),
    ("bad-constraint", spec_with("constraints", {"max_params": "lots"}),
     "constraints.max_params"),
    ("wrong-type-fixed", spec_with("fixed.batch_size", "big"), "fixed.batch_size"),
    ("grace-over-max-epochs", spec_with("scheduler.grace_period", 5), "scheduler.grace_period"),
    ("dotdot-name", spec_with("name", ".."), "name: must be a plain folder name"),
    ("experiment-escape", spec_with("tracking", {"experiment": "../../x"}),
     "tracking.experiment: must be a plain folder name"),
    ("not-utf8", b"name: x\n\xff\xfe\x00junk", "not a UTF-8 text file (byte 0xff at offset 8)"),
    ("nul-byte", b"name: x\x00\n", "not a UTF-8 text file (byte 0x00 at offset 7)"),
    ("too-large", "# padding\n" * 30_000, "larger than 256 KiB"),
    ("billion-laughs", LAUGHS, "more than 10,000 values with aliases expanded"),
    ("huge-list", "name: x\nfixed: {channels: [" + "1, " * 50_000 + "]}\n",
     "more than 10,000 values"),
    ("many-values", spec_with("space.optimizer", ["sgd"] * 5000), "at most 1000 values"),
]

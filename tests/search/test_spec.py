"""SweepSpec parsing: tables of malformed specs and bad spec files (every problem at once, one
line each, with its field path), valid specs, helpers, fingerprint, YAML errors and the
no-torch/no-Ray import rule."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hpsearch.search.messages import MAX_SHOWN
from hpsearch.search.spec import (
    METRICS,
    SweepSpec,
    apply_overrides,
    load_spec,
    parse_spec,
    spec_fingerprint,
)
from hpsearch.search.yamlio import MAX_BYTES, MAX_DEPTH, MAX_VALUES, load_yaml, parse_overrides
from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.errors import UserError
from tests.badspecs import BAD_SPECS, LAUGHS, write_spec

ROOT = Path(__file__).resolve().parents[2]
DELETE = object()

VALID: dict[str, Any] = {
    "name": "quickstart",
    "description": "a small sweep",
    "fixed": {"dataset": "fashion_mnist", "model": "cnn", "train_limit": 6000},
    "space": {
        "lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-1},
        "momentum": {"type": "uniform", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
        "weight_decay": {"type": "uniform", "low": 0, "high": 0.001, "q": 0.0001},
        "batch_size": {"type": "choice", "values": [32, 64, 128]},
        "fc_depth": {"type": "int", "low": 1, "high": 3},
        "channels": {"type": "choice", "values": [[16, 32], [32, 64, 128]]},
        "optimizer": ["sgd", "adam"],
        "activation": {"type": "grid", "values": ["relu", "gelu"]},
    },
    "objective": {"metric": "val_top1", "mode": "max"},
    "search": {"algorithm": "optuna", "seed": 0,
               "start_points": [{"lr": 0.001, "optimizer": "adam"}]},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
    "budget": {"trials": 20, "max_epochs": 5, "time_limit": "30m"},
    "resources": {"cpu": 1, "gpu": 0, "max_concurrent": None},
    "constraints": {"max_params": "1M", "max_macs": "50M"},
    "storage": "runs",
    "tracking": {"uri": None, "experiment": None},
}

OFAT: dict[str, Any] = {
    "name": "ofat",
    "design": "ofat",
    "fixed": {"dataset": "mnist"},
    "baseline": {"activation": "relu", "optimizer": "sgd", "lr": 0.05, "batch_size": 64},
    "space": {"activation": {"values": ["relu", "gelu"]}, "lr": [0.01, 0.05, 0.1]},
    "budget": {"max_epochs": 2},
}


def _spec(changes: dict[str, Any], base: dict[str, Any] = VALID) -> dict[str, Any]:
    """``base`` with dotted keys set (or deleted with DELETE)."""
    data = apply_overrides(base, {k: v for k, v in changes.items() if v is not DELETE})
    for dotted in (k for k, v in changes.items() if v is DELETE):
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(UserError) as info:
        parse_spec(data)
    return str(info.value).splitlines()


# (id, changes, base, field path, key phrase)
MALFORMED: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    ("typo_key", {"scheduler.grace_perod": 1}, VALID,
     "scheduler.grace_perod", "unknown key (did you mean 'grace_period'?)"),
    ("typo_section", {"shceduler": {}}, VALID, "shceduler", "did you mean 'scheduler'?"),
    ("typo_dist_key", {"space.lr.hihg": 1}, VALID, "space.lr.hihg", "did you mean 'high'?"),
    ("name_missing", {"name": DELETE}, VALID, "name", "required"),
    ("name_chars", {"name": "my sweep"}, VALID, "name", "must be a plain folder name"),
    ("wrong_type", {"budget.trials": "many"}, VALID, "budget.trials", "valid integer"),
    ("low_ge_high", {"space.lr.low": 0.1, "space.lr.high": 0.01}, VALID,
     "space.lr", "`low < high` must hold, but got (low=0.1, high=0.01)"),
    ("loguniform_low_0", {"space.lr.low": 0}, VALID, "space.lr.low", "`low > 0`"),
    ("loguniform_q", {"space.lr.q": 0.01}, VALID, "space.lr.q", "cannot be quantized"),
    ("q_not_multiple", {"space.weight_decay.q": 0.0003}, VALID,
     "space.weight_decay.q", "must be a multiple of q"),
    ("int_step", {"space.fc_depth.step": 2, "space.fc_depth.high": 4}, VALID,
     "space.fc_depth.step", "multiple of step"),
    ("empty_choice", {"space.batch_size.values": []}, VALID,
     "space.batch_size.values", "at least 1 value"),
    ("empty_grid", {"space.activation.values": []}, VALID,
     "space.activation.values", "at least 1 value"),
    ("duplicate_choice", {"space.batch_size.values": [32, 64, 32]}, VALID,
     "space.batch_size.values[2]", "duplicate of values[0]"),
    ("unknown_dist", {"space.lr.type": "logunifrom"}, VALID,
     "space.lr.type", "unknown distribution 'logunifrom' (did you mean 'loguniform'?)"),
    ("scalar_entry", {"space.lr": 0.01}, VALID, "space.lr", "put constant settings under fixed"),
    ("fixed_name", {"fixed.schedule": "cosin"}, VALID,
     "fixed.schedule", "unknown schedule 'cosin' (did you mean 'cosine'?)"),
    ("fixed_range", {"fixed.eval_batch_size": 0}, VALID,
     "fixed.eval_batch_size", "greater than or equal"),
    ("fixed_unknown", {"fixed.lrr": 1}, VALID, "fixed.lrr", "unknown setting"),
    ("fixed_option_range", {"fixed.label_smoothing": 1.0}, VALID,
     "fixed.label_smoothing", "less than 1"),
    ("choice_option_range", {"space.ema": [0.0, 0.999, 1.0]}, VALID,
     "space.ema.values[2]", "less than 1"),
    ("fixed_epochs", {"fixed.epochs": 3}, VALID, "fixed.epochs", "budget.max_epochs"),
    ("choice_name", {"space.optimizer": ["sgd", "adam", "adamm"]}, VALID,
     "space.optimizer.values[2]", "unknown optimizer 'adamm' (did you mean 'adam'?)"),
    ("choice_augment", {"space.augment": [[], ["flipp"]]}, VALID,
     "space.augment.values[1][0]", "unknown augmentation 'flipp'"),
    ("choice_model", {"space.model": ["cnn", "resnet"]}, _spec({"fixed.model": DELETE}),
     "space.model.values[1]", "unknown model 'resnet'"),
    ("choice_with_fixed", {"fixed.model": "resnet18"}, VALID,
     "space.channels.values[0]", "resnet18 takes 5 widths"),
    ("choice_list_setting", {"space.channels": [16, 32]}, VALID,
     "space.channels.values[0]", "channels takes a list"),
    ("bound_vs_setting", {"space.momentum.high": 1.0}, VALID,
     "space.momentum.high", "less than 1"),
    ("int_setting_float_dist", {"space.fc_depth": {"type": "uniform", "low": 1, "high": 3}},
     VALID, "space.fc_depth", "whole numbers"),
    ("not_numeric", {"space.optimizer": {"type": "uniform", "low": 0, "high": 1}}, VALID,
     "space.optimizer", "not a number"),
    ("space_not_setting", {"space.lrr": [0.1]}, VALID, "space.lrr", "did you mean 'lr'?"),
    ("space_epochs", {"space.epochs": [1, 2]}, VALID, "space.epochs", "budget.max_epochs"),
    ("fixed_and_space", {"fixed.lr": 0.1}, VALID, "space.lr", "also set in fixed"),
    ("when_unknown_key", {"space.momentum.when": {"optimzer": "sgd"}}, VALID,
     "space.momentum.when.optimzer", "not in space (did you mean 'optimizer'?)"),
    ("when_fixed_key", {"space.momentum.when": {"model": "cnn"}}, VALID,
     "space.momentum.when.model", "is fixed"),
    ("when_never", {"space.momentum.when.optimizer": "sgdd"}, VALID,
     "space.momentum.when.optimizer", "can never be 'sgdd'"),
    ("when_continuous", {"space.momentum.when": {"lr": 0.1}}, VALID,
     "space.momentum.when.lr", "finite values"),
    ("when_cycle", {"space.optimizer": {"values": ["sgd", "adam"],
                                        "when": {"activation": "relu"}},
                    "space.activation.when": {"optimizer": "sgd"}}, VALID, "space", "cycle"),
    ("grid_continuous", {"search.algorithm": "grid", "search.start_points": DELETE}, VALID,
     "space.lr", "grid search needs finite values, but got loguniform"),
    ("grid_start_points", {"search.algorithm": "grid",
                           "space": {"lr": [0.1, 0.01]}}, VALID,
     "search.start_points", "optuna and random"),
    ("start_point_name", {"search.start_points": [{"optimizer": "adamm"}]}, VALID,
     "search.start_points[0].optimizer", "unknown optimizer 'adamm'"),
    ("start_point_range", {"search.start_points": [{"lr": 0.5}]}, VALID,
     "search.start_points[0].lr", "`low <= value <= high` must hold"),
    ("start_point_key", {"search.start_points": [{"lrr": 0.01}]}, VALID,
     "search.start_points[0].lrr", "not in space (did you mean 'lr'?)"),
    ("start_point_inactive", {"search.start_points": [{"optimizer": "adam", "momentum": 0.9}]},
     VALID, "search.start_points[0].momentum", "only searched when optimizer is 'sgd'"),
    ("pruner", {"search.pruner": {"type": "median"}}, VALID,
     "search.pruner", "early stopping belongs to `scheduler` (ASHA)"),
    ("pruner_top", {"pruner": "median"}, VALID, "pruner", "early stopping belongs to"),
    ("algorithm", {"search.algorithm": "optna"}, VALID,
     "search.algorithm", "unknown value 'optna' (did you mean 'optuna'?)"),
    ("metric", {"objective.metric": "val_acc"}, VALID,
     "objective.metric", "unknown metric 'val_acc'"),
    ("mode", {"objective.mode": "maximize"}, VALID, "objective.mode", "allowed: min, max"),
    ("metric_and_metrics", {"objective.metrics": [{"name": "macs"}]}, VALID,
     "objective", "not both"),
    ("multi_objective_asha", {"objective": {"metrics": [{"name": "val_top1"},
                                                        {"name": "macs"}]}}, VALID,
     "scheduler.name", "ASHA compares trials on one metric"),
    ("test_metric_asha", {"objective": {"metric": "test_top1"}}, VALID,
     "scheduler.name", "after the last epoch"),
    ("trials_lt_1", {"budget.trials": 0}, VALID, "budget.trials", "greater than or equal to 1"),
    ("trials_missing", {"budget.trials": DELETE}, VALID,
     "budget.trials", "required with search.algorithm optuna"),
    ("max_epochs_lt_1", {"budget.max_epochs": 0, "scheduler.name": "none",
                         "scheduler.grace_period": DELETE,
                         "scheduler.reduction_factor": DELETE}, VALID,
     "budget.max_epochs", "greater than or equal to 1"),
    ("max_epochs_missing", {"budget.max_epochs": DELETE}, VALID, "budget.max_epochs", "required"),
    ("time_limit", {"budget.time_limit": "half an hour"}, VALID,
     "budget.time_limit", "a duration like '90s'"),
    ("grace_gt_max_epochs", {"scheduler.grace_period": 9}, VALID,
     "scheduler.grace_period", "`grace_period <= budget.max_epochs` must hold"),
    ("scheduler_none_args", {"scheduler.name": "none"}, VALID,
     "scheduler.grace_period", "not used by scheduler none; only by asha"),
    ("hyperband_grace", {"scheduler.name": "hyperband"}, VALID,
     "scheduler.grace_period", "not used by scheduler hyperband; only by asha"),
    ("cpu", {"resources.cpu": 0}, VALID, "resources.cpu", "greater than 0"),
    ("gpu", {"resources.gpu": -1}, VALID, "resources.gpu", "greater than or equal to 0"),
    ("gpu_fraction", {"resources.gpu": 1.5}, VALID, "resources.gpu", "whole number"),
    ("max_concurrent", {"resources.max_concurrent": 0}, VALID,
     "resources.max_concurrent", "greater than or equal to 1"),
    ("constraints", {"constraints.max_params": "1 million"}, VALID,
     "constraints.max_params", "expected a positive count"),
    ("tracking", {"tracking.experimnt": "x"}, VALID,
     "tracking.experimnt", "did you mean 'experiment'?"),
    ("design", {"design": "ofatt"}, VALID, "design", "did you mean 'ofat'?"),
    ("ofat_no_baseline", {"baseline": DELETE}, OFAT, "baseline", "needs a baseline"),
    ("ofat_baseline_key", {"baseline.optimzer": "sgd"}, OFAT,
     "baseline.optimzer", "unknown setting (did you mean 'optimizer'?)"),
    ("ofat_baseline_name", {"baseline.activation": "rellu"}, OFAT,
     "baseline.activation", "unknown activation 'rellu'"),
    ("ofat_continuous", {"space.lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}, OFAT,
     "space.lr", "design: ofat needs finite values"),
    ("ofat_algorithm", {"search": {"algorithm": "optuna"}}, OFAT,
     "search.algorithm", "design: ofat"),
    ("baseline_without_ofat", {"baseline": {"lr": 0.1}}, VALID,
     "baseline", "only used with design: ofat"),
]


@pytest.mark.parametrize(("changes", "base", "path", "phrase"),
                         [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_spec_names_the_field(changes: dict[str, Any], base: dict[str, Any],
                                        path: str, phrase: str) -> None:
    lines = _problems(_spec(changes, base))
    assert any(line.startswith(f"<spec>: {path}: ") and phrase in line for line in lines), lines


def test_malformed_table_is_big_enough() -> None:
    assert len(MALFORMED) >= 25
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


def test_every_problem_is_reported_at_once() -> None:
    data = _spec({"scheduler.grace_perod": 2, "space.lr.low": 1.0,
                  "space.optimizer": ["sgd", "adamm"]})
    lines = _problems(data)
    assert len(lines) == 3, lines
    assert "scheduler.grace_perod: unknown key (did you mean 'grace_period'?)" in lines[-1]
    assert any("space.lr: `low < high` must hold, but got (low=1.0, high=0.1)" in x
               for x in lines)
    assert any("space.optimizer.values[1]: unknown optimizer 'adamm'" in x for x in lines)


@pytest.mark.parametrize(("case", "spec", "phrase"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_a_bad_spec_file_gives_one_line_per_problem(tmp_path: Path, case: str, spec: Any,
                                                    phrase: str) -> None:
    path = write_spec(tmp_path / f"{case}.yaml", spec)
    with pytest.raises(UserError) as info:
        load_spec(path)
    message = str(info.value)
    assert phrase in message, message
    assert all(line.startswith(f"{path}") for line in message.splitlines()), message


def test_a_refused_key_hides_no_other_problem() -> None:
    # The section with the refused key still counts for the rules across sections.
    lines = _problems(_spec({"search.pruner": "median", "search.start_points": [{"lr": 0.5}]}))
    assert [x.split(": ")[1] for x in lines] == ["search.pruner", "search.start_points[0].lr"]
    lines = _problems(_spec({"space.lr.q": 0.01, "search.algorithm": "grid",
                             "search.start_points": DELETE}))
    assert "<spec>: space.lr: grid search needs finite values, but got loguniform" in lines
    lines = _problems(_spec({"fixed.epochs": 3, "space.channels": [[16, 32], [8]],
                             "fixed.model": "resnet18"}))
    assert any(x.startswith("<spec>: space.channels.values[0]: resnet18 takes 5") for x in lines)


def test_one_bad_space_entry_leaves_the_others_checked() -> None:
    lines = _problems(_spec({"space.lr.low": 1.0, "space.momentum.when.optimizer": "sgdd",
                             "search.start_points": [{"optimizer": "adamm"}]}))
    assert len(lines) == 3, lines
    assert lines[0].startswith("<spec>: space.lr: `low < high` must hold")
    assert lines[1].startswith("<spec>: space.momentum.when.optimizer: optimizer can never be")
    assert lines[2].startswith("<spec>: search.start_points[0].optimizer: unknown optimizer")


def test_sweep_spec_validates_on_its_own() -> None:
    # Without parse_spec's context the model brings its own; errors are pydantic's.
    assert SweepSpec.model_validate(copy.deepcopy(VALID)) == parse_spec(copy.deepcopy(VALID))
    with pytest.raises(ValidationError) as info:
        SweepSpec.model_validate(_spec({"scheduler.grace_perod": 1}))
    assert [e["loc"] for e in info.value.errors()] == [("scheduler", "grace_perod")]


def test_problem_lines_are_prefixed_with_the_source(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nbudget: {max_epochs: 0, trials: 1}\nscheduler: none\n"
                    "space: {lr: [0.1]}\n")
    with pytest.raises(UserError, match=rf"^{path}: budget.max_epochs: "):
        load_spec(path)


# ------------------------------------------------------------------ valid specs and helpers

def test_the_reference_spec_parses() -> None:
    spec = parse_spec(copy.deepcopy(VALID))
    assert isinstance(spec, SweepSpec)
    assert spec.metric == "val_top1" and spec.mode == "max" and not spec.is_multi_objective
    assert spec.metrics == ["val_top1"] and spec.modes == ["max"]
    assert spec.time_limit_seconds == 1800
    assert spec.max_params == 1_000_000 and spec.max_macs == 50_000_000
    assert spec.trial_defaults() == {"dataset": "fashion_mnist", "model": "cnn",
                                     "train_limit": 6000, "epochs": 5}
    assert spec.space["optimizer"].type == "choice"  # the plain-list shorthand
    assert spec.space["channels"].values == [[16, 32], [32, 64, 128]]
    assert spec.space["momentum"].conditions() == {"optimizer": ["sgd"]}
    # the default store is ./mlflow.db, absolute so that resume/sync/report find it anywhere
    assert spec.tracking_uri == f"sqlite:///{Path('mlflow.db').resolve()}" or \
        os.environ.get("MLFLOW_TRACKING_URI") == spec.tracking_uri
    assert spec.experiment_name == "quickstart"
    TrialConfig(**spec.trial_defaults())


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_parse(path: Path) -> None:
    spec = load_spec(path)
    assert parse_spec(spec.to_dict()) == spec


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec({"name": "m", "space": {"lr": [0.1, 0.01]},
                       "budget": {"max_epochs": 1, "trials": 2}})
    assert spec.search.algorithm == "optuna" and spec.scheduler.name == "asha"
    assert (spec.scheduler.grace_period, spec.scheduler.reduction_factor) == (1, 3.0)
    assert (spec.resources.cpu, spec.resources.gpu, spec.resources.max_concurrent) == (1, 0, None)
    assert spec.max_params is None and spec.time_limit_seconds is None
    assert spec.storage is None and spec.design is None  # storage: $HPSEARCH_STORAGE or ./runs


def test_multi_objective_with_grid_and_no_scheduler() -> None:
    spec = parse_spec(_spec({
        "objective": {"metrics": [{"name": "val_top1"}, {"name": "macs"}]},
        "scheduler": "none", "search": {"algorithm": "grid"}, "budget.trials": DELETE,
        "space": {"lr": [0.1, 0.01], "fc_depth": {"type": "int", "low": 1, "high": 2}}}))
    assert spec.is_multi_objective and spec.metric is None
    assert spec.metrics == ["val_top1", "macs"] and spec.modes == ["max", "min"]
    assert parse_spec(spec.to_dict()) == spec


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_mode_defaults_to_the_metrics_direction(metric: str) -> None:
    spec = parse_spec(_spec({"objective": {"metric": metric}, "scheduler": "none"}))
    assert spec.mode == METRICS[metric]


@pytest.mark.parametrize(("raw", "seconds"),
                         [(90, 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0),
                          ("1h30m", 5400.0), ("45", 45.0), (2.5, 2.5)])
def test_time_limit_forms(raw: Any, seconds: float) -> None:
    assert parse_spec(_spec({"budget.time_limit": raw})).time_limit_seconds == seconds


@pytest.mark.parametrize(("raw", "count"), [("1M", 1_000_000), ("50K", 50_000),
                                            ("2G", 2_000_000_000), ("1.5m", 1_500_000),
                                            (1234, 1234), ("1e6", 1_000_000)])
def test_constraint_forms(raw: Any, count: int) -> None:
    assert parse_spec(_spec({"constraints.max_macs": raw})).max_macs == count


def test_values_are_normalized_to_trial_config_types() -> None:
    # YAML 1.1 reads 1e-3 as a string; the spec hands out the float TrialConfig stores.
    spec = parse_spec(_spec({"space.lr": ["1e-3", "1e-2"], "search.start_points": DELETE}))
    assert spec.space["lr"].values == [0.001, 0.01]


def test_trainable_options_are_fixed_or_searched_like_any_setting() -> None:
    spec = parse_spec(_spec({
        "fixed.tta_flip": True,
        "space.label_smoothing": {"type": "uniform", "low": 0.0, "high": 0.2},
        "space.ema": [0.0, 0.99, 0.999]}))
    assert spec.trial_defaults()["tta_flip"] is True
    assert spec.space["label_smoothing"].type == "uniform"
    assert spec.space["ema"].values == [0.0, 0.99, 0.999]


def test_fractional_gpu_and_gpu_counts() -> None:
    assert parse_spec(_spec({"resources.gpu": 0.25})).resources.gpu == 0.25
    assert parse_spec(_spec({"resources.gpu": 2})).resources.gpu == 2


def test_ofat_spec_parses_as_a_fixed_list() -> None:
    spec = parse_spec(copy.deepcopy(OFAT))
    assert spec.design == "ofat" and spec.search.algorithm == "grid"
    assert spec.baseline == {"activation": "relu", "optimizer": "sgd", "lr": 0.05,
                             "batch_size": 64}
    assert parse_spec(spec.to_dict()) == spec


def test_round_trip_and_fingerprint() -> None:
    spec = parse_spec(copy.deepcopy(VALID))
    assert parse_spec(spec.to_dict()) == spec
    fp = spec_fingerprint(spec)
    assert len(fp) == 64 and fp == spec_fingerprint(parse_spec(spec.to_dict()))
    # What may change on resume leaves the fingerprint alone ...
    same = _spec({"budget.trials": 99, "budget.time_limit": "5h", "resources.cpu": 4,
                  "tracking.uri": "http://x:5000", "description": "other", "storage": "elsewhere",
                  "constraints.max_params": "2M"})
    assert spec_fingerprint(parse_spec(same)) == fp
    # ... what defines the search does not.
    for changes in ({"space.lr.high": 0.2}, {"fixed.train_limit": 100}, {"search.seed": 1},
                    {"budget.max_epochs": 6}, {"scheduler.reduction_factor": 2},
                    {"objective.mode": "min"}):
        assert spec_fingerprint(parse_spec(_spec(changes))) != fp, changes
    reordered = _spec({"space": dict(reversed(list(VALID["space"].items())))})
    assert spec_fingerprint(parse_spec(reordered)) != fp  # grid / OFAT order follows YAML


def test_spec_is_frozen() -> None:
    spec = parse_spec(copy.deepcopy(VALID))
    with pytest.raises(Exception):  # noqa: B017 (pydantic's frozen-instance error)
        spec.name = "other"  # type: ignore[misc]


# ------------------------------------------------------------------ files, overrides, imports

def test_load_spec_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nspace:\n  lr: {type: loguniform, low: 1.0e-4, high: 0.1}\n"
                    "budget: {trials: 4, max_epochs: 2}\n")
    spec = load_spec(path, {"budget.trials": 10, "space.lr.high": 0.5, "search.seed": 3})
    assert spec.budget.trials == 10 and spec.space["lr"].high == 0.5 and spec.search.seed == 3
    with pytest.raises(UserError, match=r"--set name.x: name is not a mapping"):
        load_spec(path, {"name.x": 1})


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nspace:\n  lr: {type: loguniform, low: 1\n"
                    "budget: {max_epochs: 1}\n")
    with pytest.raises(UserError, match=rf"{path}:4:\d+: invalid YAML"):
        load_spec(path)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(UserError, match="top level must be a mapping"):
        parse_spec(["name", "x"])


def test_spec_validation_imports_neither_torch_nor_ray() -> None:
    code = ("import sys, search.spec, search.space; search.spec.parse_spec("
            f"{VALID!r}); bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ------------------------------------------------------------------ hostile input

NOT_PLAIN = ["..", ".", "../x", "../../etc", "/abs", "a/b", "a\\b", "a\x00b", "a\nb", "a\x1bb",
             "", "x" * 101, "my sweep"]


@pytest.mark.parametrize("field", ["name", "tracking.experiment"])
@pytest.mark.parametrize("bad", NOT_PLAIN, ids=repr)
def test_names_that_become_folders_must_be_plain(field: str, bad: str) -> None:
    lines = _problems(_spec({field: bad}))
    assert lines == [f"<spec>: {field}: must be a plain folder name (1-100 letters, digits, "
                     f"'.', '_', '-'; not '.' or '..'), but got {bad!r}"]


@pytest.mark.parametrize("good", ["a", "v1.2_final-3", "...", "x" * 100])
def test_plain_names_are_accepted(good: str) -> None:
    spec = parse_spec(_spec({"name": good, "tracking.experiment": good}))
    assert spec.name == good and spec.experiment_name == good


@pytest.mark.parametrize("data, phrase", [
    (b"name: x\n\xff\xfe binary", "not a UTF-8 text file (byte 0xff at offset 8)"),
    (b"name: x\nbudget: {max_epochs: 1}\x00\n", "not a UTF-8 text file (byte 0x00 at offset 31)"),
    (b"name: \x1b[2Jx\n", "not a UTF-8 text file (byte 0x1b at offset 6)"),
    (b"# padding\n" * (MAX_BYTES // 10 + 1), f"larger than {MAX_BYTES // 1024} KiB"),
    (LAUGHS.encode(), f"more than {MAX_VALUES:,} values with aliases expanded"),
    (b"name: &n [x, *n]\n", f"more than {MAX_VALUES:,} values"),
    (b"name: x\nfixed: {channels: " + b"[" * 40 + b"]" * 40 + b"}\n",
     f"nested deeper than {MAX_DEPTH} levels"),
    (b"fixed: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nest"),  # libyaml's own limit
], ids=["binary", "nul", "escape", "too-large", "billion-laughs", "self-alias", "deep",
        "very-deep"])
def test_a_file_that_is_no_spec_is_one_line(tmp_path: Path, data: bytes, phrase: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        load_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}") and phrase in message and "\n" not in message, message


def test_aliases_within_the_limits_still_work(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: shared\nfixed: &f {dataset: mnist}\nbaseline: *f\n")
    assert load_yaml(path) == {"name": "shared", "fixed": {"dataset": "mnist"},
                               "baseline": {"dataset": "mnist"}}


def test_set_values_are_bounded_too() -> None:
    laughs = "{" + LAUGHS.replace("\n", ", ").rstrip(", ") + "}"
    with pytest.raises(UserError, match=rf"^--set 'fixed': more than {MAX_VALUES:,} values"):
        parse_overrides([f"fixed={laughs}"])
    with pytest.raises(UserError, match=r"not UTF-8 text \(byte 0xff at offset 5\)"):
        parse_overrides(["name=\udcff"])  # how Python passes on a non-UTF-8 byte in argv


@pytest.mark.parametrize("changes, path", [
    ({"name": "n" * 1_000_000}, "name"),
    ({"budget.max_epochs": "9" * 1_000_000 + "x"}, "budget.max_epochs"),
    ({"space.lr": "x" * 1_000_000}, "space.lr"),
    ({"space.batch_size.values": list(range(100_000))}, "space.batch_size.values"),
    ({"space.optimizer": ["sgd", "adam"] + ["adam"] * 999}, "space.optimizer.values"),
    ({"fixed": list(range(100_000))}, "fixed"),
], ids=["name", "number", "distribution", "100k-values", "1000-values", "fixed"])
def test_a_huge_value_gives_a_short_line(changes: dict[str, Any], path: str) -> None:
    lines = _problems(_spec(changes))
    assert any(line.startswith(f"<spec>: {path}") for line in lines), lines[:3]
    assert all(len(line) < 2 * MAX_SHOWN + 100 for line in lines), [len(x) for x in lines]
    assert len(lines) <= 3

"""Which settings a config reads: declared on the registry entries, checked against the models."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from hpsearch.trainables.config import MODELS, TrialConfig
from hpsearch.trainables.models import ModelSpec, build_model
from hpsearch.trainables.settings import ALWAYS, used_keys

# The settings that shape a model, each with a non-default value valid for every model.
MODEL_SETTINGS: dict[str, Any] = {
    "channels": (6, 6, 6, 6, 6),
    "kernel_size": 5,
    "fc_depth": 3,
    "fc_width": 7,
    "fc_widths": (9,),
    "batchnorm": False,
    "dropout": 0.25,
    "stem": "imagenet",
    "drop_stages": (2,),
}
# Small bases (as in test_models), so every model builds in milliseconds.
BASES: dict[str, dict[str, Any]] = {
    "mlp": {},
    "cnn": {"channels": (4, 8)},
    "resnet18": {"channels": (4, 4, 8, 8, 8)},
    "squeezenet1_1": {},
    "alexnet": {"channels": (4, 8, 8, 8, 8), "fc_widths": (16,)},
}


def test_adam_reads_no_momentum_sgd_and_step_do() -> None:
    adam = used_keys(TrialConfig(optimizer="adam"))
    sgd = used_keys(TrialConfig(optimizer="sgd", schedule="step"))
    assert set(adam) - set(ALWAYS) == {"weight_decay", "channels", "kernel_size", "batchnorm",
                                       "dropout", "fc_depth", "fc_width"}
    assert set(sgd) - set(adam) == {"momentum", "nesterov", "step_size", "gamma"}


def test_explicit_fc_widths_replace_depth_and_width() -> None:
    implicit = used_keys(TrialConfig(model="mlp"))
    explicit = used_keys(TrialConfig(model="mlp", fc_widths=(32, 16)))
    assert {"fc_depth", "fc_width"} <= set(implicit) and "fc_widths" not in implicit
    assert "fc_widths" in explicit and not {"fc_depth", "fc_width"} & set(explicit)


def test_resnet18_reads_its_stem_and_stages_but_not_batchnorm() -> None:
    keys = set(used_keys(TrialConfig(model="resnet18", schedule="onecycle")))
    assert {"stem", "drop_stages", "channels", "fc_widths", "pct_start"} <= keys
    assert not {"batchnorm", "kernel_size", "fc_depth", "fc_width", "momentum"} & keys


def test_used_keys_are_settings_each_named_once() -> None:
    for model in MODELS.names():
        keys = used_keys(TrialConfig(model=model, optimizer="sgd", schedule="onecycle"))
        assert len(keys) == len(set(keys)) and set(keys) <= set(TrialConfig.model_fields)
        assert keys[:len(ALWAYS)] == ALWAYS


def test_model_entries_declare_only_model_settings() -> None:
    for name in MODELS.names():
        spec: ModelSpec = MODELS.get(name)
        assert set(spec.uses) <= set(MODEL_SETTINGS), name


def _unread() -> list[tuple[str, str]]:
    """(model, setting) pairs where neither the base config nor the changed one reads it."""
    pairs = []
    for name in MODELS.names():
        base = TrialConfig(model=name, **BASES[name])
        for key, value in MODEL_SETTINGS.items():
            other = base.model_copy(update={key: value})
            if key not in used_keys(base) + used_keys(other):
                pairs.append((name, key))
    return pairs


@pytest.mark.parametrize(("name", "key"), _unread())
def test_a_setting_no_config_reads_leaves_the_model_unchanged(name: str, key: str) -> None:
    """What an entry declares is what its builder reads: changing any other setting builds the
    very same layers (same modules, sizes, dropout rates)."""
    base = TrialConfig(model=name, **BASES[name])
    other = base.model_copy(update={key: MODEL_SETTINGS[key]})
    assert repr(build_model(other, 3, (32, 32), 10)) == repr(build_model(base, 3, (32, 32), 10))


@pytest.mark.integration  # a real subprocess / real MLflow store: seconds
def test_reading_settings_does_not_import_the_training_loop() -> None:
    code = ("import sys; from hpsearch.trainables.settings import used_keys; "
            "from hpsearch.trainables.config import TrialConfig; used_keys(TrialConfig()); "
            "print('hpsearch.trainables.fit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"

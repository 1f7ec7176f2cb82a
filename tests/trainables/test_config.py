"""Config errors show what a user gave cut short: a huge value is still one short line."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hpsearch.trainables.config import MODELS, parse_trial_config
from hpsearch.trainables.errors import MAX_SHOWN, UserError, shown

HUGE = 10_000_000


def test_shown_cuts_long_values_and_keeps_short_ones() -> None:
    assert shown([1, 2]) == "[1, 2]" and shown("adam") == "'adam'"
    assert shown({"a": 1}) == "{'a': 1}"
    for value in ["x" * 1000, b"x" * 1000, list(range(1000)), tuple(range(1000)),
                  {i: i for i in range(1000)}, [[0] * 1000]]:
        text = shown(value)
        assert len(text) == MAX_SHOWN and text.endswith("…"), text
    assert shown("x" * 50, limit=10) == "'" + "x" * 8 + "…"


@pytest.mark.parametrize("values, start", [
    ({"channels": [0] * HUGE}, "channels: every width must be >= 1, but got [0, 0, "),
    ({"fc_widths": [0] * HUGE}, "fc_widths: every width must be >= 1, but got [0, 0, "),
    ({"model": "resnet18", "channels": [8] * HUGE}, "channels: resnet18 takes 5 widths"),
    ({"drop_stages": [9] * HUGE}, "drop_stages: stages are numbered 1-4"),
    ({"device": "d" * HUGE}, "device: allowed: auto, cpu, cuda, cuda:N; but got 'ddd"),
    ({"model": "m" * HUGE}, "model: unknown model 'mmm"),
    ({"augment": ["a" * HUGE]}, "augment[0]: unknown augmentation 'aaa"),
    ({"lr": "x" * HUGE}, "lr: input should be a valid number"),
    ({"k" * HUGE: 1}, "kkk"),
], ids=["channels", "fc_widths", "resnet18-channels", "drop_stages", "device", "model",
        "augment", "lr", "unknown-key"])
def test_a_huge_value_gives_a_short_line(values: dict[str, Any], start: str) -> None:
    began = time.monotonic()
    with pytest.raises(UserError) as info:
        parse_trial_config(values)
    message = str(info.value)
    assert message.startswith(start) and "\n" not in message, message[:300]
    assert len(message) < 600, len(message)
    assert time.monotonic() - began < 10


def test_registry_error_quotes_the_name_and_suggests() -> None:
    with pytest.raises(UserError, match=r"^model: unknown model 'resnet17' \(did you mean "
                                        r"'resnet18'\?\); allowed: mlp, cnn"):
        MODELS.check("resnet17", "model")
    with pytest.raises(UserError, match=r"^unknown model 3; allowed:"):
        MODELS.check(3)  # type: ignore[arg-type]

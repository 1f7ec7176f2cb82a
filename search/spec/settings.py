"""Trial settings in a spec (``fixed``, ``space`` values, ``baseline``, start points): checked
by building real :class:`~trainables.config.TrialConfig` objects, and normalized to the
JSON-style values a TrialConfig stores."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails

from hpsearch.search.spec.errors import Loc, loc_of, problem
from hpsearch.trainables.config import TrialConfig, format_validation_error
from hpsearch.trainables.errors import shown

__all__ = [
    "EPOCHS",
    "settings",
    "normalized",
    "numeric_kind",
    "settings_mapping",
    "takes_list",
    "trial_problems",
]



def settings() -> tuple[str, ...]:
    """Every trial setting: the built-in ones and those the imported plugins declare."""
    return tuple(TrialConfig.model_fields)

EPOCHS = "set by budget.max_epochs (ASHA stops weak trials early), not here"
# Settings whose values are registry names: checked one by one, so every typo shows at once.
_NAMED = ("dataset", "model", "activation", "optimizer", "schedule", "augment")


def settings_mapping(raw: Any) -> Any:
    """``fixed`` or ``baseline`` as given: a mapping of trial settings (``null`` kept)."""
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"expected a mapping of trial settings, e.g. {{lr: 0.01}} "
                         f"(got {shown(raw)})")
    return raw


@cache
def _adapter(key: str) -> TypeAdapter[Any]:
    return TypeAdapter(TrialConfig.model_fields[key].annotation)


def normalized(key: str, value: Any) -> Any:
    """``value`` as the TrialConfig field ``key`` stores it, JSON-style (tuples -> lists)."""
    try:
        adapter = _adapter(key)
        return adapter.dump_python(adapter.validate_python(value), mode="json")
    except (ValidationError, KeyError):
        return value


def numeric_kind(key: str) -> str | None:
    """``"int"``/``"float"`` for numeric TrialConfig fields, else None."""
    ann = TrialConfig.model_fields[key].annotation
    args = set(typing.get_args(ann)) - {type(None)} if isinstance(ann, types.UnionType) else {ann}
    if args == {int}:
        return "int"
    return "float" if args == {float} else None


def takes_list(key: str) -> bool:
    """Whether the TrialConfig field ``key`` holds a list (``channels``, ``augment``, ...)."""
    return "tuple" in str(TrialConfig.model_fields[key].annotation)


def trial_problems(values: Mapping[str, Any], owners: Mapping[str, Loc], other: Loc,
                   nest_other: bool = False) -> list[InitErrorDetails]:
    """Problems building a TrialConfig from ``values``.

    A problem about a key in ``owners`` goes under that key's location (``augment[1]`` under
    ``owners["augment"] + (1,)``); any other goes under ``other``, its text whole, or with
    ``nest_other`` its setting joined to ``other`` (``fixed.affine_scale``). Registry names
    are checked one by one too, so each unknown name is a problem of its own.
    """
    out: list[InitErrorDetails] = []
    attempts = [dict(values)] + [{k: values[k]} for k in _NAMED if k in values and k in owners]
    for attempt in attempts:
        try:
            TrialConfig(**attempt)
        except ValidationError as err:
            out += [_placed(line, owners, other, nest_other)
                    for line in format_validation_error(err)]
    return out


def _placed(line: str, owners: Mapping[str, Loc], other: Loc,
            nest_other: bool) -> InitErrorDetails:
    """A TrialConfig error line (``"augment[1]: unknown ..."``) as a problem in the spec."""
    key = next((k for k in owners
                if line.startswith(k) and line[len(k):len(k) + 1] in (":", "[", ".")), None)
    if key is not None:
        suffix, _, message = line[len(key):].partition(": ")
        return problem((*owners[key], *loc_of(suffix)), message)
    head, sep, message = line.partition(": ")
    if nest_other and sep:
        return problem((*other, *loc_of("." + head)), message)
    return problem(other, line)

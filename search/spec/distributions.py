"""The search-space entries: five distributions in one tagged union (``type``), each checking
its own bounds; plus the order conditions impose and how a start point fits an entry.

A plain list is short for ``{type: choice, values: [...]}``, and ``values`` without a type
means a choice too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import InitErrorDetails

from hpsearch.search.spec.errors import listed, problem, raise_problems
from hpsearch.trainables.errors import shown

__all__ = [
    "Choice",
    "Distribution",
    "Entry",
    "Grid",
    "IntRange",
    "LogUniform",
    "Uniform",
    "condition_order",
    "describe_conditions",
    "point_problem",
    "space_order",
]

FROZEN = ConfigDict(extra="forbid", frozen=True)
MOST_VALUES = 1000  # per choice/grid entry: keeps validation well under a second


class _Entry(BaseModel):
    """One search-space entry; ``when`` switches it on only for some values of other entries."""

    model_config = FROZEN

    type: str
    when: dict[str, Any] | None = None

    def conditions(self) -> dict[str, list[Any]]:
        """``when`` as setting -> the values that switch this entry on (a list means any of)."""
        return {k: list(v) if isinstance(v, list) else [v] for k, v in (self.when or {}).items()}

    def is_active(self, config: Mapping[str, Any]) -> bool:
        """Whether every condition holds for the settings chosen so far."""
        return all(k in config and config[k] in opts for k, opts in self.conditions().items())

    def finite_values(self) -> Sequence[Any] | None:
        """Every value this entry can take, or None for a continuous distribution."""
        return None

    def problems(self) -> list[InitErrorDetails]:
        """What is wrong with the entry on its own (bounds, steps, duplicates)."""
        return []

    @model_validator(mode="after")
    def _check(self) -> _Entry:
        raise_problems(self.problems(), type(self).__name__)
        return self


class _Range(_Entry):
    low: float
    high: float

    def problems(self) -> list[InitErrorDetails]:
        if not self.low < self.high:
            return [problem((), f"`low < high` must hold, but got (low={self.low}, "
                                f"high={self.high})")]
        return []


class Uniform(_Range):
    """A float in ``[low, high]``; with ``q``, only ``low + k*q``."""

    type: Literal["uniform"] = "uniform"
    q: float | None = Field(None, gt=0)

    def problems(self) -> list[InitErrorDetails]:
        found = super().problems()
        if found or self.q is None:
            return found
        steps = (self.high - self.low) / self.q
        if abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            return [problem(("q",), f"`high - low` must be a multiple of q, but got "
                                    f"(low={self.low}, high={self.high}, q={self.q})")]
        return []


class LogUniform(_Range):
    """A float in ``[low, high]``, sampled uniformly in log space (``low > 0``)."""

    type: Literal["loguniform"] = "loguniform"
    refused_keys: ClassVar[dict[str, str]] = {
        "q": "a loguniform distribution cannot be quantized (got q={got}); use type: uniform "
             "with q, or type: choice"}

    def problems(self) -> list[InitErrorDetails]:
        found = super().problems()
        if not found and self.low <= 0:
            return [problem(("low",), f"loguniform needs `low > 0`, but got (low={self.low})")]
        return found


class IntRange(_Range):
    """An int in ``[low, high]`` (inclusive), every ``step``; ``log`` samples in log space."""

    type: Literal["int"] = "int"
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    def finite_values(self) -> Sequence[Any]:
        return range(self.low, self.high + 1, self.step)

    def problems(self) -> list[InitErrorDetails]:
        found = super().problems()
        if found:
            return found
        low, high, step = self.low, self.high, self.step
        if (high - low) % step:
            return [problem(("step",), f"`high - low` must be a multiple of step, but got "
                                       f"(low={low}, high={high}, step={step})")]
        if self.log and (low < 1 or step != 1):
            return [problem(("log",), f"log needs `low >= 1` and `step == 1`, but got "
                                      f"(low={low}, step={step})")]
        return []


class _Values(_Entry):
    values: list[Any] = Field(min_length=1, max_length=MOST_VALUES)

    def finite_values(self) -> Sequence[Any]:
        return self.values

    def problems(self) -> list[InitErrorDetails]:
        seen: dict[str, int] = {}
        out = []
        for i, v in enumerate(self.values):
            key = json.dumps(v, sort_keys=True, default=str)
            if key in seen:
                out.append(problem(("values", i), f"duplicate of values[{seen[key]}] "
                                                  f"(got {shown(v)})"))
            seen.setdefault(key, i)
        return out


class Choice(_Values):
    """One of ``values`` (sampled by the searcher; every one under grid search)."""

    type: Literal["choice"] = "choice"


class Grid(_Values):
    """Every one of ``values`` under grid search; a categorical under Optuna/random."""

    type: Literal["grid"] = "grid"


def _shorthand(raw: Any) -> Any:
    """A list -> a choice; ``values`` without ``type`` -> a choice (``type: null`` is none)."""
    if isinstance(raw, list):
        return {"type": "choice", "values": raw}
    if isinstance(raw, BaseModel):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"expected a distribution like {{type: uniform, low: 0, high: 1}} or "
                         f"a list of choices (got {shown(raw)}); put constant settings under "
                         f"fixed")
    if "type" not in raw and "values" in raw:
        return {"type": "choice", **raw}
    if "type" in raw and raw["type"] is None:
        return {k: v for k, v in raw.items() if k != "type"}  # reported as a missing type
    return raw


Entry = Uniform | LogUniform | IntRange | Choice | Grid
Distribution = Annotated[Entry, Field(discriminator="type"), BeforeValidator(_shorthand)]


# --------------------------------------------------------------------------- helpers

def space_order(space: Mapping[str, _Entry]) -> list[str]:
    """Space keys with every ``when`` setting before the entries it switches; else YAML order."""
    order, cyclic = condition_order(space)
    return order + cyclic


def condition_order(space: Mapping[str, _Entry]) -> tuple[list[str], list[str]]:
    """(keys in dependency order, keys caught in a cycle of conditions)."""
    order: list[str] = []
    pending = list(space)
    while pending:
        ready = [k for k in pending if all(c in order or c not in space or c == k
                                           for c in space[k].conditions())]
        if not ready:
            return order, pending
        order.append(ready[0])
        pending.remove(ready[0])
    return order, []


def point_problem(entry: _Entry, value: Any) -> str | None:
    """Why ``value`` cannot be enqueued for ``entry``, or None."""
    if isinstance(entry, _Values):
        if value not in entry.values:
            return f"not one of the values of the space entry (got {shown(value)}); allowed: " \
                   f"{listed(entry.values)}"
        return None
    assert isinstance(entry, _Range)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not entry.low <= value <= entry.high:
        return f"`low <= value <= high` must hold, but got (low={entry.low}, " \
               f"value={shown(value)}, high={entry.high})"
    step = entry.q if isinstance(entry, Uniform) else entry.step if isinstance(entry, IntRange) \
        else None
    if step and not math.isclose((value - entry.low) / step, round((value - entry.low) / step),
                                 abs_tol=1e-6):
        return f"must be low + a multiple of {step} (got {shown(value)})"
    return None


def describe_conditions(entry: _Entry) -> str:
    """``optimizer is 'sgd' or 'adamw' and ...``."""
    return " and ".join(f"{k} is {' or '.join(repr(v) for v in opts)}"
                        for k, opts in entry.conditions().items())

"""The sweep spec: one YAML file -> a validated, frozen :class:`SweepSpec`.

Every problem in a spec is reported at once, one line each, as
``<field path>: <what is wrong> (got <value>); allowed: ...``. Trial settings (``fixed``,
``space``, ``baseline``, ``search.start_points``) are checked by building real
:class:`~trainables.config.TrialConfig` objects. This package imports neither torch nor Ray.

Sections (see ``studies/*.yaml``): ``name``, ``plugins`` (modules imported first, see
:mod:`trainables.plugins`), ``description``, ``fixed``, ``space``,
``objective``, ``search``, ``scheduler``, ``budget``, ``resources``, ``constraints``,
``design`` + ``baseline`` (one-factor-at-a-time), ``storage`` and ``tracking``.

Rooms: :mod:`~search.spec.distributions` (the space entries), :mod:`~search.spec.sections`
(the other sections), :mod:`~search.spec.settings` (trial settings via TrialConfig),
:mod:`~search.spec.rules` (rules across values and sections), :mod:`~search.spec.sweep`
(:class:`SweepSpec`) and :mod:`~search.spec.errors` (the wording of every problem).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hpsearch.search.spec.distributions import (
    Choice,
    Distribution,
    Grid,
    IntRange,
    LogUniform,
    Uniform,
    space_order,
)
from hpsearch.search.spec.errors import error_lines
from hpsearch.search.spec.rules import SpecContext
from hpsearch.search.spec.sections import (
    DEFAULT_TRACKING_URI,
    METRICS,
    SAMPLERS,
    TERMINATOR_MIN_TRIALS,
    Budget,
    Constraints,
    MetricGoal,
    Objective,
    Resources,
    Scheduler,
    Search,
    Tracking,
    plugin_list,
)
from hpsearch.search.spec.sweep import SweepSpec, spec_fingerprint
from hpsearch.search.yamlio import load_yaml
from hpsearch.trainables.errors import UserError, shown

__all__ = [
    "DEFAULT_TRACKING_URI",
    "METRICS",
    "TERMINATOR_MIN_TRIALS",
    "Budget",
    "Choice",
    "Constraints",
    "Distribution",
    "Grid",
    "IntRange",
    "LogUniform",
    "MetricGoal",
    "Objective",
    "Resources",
    "SAMPLERS",
    "Scheduler",
    "Search",
    "SweepSpec",
    "Tracking",
    "Uniform",
    "apply_overrides",
    "load_plugins",
    "load_spec",
    "parse_spec",
    "space_order",
    "spec_fingerprint",
]


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read, override (dotted keys, e.g. ``{"budget.trials": 50}``) and validate a sweep YAML."""
    data = apply_overrides(load_yaml(path), overrides or {})
    return parse_spec(data, source=str(path))


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with each dotted key (``search.seed``) set to its value."""
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                where = ".".join(parts[:i + 1])
                raise UserError(f"--set {dotted}: {where} is not a mapping "
                                f"(got {shown(node[part])})")
            node = node[part]
        node[parts[-1]] = value
    return out


def load_plugins(raw: Any, source: str = "<spec>") -> list[str]:
    """Import a spec's ``plugins`` (before the rest is validated, so that their names and
    settings are known); the module names."""
    from hpsearch.trainables.plugins import import_plugins

    try:
        names = plugin_list(raw)
    except ValueError as err:
        raise UserError(f"{source}: plugins: {err}") from None
    try:
        import_plugins(names)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    return names


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate a spec mapping; every problem is reported at once in one UserError."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of sections (name, space, "
                        f"...), but got a {type(data).__name__}")
    load_plugins(data.get("plugins"), source)
    try:
        return SweepSpec.model_validate(data, context=SpecContext(data))
    except ValidationError as err:
        lines = error_lines(err, SweepSpec)
        raise UserError("\n".join(f"{source}: {line}" for line in lines)) from None

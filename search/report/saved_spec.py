"""The spec a sweep kept (in ``hpsearch.json`` or as MLflow's ``spec.yaml``) read back:
validated when it can be, else the facts the report needs read from it unchecked."""

from __future__ import annotations

import logging
import math
from typing import Any

from hpsearch.search.spec import Scheduler, SweepSpec, load_plugins, parse_spec
from hpsearch.search.spec.sections import scheduler_shorthand
from hpsearch.search.yamlio import parse_yaml
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import DEFAULT_OBJECTIVE

__all__ = ["objective", "section", "spec_facts", "spec_from_yaml", "spec_or_none",
           "yaml_mapping"]

logger = logging.getLogger(__name__)


def spec_or_none(data: Any, source: str) -> SweepSpec | None:
    """The saved spec validated, or None: the report goes on without it (written by another
    version, or its plugins cannot be imported here; each such plugin is named in one warning
    line, and the report reads what it needs unchecked: :func:`spec_facts`)."""
    if not isinstance(data, dict):
        return None
    try:
        load_plugins(data.get("plugins"), source)  # validating the spec needs their names
    except UserError as err:
        logger.warning("report: %s; the report goes on without it (metrics from the trials' "
                       "results; objective, budget and scheduler from the saved spec, unchecked)",
                       err)
        return None
    try:
        return parse_spec(data, source=source)
    except UserError:  # e.g. written by another version: the report goes on without it
        return None


def spec_from_yaml(text: str | None, source: str) -> SweepSpec | None:
    """The spec an MLflow sweep kept, or None (the report goes on without it) when it is not
    a spec: invalid YAML, or over the bounds a spec file is read within."""
    return spec_or_none(yaml_mapping(text, source), source)


def yaml_mapping(text: str | None, source: str) -> Any:
    """A kept spec's YAML as data, read within the bounds a spec file is; None when it is
    not YAML or over them."""
    if not text:
        return None
    try:
        return parse_yaml(text, source)
    except UserError:
        return None


def spec_facts(spec: SweepSpec | None, raw: Any) -> dict[str, Any]:
    """What the report's compute and fidelity figures need of the spec: resources, epochs
    and the scheduler's rungs; from the raw saved spec, where each has the right type, when
    it could not be validated (the sweep wrote it validated)."""
    if spec is not None:
        return {"cpu_per_trial": spec.resources.cpu, "gpu_per_trial": spec.resources.gpu,
                "max_epochs": spec.budget.max_epochs,
                "rungs": spec.scheduler.rungs(spec.budget.max_epochs),
                "scheduler": spec.scheduler.name}
    budget, resources = (section(raw, key) for key in ("budget", "resources"))
    out: dict[str, Any] = {f"{k}_per_trial": float(resources[k]) for k in ("cpu", "gpu")
                           if _number(resources.get(k))}
    epochs = budget.get("max_epochs")
    scheduler = None  # not known without a saved spec
    if isinstance(raw, dict):
        given = raw.get("scheduler", {})  # left out: the default (ASHA); null: none
        try:
            scheduler = Scheduler.model_validate(scheduler_shorthand(given)).resolved()
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
            pass
    if scheduler is not None:
        out["scheduler"] = scheduler.name
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1:
        out["max_epochs"] = epochs
        if scheduler is not None:
            out["rungs"] = scheduler.rungs(epochs)
    return out


def objective(spec: SweepSpec | None, raw: Any, tag: str | None) -> tuple[str, str]:
    """The metric that ranks the trials and its mode: the spec's first, else as the saved
    spec (unchecked) or MLflow's tag says."""
    if spec is not None:
        return spec.metrics[0], spec.modes[0]
    given = section(raw, "objective")
    goals = given.get("metrics")
    first = goals[0] if isinstance(goals, list) and goals and isinstance(goals[0], dict) \
        else {"name": given.get("metric"), "mode": given.get("mode")}
    if isinstance(first.get("name"), str) and first.get("mode") in ("max", "min"):
        return first["name"], first["mode"]
    if tag and ":" in tag:
        metric, mode = tag.rsplit(":", 1)
        if mode in ("max", "min"):
            return metric, mode
    return DEFAULT_OBJECTIVE


def section(raw: Any, key: str) -> dict[str, Any]:
    """``raw[key]`` when ``raw`` is a mapping and that is one; else empty."""
    value = raw.get(key) if isinstance(raw, dict) else None
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)

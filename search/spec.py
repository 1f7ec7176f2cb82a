"""The sweep spec: one YAML file -> a validated, frozen :class:`SweepSpec`.

Every problem in a spec is reported at once, one line each, as
``<field path>: <what is wrong> (got <value>); allowed: ...``. Trial settings (``fixed``,
``space``, ``baseline``, ``search.start_points``) are checked by building real
:class:`~trainables.config.TrialConfig` objects. This module imports neither torch nor Ray.

Sections (see ``studies/*.yaml``): ``name``, ``description``, ``fixed``, ``space``,
``objective``, ``search``, ``scheduler``, ``budget``, ``resources``, ``constraints``,
``design`` + ``baseline`` (one-factor-at-a-time), ``storage`` and ``tracking``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from search.names import check_plain
from search.yamlio import load_yaml
from trainables.config import TrialConfig, format_validation_error
from trainables.errors import UserError, closest, cut, shown

__all__ = [
    "METRICS",
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
    "Scheduler",
    "Search",
    "SweepSpec",
    "Tracking",
    "Uniform",
    "apply_overrides",
    "load_spec",
    "parse_spec",
    "space_order",
    "spec_fingerprint",
]

# Every metric a trial reports that can be optimised, with its natural direction.
METRICS: dict[str, str] = {
    "val_top1": "max", "val_top3": "max", "val_loss": "min",
    "train_top1": "max", "train_top3": "max", "train_loss": "min",
    "test_top1": "max", "test_top3": "max", "test_loss": "min",
    "test_f1": "max", "test_precision": "max", "test_recall": "max",
    "params": "min", "macs": "min", "images_per_second": "max", "epoch_seconds": "min",
}
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

_SETTINGS = tuple(TrialConfig.model_fields)
# Settings whose values are registry names: checked one by one, so every typo shows at once.
_NAMED = ("dataset", "model", "activation", "optimizer", "schedule", "augment")
_EPOCHS = "set by budget.max_epochs (ASHA stops weak trials early), not here"
_FROZEN = ConfigDict(extra="forbid", frozen=True)
_MOST_VALUES = 1000  # per choice/grid entry: keeps validation well under a second
# A name that becomes a folder (the sweep's, its MLflow experiment's artifacts).
PlainName = Annotated[str, AfterValidator(check_plain)]


# --------------------------------------------------------------------------- distributions

class _Entry(BaseModel):
    """One search-space entry; ``when`` switches it on only for some values of other entries."""

    model_config = _FROZEN

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


class Uniform(_Entry):
    """A float in ``[low, high]``; with ``q``, only ``low + k*q``."""

    type: Literal["uniform"] = "uniform"
    low: float
    high: float
    q: float | None = Field(None, gt=0)


class LogUniform(_Entry):
    """A float in ``[low, high]``, sampled uniformly in log space (``low > 0``)."""

    type: Literal["loguniform"] = "loguniform"
    low: float
    high: float


class IntRange(_Entry):
    """An int in ``[low, high]`` (inclusive), every ``step``; ``log`` samples in log space."""

    type: Literal["int"] = "int"
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    def finite_values(self) -> Sequence[Any]:
        return range(self.low, self.high + 1, self.step)


class _Values(_Entry):
    values: list[Any] = Field(min_length=1, max_length=_MOST_VALUES)

    def finite_values(self) -> Sequence[Any]:
        return self.values


class Choice(_Values):
    """One of ``values`` (sampled by the searcher; every one under grid search)."""

    type: Literal["choice"] = "choice"


class Grid(_Values):
    """Every one of ``values`` under grid search; a categorical under Optuna/random."""

    type: Literal["grid"] = "grid"


Distribution = Annotated[Uniform | LogUniform | IntRange | Choice | Grid,
                         Field(discriminator="type")]
_DISTRIBUTIONS: dict[str, type[_Entry]] = {
    "uniform": Uniform, "loguniform": LogUniform, "int": IntRange, "choice": Choice, "grid": Grid,
}


# --------------------------------------------------------------------------- sections

def _duration_seconds(value: Any) -> float | None:
    """``90``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` -> seconds."""
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif parts and "".join(n + u for n, u in parts) == text:
            seconds = sum(float(n) * units[u] for n, u in parts)
    if seconds is None or not seconds > 0:
        raise ValueError(f"expected a positive number of seconds or a duration like '90s', "
                         f"'30m', '2h' (got {shown(value)})")
    return seconds


def _count(value: Any) -> int | None:
    """``1200000``, ``"1.2M"``, ``"50K"``, ``"2G"`` -> an int."""
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"(\d+(?:\.\d+)?(?:e\d+)?)([kmg]?)", value.strip().lower())
        if m:
            number = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
    if number is None or not number >= 1:
        raise ValueError(f"expected a positive count like 1200000, '1.2M', '50K' or '2G' "
                         f"(got {shown(value)})")
    return round(number)


class MetricGoal(BaseModel):
    """One objective of a multi-objective sweep."""

    model_config = _FROZEN

    name: str
    mode: Literal["min", "max"] | None = None


class Objective(BaseModel):
    """``metric`` + ``mode`` (one objective) or ``metrics`` (several); modes default sensibly."""

    model_config = _FROZEN

    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    metrics: list[MetricGoal] | None = None


class Search(BaseModel):
    """What to try next: Optuna TPE, the full grid, or random sampling."""

    model_config = _FROZEN

    algorithm: Literal["optuna", "grid", "random"] = "optuna"
    seed: int | None = None
    start_points: list[dict[str, Any]] = Field(default_factory=list)


class Scheduler(BaseModel):
    """When to stop a trial: ASHA (early stopping per epoch) or none (every trial runs out)."""

    model_config = _FROZEN

    name: Literal["asha", "none"] = "asha"
    grace_period: int | None = Field(None, ge=1)
    reduction_factor: float | None = Field(None, gt=1)


class Budget(BaseModel):
    """How much to run: trials, epochs per trial (ASHA's max_t), an optional wall-clock limit."""

    model_config = _FROZEN

    trials: int | None = Field(None, ge=1)
    max_epochs: int = Field(ge=1)
    time_limit: Annotated[float | None, BeforeValidator(_duration_seconds)] = None


class Resources(BaseModel):
    """Per-trial CPUs and GPUs (fractions allowed below 1), a cap on concurrent trials, and how
    often a crashed trial is retried from its last checkpoint."""

    model_config = _FROZEN

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0)

    @field_validator("cpu", "gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"a fraction is allowed below 1 only; above 1 it must be a whole "
                             f"number (got {shown(v)})")
        return v


class Constraints(BaseModel):
    """Models over these sizes are not trained (suffixes K, M, G allowed)."""

    model_config = _FROZEN

    max_params: Annotated[int | None, BeforeValidator(_count)] = None
    max_macs: Annotated[int | None, BeforeValidator(_count)] = None


class Tracking(BaseModel):
    """MLflow settings; None: ``sqlite:///mlflow.db`` and an experiment named after the sweep."""

    model_config = _FROZEN

    uri: str | None = None
    experiment: PlainName | None = None


class _Header(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: PlainName
    description: str | None = None
    design: Literal["ofat"] | None = None
    storage: str | None = None


class SweepSpec(BaseModel):
    """One validated sweep. Build it with :func:`load_spec` or :func:`parse_spec`."""

    model_config = _FROZEN

    name: str
    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Distribution] = Field(default_factory=dict)
    objective: Objective = Objective(metric="val_top1", mode="max")
    search: Search = Search()
    scheduler: Scheduler = Scheduler(name="asha", grace_period=1, reduction_factor=3.0)
    budget: Budget
    resources: Resources = Resources()
    constraints: Constraints = Constraints()
    design: Literal["ofat"] | None = None
    baseline: dict[str, Any] | None = None
    storage: str | None = None
    tracking: Tracking = Tracking()

    def trial_defaults(self) -> dict[str, Any]:
        """The settings every trial shares: ``fixed`` plus ``epochs = budget.max_epochs``."""
        return {**self.fixed, "epochs": self.budget.max_epochs}

    @property
    def is_multi_objective(self) -> bool:
        """Whether the objective has more than one metric."""
        return self.objective.metrics is not None

    @property
    def metric(self) -> str | None:
        """The one metric optimised (None when multi-objective: see :attr:`metrics`)."""
        return self.objective.metric

    @property
    def mode(self) -> str | None:
        """``min`` or ``max`` for :attr:`metric` (None when multi-objective)."""
        return self.objective.mode

    @property
    def metrics(self) -> list[str]:
        """Every metric optimised, in order (one element for a single objective)."""
        if self.objective.metrics is None:
            return [str(self.objective.metric)]
        return [m.name for m in self.objective.metrics]

    @property
    def modes(self) -> list[str]:
        """``min``/``max`` for each of :attr:`metrics`."""
        if self.objective.metrics is None:
            return [str(self.objective.mode)]
        return [str(m.mode) for m in self.objective.metrics]

    @property
    def time_limit_seconds(self) -> float | None:
        """The sweep's wall-clock limit in seconds, or None."""
        return self.budget.time_limit

    @property
    def max_params(self) -> int | None:
        """The largest parameter count a trial's model may have, or None."""
        return self.constraints.max_params

    @property
    def max_macs(self) -> int | None:
        """The most multiply-accumulates per image a trial's model may need, or None."""
        return self.constraints.max_macs

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI."""
        return self.tracking.uri or DEFAULT_TRACKING_URI

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment name."""
        return self.tracking.experiment or self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; ``parse_spec(spec.to_dict())`` gives the same spec back."""
        return self.model_dump(mode="json", exclude_none=True)


def spec_fingerprint(spec: SweepSpec) -> str:
    """sha256 of what defines the search (not trials, time limit, resources or tracking)."""
    d = spec.to_dict()
    payload = {
        "space": [[k, d["space"][k]] for k in spec.space],  # YAML order matters (grid, OFAT)
        "fixed": d["fixed"], "objective": d["objective"], "search": d["search"],
        "scheduler": d["scheduler"], "max_epochs": spec.budget.max_epochs,
        "design": spec.design, "baseline": d.get("baseline"),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def space_order(space: Mapping[str, _Entry]) -> list[str]:
    """Space keys with every ``when`` setting before the entries it switches; else YAML order."""
    order, cyclic = _condition_order(space)
    return order + cyclic


def _condition_order(space: Mapping[str, _Entry]) -> tuple[list[str], list[str]]:
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


# --------------------------------------------------------------------------- entry points

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


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate a spec mapping; every problem is reported at once in one UserError."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of sections (name, space, "
                        f"...), but got a {type(data).__name__}")
    parser = _Parser(data)
    spec = parser.parse()
    if parser.lines or spec is None:
        raise UserError("\n".join(f"{source}: {line}" for line in parser.lines))
    return spec


# --------------------------------------------------------------------------- error lines

def _join(prefix: str, loc: Sequence[Any]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel]:
    """The (nested) model that owns the last key of ``loc``."""
    for part in loc:
        if not isinstance(part, str) or part not in model.model_fields:
            continue
        stack = [model.model_fields[part].annotation]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
                break
            stack.extend(typing.get_args(ann))
    return model


def _unknown(path: str, name: Any, allowed: Sequence[str], what: str = "value") -> str:
    hint = closest(str(name), allowed)
    suggestion = f" (did you mean '{hint}'?)" if hint else ""
    return f"{path}: unknown {what} {shown(name)}{suggestion}; allowed: {', '.join(allowed)}"


def _pydantic_lines(err: ValidationError, prefix: str, model: type[BaseModel]) -> list[str]:
    """One line per pydantic error, with field paths under ``prefix``."""
    lines = []
    for e in err.errors():
        path = _join(prefix, e["loc"]) or "spec"
        ctx = e.get("ctx") or {}
        if e["type"] == "extra_forbidden":
            fields = list(_model_at(model, e["loc"][:-1]).model_fields)
            hint = closest(str(e["loc"][-1]), fields)
            extra = f" (did you mean '{hint}'?)" if hint else ""
            lines.append(f"{path}: unknown key{extra}; allowed: {', '.join(fields)}")
        elif e["type"] == "missing":
            lines.append(f"{path}: required but missing")
        elif e["type"] == "too_short":
            lines.append(f"{path}: needs at least {ctx['min_length']} value(s) "
                         f"(got {shown(e['input'])})")
        elif e["type"] == "too_long":
            lines.append(f"{path}: at most {ctx['max_length']} values are allowed, but got "
                         f"{ctx['actual_length']}")
        elif e["type"] == "literal_error":
            lines.append(_unknown(path, e["input"], re.findall(r"'([^']*)'", ctx["expected"])))
        elif e["type"] == "value_error" and "error" in ctx:
            lines.append(f"{path}: {ctx['error']}")
        else:
            msg = e["msg"][:1].lower() + e["msg"][1:]
            lines.append(f"{path}: {msg} (got {shown(e['input'])})")
    return lines


def _owner(line: str, keys: Sequence[str]) -> str | None:
    """The key a TrialConfig error line is about (``"lr: ..."``, ``"augment[1]: ..."``)."""
    return next((k for k in keys
                 if line.startswith(k) and line[len(k):len(k) + 1] in (":", "[", ".")), None)


# --------------------------------------------------------------------------- trial settings

@cache
def _adapter(key: str) -> TypeAdapter[Any]:
    return TypeAdapter(TrialConfig.model_fields[key].annotation)


def _normalized(key: str, value: Any) -> Any:
    """``value`` as the TrialConfig field ``key`` stores it, JSON-style (tuples -> lists)."""
    try:
        adapter = _adapter(key)
        return adapter.dump_python(adapter.validate_python(value), mode="json")
    except (ValidationError, KeyError):
        return value


def _numeric_kind(key: str) -> str | None:
    """``"int"``/``"float"`` for numeric TrialConfig fields, else None."""
    ann = TrialConfig.model_fields[key].annotation
    args = set(typing.get_args(ann)) - {type(None)} if isinstance(ann, types.UnionType) else {ann}
    if args == {int}:
        return "int"
    return "float" if args == {float} else None


def _takes_list(key: str) -> bool:
    return "tuple" in str(TrialConfig.model_fields[key].annotation)


def _trial_lines(values: dict[str, Any], paths: dict[str, str], other: str) -> list[str]:
    """Problems building a TrialConfig from ``values``: lines about a key in ``paths`` go
    under its path, the rest under ``other``. Registry names are checked one by one too."""
    lines: list[str] = []
    attempts = [values] + [{k: values[k]} for k in _NAMED if k in values and k in paths]
    for attempt in attempts:
        try:
            TrialConfig(**attempt)
        except ValidationError as err:
            for raw in format_validation_error(err):
                key = _owner(raw, list(paths))
                line = paths[key] + raw[len(key):] if key else f"{other}{raw}"
                if line not in lines:
                    lines.append(line)
    return lines


# --------------------------------------------------------------------------- the parser

class _Parser:
    """Parses a spec section by section, collecting every problem before giving up."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.lines: dict[str, None] = {}  # in order, each once
        self.fixed_ok: dict[str, Any] = {}  # fixed, when all of it is valid; else {}

    def add(self, *lines: str) -> None:
        self.lines.update(dict.fromkeys(lines))

    def section(self, path: str, model: type[BaseModel], raw: Any = None) -> Any:
        """``raw`` (default: the top-level section ``path``) validated as ``model``, or None."""
        raw = self.data.get(path) if raw is None else raw
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.add(f"{path}: expected a mapping (got {shown(raw)})")
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as err:
            self.add(*_pydantic_lines(err, path, model))
            return None

    def parse(self) -> SweepSpec | None:
        self.check_top_keys()
        header = self.section("", _Header, self.data)
        fixed = self.parse_fixed()
        space = self.parse_space()
        objective = self.parse_objective()
        search = self.parse_search()
        scheduler = self.parse_scheduler()
        budget = self.section("budget", Budget)
        resources = self.section("resources", Resources)
        constraints = self.section("constraints", Constraints)
        tracking = self.section("tracking", Tracking)
        baseline = self.parse_baseline(header)
        self.check_conditions(space)
        if search is not None:
            search = self.check_search(search, space, header)
        if scheduler is not None:
            self.check_scheduler(scheduler, objective, budget)
        if budget is not None and search is not None and budget.trials is None \
                and search.algorithm != "grid":
            self.add(f"budget.trials: required with search.algorithm {search.algorithm} "
                     f"(how many trials to run)")
        if header is not None and header.design == "ofat":
            self.check_ofat(space)
        parts = [header, fixed, objective, search, scheduler, budget, resources, constraints,
                 tracking]
        if self.lines or any(p is None for p in parts) or len(space) != len(self.raw_space):
            return None
        assert header is not None  # for type checkers; the line above returns otherwise
        return SweepSpec(
            name=header.name, description=header.description or "", fixed=fixed, space=space,
            objective=objective, search=search, scheduler=scheduler, budget=budget,
            resources=resources, constraints=constraints, design=header.design,
            baseline=baseline, storage=header.storage, tracking=tracking)

    # ---- top level

    def check_top_keys(self) -> None:
        allowed = list(SweepSpec.model_fields)
        for key in self.data:
            if key == "pruner":
                self.add(_pruner_line("pruner"))
            elif key not in allowed:
                hint = closest(str(key), allowed)
                extra = f" (did you mean '{hint}'?)" if hint else ""
                self.add(f"{key}: unknown key{extra}; allowed: {', '.join(allowed)}")

    def settings_dict(self, key: str) -> dict[str, Any] | None:
        raw = self.data.get(key)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.add(f"{key}: expected a mapping of trial settings, e.g. {{lr: 0.01}} "
                     f"(got {shown(raw)})")
            return None
        return raw

    def parse_fixed(self) -> dict[str, Any] | None:
        raw = self.settings_dict("fixed")
        if raw is None:
            return None
        raw = dict(raw)
        if "epochs" in raw:
            self.add(f"fixed.epochs: {_EPOCHS}")
            del raw["epochs"]
        lines = _trial_lines(raw, {k: f"fixed.{k}" for k in raw}, "fixed.")
        self.add(*lines)
        if lines:
            return None
        self.fixed_ok = {k: _normalized(k, v) for k, v in raw.items()}
        return self.fixed_ok

    # ---- space

    def parse_space(self) -> dict[str, _Entry]:
        raw = self.data.get("space")
        self.raw_space: dict[str, Any] = {}
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.add("space: expected a mapping of setting -> distribution, e.g. "
                     f"{{lr: {{type: loguniform, low: 1.0e-4, high: 0.1}}}} (got {shown(raw)})")
            return {}
        self.raw_space = raw
        fixed_keys = self.data.get("fixed") if isinstance(self.data.get("fixed"), dict) else {}
        space = {}
        for key, value in raw.items():
            path = f"space.{key}"
            if key == "epochs":
                self.add(f"{path}: {_EPOCHS}")
                continue
            if key not in _SETTINGS:
                hint = closest(str(key), _SETTINGS)
                extra = f" (did you mean '{hint}'?)" if hint else ""
                self.add(f"{path}: not a trial setting{extra}")
                continue
            if key in fixed_keys:
                self.add(f"{path}: also set in fixed; a setting is either fixed or searched")
                continue
            entry = self.parse_entry(key, value)
            if entry is not None:
                space[key] = entry
        return space

    def parse_entry(self, key: str, raw: Any) -> _Entry | None:
        path = f"space.{key}"
        if isinstance(raw, list):
            raw = {"type": "choice", "values": raw}
        if not isinstance(raw, dict):
            self.add(f"{path}: expected a distribution like {{type: uniform, low: 0, high: 1}} "
                     f"or a list of choices (got {shown(raw)}); put constant settings under fixed")
            return None
        raw = dict(raw)
        kind = raw.setdefault("type", "choice" if "values" in raw else None)
        if kind not in _DISTRIBUTIONS:
            if kind is None:
                typo = closest("type", [str(k) for k in raw if k != "type"])
                hint = f" (is '{typo}' a typo?)" if typo else ""
                allowed = ", ".join(_DISTRIBUTIONS)
                self.add(f"{path}.type: required but missing{hint}; allowed: {allowed}")
            else:
                self.add(_unknown(f"{path}.type", kind, list(_DISTRIBUTIONS), "distribution"))
            return None
        if kind == "loguniform" and "q" in raw:
            self.add(f"{path}.q: a loguniform distribution cannot be quantized "
                     f"(got q={shown(raw['q'])}); use type: uniform with q, or type: choice")
            del raw["q"]
        entry = self.section(path, _DISTRIBUTIONS[kind], raw)
        if entry is None:
            return None
        bad = _range_lines(path, entry) or self.setting_lines(key, entry)
        self.add(*bad)
        if bad:
            return None
        if isinstance(entry, _Values):
            entry = entry.model_copy(update={"values": [_normalized(key, v)
                                                        for v in entry.values]})
        return entry

    def setting_lines(self, key: str, entry: _Entry) -> list[str]:
        """Problems with the values ``entry`` gives the TrialConfig setting ``key``."""
        path = f"space.{key}"
        kind = _numeric_kind(key)
        if isinstance(entry, Uniform | LogUniform | IntRange):
            if kind is None:
                return [f"{path}: {key} is not a number, so it needs type: choice "
                        f"(got {entry.type})"]
            if kind == "int" and not isinstance(entry, IntRange):
                return [f"{path}: {key} takes whole numbers, so it needs type: int or choice "
                        f"(got {entry.type})"]
            candidates = [("low", entry.low), ("high", entry.high)]
            return [line for name, v in candidates
                    for line in self.value_lines(key, v, f"{path}.{name}")]
        assert isinstance(entry, _Values)
        lines = []
        for i, v in enumerate(entry.values):
            where = f"{path}.values[{i}]"
            if _takes_list(key) and not isinstance(v, list | None):
                lines.append(f"{where}: {key} takes a list, so each choice is a list, e.g. "
                             f"values: [[16, 32], [32, 64]] (got {shown(v)})")
            else:
                lines += self.value_lines(key, v, where)
        return lines

    def value_lines(self, key: str, value: Any, path: str) -> list[str]:
        return _trial_lines({**self.fixed_ok, key: value}, {key: path}, f"{path}: ")

    # ---- conditions

    def check_conditions(self, space: dict[str, _Entry]) -> None:
        for key, entry in space.items():
            for ctl, raw in (entry.when or {}).items():
                path = f"space.{key}.when.{ctl}"
                line = self.condition_line(space, key, ctl, raw, path)
                if line:
                    self.add(line)
        cyclic = _condition_order(space)[1]
        if cyclic:
            self.add(f"space: the `when` conditions of {', '.join(cyclic)} depend on each other "
                     f"in a cycle; a setting cannot depend on itself")
        for key, entry in list(space.items()):
            if entry.when:
                when = {c: ([_normalized(c, v) for v in raw] if isinstance(raw, list)
                            else _normalized(c, raw)) for c, raw in entry.when.items()}
                space[key] = entry.model_copy(update={"when": when})

    def condition_line(self, space: dict[str, _Entry], key: str, ctl: str, raw: Any,
                       path: str) -> str | None:
        if ctl not in space:
            if ctl in self.raw_space:  # its own problem is reported already
                return None
            fixed = self.data.get("fixed")
            if isinstance(fixed, dict) and ctl in fixed:
                return f"{path}: {ctl} is fixed (to {shown(fixed[ctl])}), not searched; " \
                       f"a condition needs a setting in space"
            others = [k for k in space if k != key]
            hint = closest(ctl, others)
            extra = f" (did you mean '{hint}'?)" if hint else ""
            return f"{path}: not in space{extra}; a condition needs a searched setting; " \
                   f"allowed: {', '.join(others)}"
        if ctl == key:
            return f"{path}: a setting cannot depend on itself"
        values = space[ctl].finite_values()
        if values is None:
            return f"{path}: a condition needs a setting with finite values (choice, grid " \
                   f"or int), but {ctl} is {space[ctl].type}"
        options = raw if isinstance(raw, list) else [raw]
        never = [v for v in options if _normalized(ctl, v) not in values]
        if never:
            hint = "; a list means any of them" if any(isinstance(v, list) for v in values) else ""
            return f"{path}: {ctl} can never be {shown(never[0])}; its values are " \
                   f"{_listed(values)}{hint}"
        return None

    # ---- objective, search, scheduler

    def parse_objective(self) -> Objective | None:
        obj = self.section("objective", Objective)
        if obj is None:
            return None
        if obj.metrics is not None and (obj.metric is not None or obj.mode is not None):
            self.add("objective: give metric (+ mode) for one objective or metrics for "
                     "several, not both")
            return None
        if obj.metrics is None:
            goals = [MetricGoal(name=obj.metric or "val_top1", mode=obj.mode)]
            paths = ["objective.metric"]
        elif not obj.metrics:
            self.add("objective.metrics: needs at least one metric (got [])")
            return None
        else:
            goals = list(obj.metrics)
            paths = [f"objective.metrics[{i}].name" for i in range(len(goals))]
        ok = True
        for goal, path in zip(goals, paths, strict=True):
            if goal.name not in METRICS:
                self.add(_unknown(path, goal.name, list(METRICS), "metric"))
                ok = False
        names = [g.name for g in goals]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            self.add(f"objective.metrics: {shown(dup)} is listed more than once")
            ok = False
        if not ok:
            return None
        goals = [MetricGoal(name=g.name, mode=g.mode or METRICS[g.name]) for g in goals]
        if len(goals) == 1:
            return Objective(metric=goals[0].name, mode=goals[0].mode)
        return Objective(metrics=goals)

    def parse_search(self) -> Search | None:
        raw = self.data.get("search")
        if isinstance(raw, str):
            raw = {"algorithm": raw}
        if isinstance(raw, dict):
            raw = _without_pruners(raw, "search", self)
        return self.section("search", Search, raw if raw is not None else {})

    def parse_scheduler(self) -> Scheduler | None:
        raw = self.data.get("scheduler", {})
        if raw is None or isinstance(raw, str):
            raw = {"name": raw or "none"}
        sched = self.section("scheduler", Scheduler, raw)
        if sched is None:
            return None
        if sched.name == "asha":
            return sched.model_copy(update={
                "grace_period": sched.grace_period or 1,
                "reduction_factor": sched.reduction_factor or 3.0})
        for key in ("grace_period", "reduction_factor"):
            if getattr(sched, key) is not None:
                self.add(f"scheduler.{key}: only used by ASHA, but scheduler.name is none")
        return sched

    def check_search(self, search: Search, space: dict[str, _Entry],
                     header: _Header | None) -> Search:
        ofat = header is not None and header.design == "ofat"
        if ofat:
            if search.algorithm != "grid" and "algorithm" in search.model_fields_set:
                self.add(f"search.algorithm: design: ofat runs the baseline and one change at a "
                         f"time, with no search algorithm (got {search.algorithm!r}); leave it "
                         f"out")
            if search.start_points:
                self.add("search.start_points: design: ofat runs a fixed list of trials; start "
                         "points are for optuna and random search")
            return search.model_copy(update={"algorithm": "grid"})
        if search.algorithm == "grid":
            for key, entry in space.items():
                if entry.finite_values() is None:
                    how = "; list them with type: choice" if isinstance(entry, Uniform) else ""
                    self.add(f"space.{key}: grid search needs finite values, but got "
                             f"{entry.type}{how}")
            if search.start_points:
                self.add("search.start_points: grid search runs every combination; start "
                         "points are for optuna and random search")
            return search
        if not self.data.get("space"):
            self.add(f"space: nothing to search; {search.algorithm} search needs at least one "
                     f"setting in space (or use search.algorithm: grid to run fixed once)")
        points = [self.start_point(i, p, space) for i, p in enumerate(search.start_points)]
        return search.model_copy(update={"start_points": points})

    def start_point(self, i: int, point: dict[str, Any],
                    space: dict[str, _Entry]) -> dict[str, Any]:
        """The start point normalized; its problems are recorded."""
        base = f"search.start_points[{i}]"
        known = {}
        for key, value in point.items():
            if key in space:
                known[key] = value
            elif key not in self.raw_space:
                hint = closest(str(key), list(space))
                why = " (it is fixed)" if key in self.fixed_ok else \
                    (f" (did you mean '{hint}'?)" if hint else "")
                self.add(f"{base}.{key}: not in space{why}; allowed: {', '.join(space)}")
        paths = {k: f"{base}.{k}" for k in known}
        lines = _trial_lines({**self.fixed_ok, **known}, paths, f"{base}: ")
        self.add(*lines)
        if lines:
            return point
        norm = {k: _normalized(k, v) for k, v in known.items()}
        for key, value in norm.items():
            line = _point_line(space[key], value)
            if line:
                self.add(f"{paths[key]}: {line}")
            elif not space[key].is_active(norm) and all(c in norm for c in space[key].when or {}):
                has = ", ".join(f"{c}={shown(norm[c])}" for c in space[key].when)
                self.add(f"{paths[key]}: only searched when {_describe(space[key])}, but this "
                         f"point has {has}")
        return {**point, **norm}

    def check_scheduler(self, sched: Scheduler, objective: Objective | None,
                        budget: Budget | None) -> None:
        if sched.name != "asha":
            return
        if objective is not None and objective.metrics is not None:
            names = ", ".join(m.name for m in objective.metrics)
            self.add(f"scheduler.name: ASHA compares trials on one metric, but the objective has "
                     f"{len(objective.metrics)} ({names}); use scheduler: {{name: none}}")
        elif objective is not None and str(objective.metric).startswith("test_"):
            self.add(f"scheduler.name: {objective.metric} is reported after the last epoch only, "
                     f"so ASHA cannot compare trials on it; optimise a val_ metric or use "
                     f"scheduler: {{name: none}}")
        if budget is not None and sched.grace_period is not None \
                and sched.grace_period > budget.max_epochs:
            self.add(f"scheduler.grace_period: `grace_period <= budget.max_epochs` must hold, "
                     f"but got (grace_period={sched.grace_period}, "
                     f"max_epochs={budget.max_epochs})")

    # ---- one factor at a time

    def parse_baseline(self, header: _Header | None) -> dict[str, Any] | None:
        design = header.design if header is not None else None
        if "baseline" not in self.data or self.data["baseline"] is None:
            if design == "ofat":
                self.add("baseline: design: ofat needs a baseline, the settings every variation "
                         "starts from, e.g. baseline: {optimizer: sgd, lr: 0.05}")
            return None
        raw = self.settings_dict("baseline")
        if raw is None:
            return None
        if header is not None and design != "ofat":
            self.add("baseline: only used with design: ofat (got design: "
                     f"{json.dumps(design)})")
        raw = dict(raw)
        if "epochs" in raw:
            self.add(f"baseline.epochs: {_EPOCHS}")
            del raw["epochs"]
        for key in [k for k in raw if k in self.fixed_ok]:
            self.add(f"baseline.{key}: also set in fixed; a setting is either fixed or varied")
            del raw[key]
        lines = _trial_lines({**self.fixed_ok, **raw}, {k: f"baseline.{k}" for k in raw},
                             "baseline: ")
        self.add(*lines)
        return {k: _normalized(k, v) for k, v in raw.items()}

    def check_ofat(self, space: dict[str, _Entry]) -> None:
        for key, entry in space.items():
            if entry.finite_values() is None:
                self.add(f"space.{key}: design: ofat needs finite values, but got {entry.type}; "
                         f"list the variations, e.g. {key}: {{values: [...]}}")
            if entry.when:
                self.add(f"space.{key}.when: design: ofat changes one setting at a time from "
                         f"the baseline; conditions are not used")


def _pruner_line(path: str) -> str:
    return (f"{path}: early stopping belongs to `scheduler` (ASHA), not to the search "
            f"algorithm; remove it and set scheduler: {{name: asha, grace_period: 1, "
            f"reduction_factor: 3}}")


def _without_pruners(raw: dict[str, Any], path: str, parser: _Parser) -> dict[str, Any]:
    """``raw`` minus any ``pruner`` key (at any depth), each one reported."""
    out = {}
    for key, value in raw.items():
        if key == "pruner":
            parser.add(_pruner_line(f"{path}.{key}"))
        elif isinstance(value, dict):
            out[key] = _without_pruners(value, f"{path}.{key}", parser)
        else:
            out[key] = value
    return out


def _range_lines(path: str, entry: _Entry) -> list[str]:
    """Problems a distribution has on its own (bounds, steps, duplicates)."""
    if isinstance(entry, _Values):
        seen: dict[str, int] = {}
        lines = []
        for i, v in enumerate(entry.values):
            key = json.dumps(v, sort_keys=True, default=str)
            if key in seen:
                lines.append(f"{path}.values[{i}]: duplicate of values[{seen[key]}] "
                             f"(got {shown(v)})")
            seen.setdefault(key, i)
        return lines
    assert isinstance(entry, Uniform | LogUniform | IntRange)
    low, high = entry.low, entry.high
    if not low < high:
        return [f"{path}: `low < high` must hold, but got (low={low}, high={high})"]
    if isinstance(entry, LogUniform) and low <= 0:
        return [f"{path}.low: loguniform needs `low > 0`, but got (low={low})"]
    if isinstance(entry, Uniform) and entry.q is not None:
        steps = (high - low) / entry.q
        if abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            return [f"{path}.q: `high - low` must be a multiple of q, but got "
                    f"(low={low}, high={high}, q={entry.q})"]
    if isinstance(entry, IntRange):
        if (high - low) % entry.step:
            return [f"{path}.step: `high - low` must be a multiple of step, but got "
                    f"(low={low}, high={high}, step={entry.step})"]
        if entry.log and (low < 1 or entry.step != 1):
            return [f"{path}.log: log needs `low >= 1` and `step == 1`, but got "
                    f"(low={low}, step={entry.step})"]
    return []


def _point_line(entry: _Entry, value: Any) -> str | None:
    """Why ``value`` cannot be enqueued for ``entry``, or None."""
    values = entry.finite_values()
    if isinstance(entry, _Values):
        if value not in values:
            return f"not one of the values of the space entry (got {shown(value)}); allowed: " \
                   f"{_listed(values)}"
        return None
    assert isinstance(entry, Uniform | LogUniform | IntRange)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not entry.low <= value <= entry.high:
        return f"`low <= value <= high` must hold, but got (low={entry.low}, " \
               f"value={shown(value)}, high={entry.high})"
    step = entry.q if isinstance(entry, Uniform) else getattr(entry, "step", None)
    if step and not math.isclose((value - entry.low) / step, round((value - entry.low) / step),
                                 abs_tol=1e-6):
        return f"must be low + a multiple of {step} (got {shown(value)})"
    return None


def _listed(values: Iterable[Any], most: int = 20) -> str:
    """The first ``most`` of ``values`` as JSON, comma-separated, cut short for an error line."""
    head = list(itertools.islice(values, most + 1))
    more = ", …" if len(head) > most else ""
    return cut(", ".join(json.dumps(v, default=str) for v in head[:most]) + more)


def _describe(entry: _Entry) -> str:
    return " and ".join(f"{k} is {' or '.join(repr(v) for v in opts)}"
                        for k, opts in entry.conditions().items())

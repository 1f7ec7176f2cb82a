"""Rules that need more than one value of a spec: trial settings against ``fixed``, ``when``
conditions against the rest of the space, and rules between sections (search vs space and
design, scheduler vs objective and budget, trials vs search).

The validators of :class:`~search.spec.sweep.SweepSpec` call these with a
:class:`SpecContext` (pydantic's validation context): the spec as given, and every section
that validated so far (``space``: the entries that did), so one bad section never hides the
problems of another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails

from hpsearch.search.spec.distributions import (
    Choice,
    Entry,
    Grid,
    IntRange,
    LogUniform,
    Uniform,
    condition_order,
    describe_conditions,
    point_problem,
)
from hpsearch.search.spec.errors import (
    did_you_mean,
    listed,
    problem,
    raise_problems,
    reraised,
)
from hpsearch.search.spec.pbt import pbt_problems, pbt_search
from hpsearch.search.spec.sections import (
    TERMINATOR_MIN_TRIALS,
    Budget,
    Objective,
    Scheduler,
    Search,
)
from hpsearch.search.spec.settings import (
    EPOCHS,
    normalized,
    numeric_kind,
    settings,
    takes_list,
    trial_problems,
)
from hpsearch.trainables.config import BUILTIN_TRAINABLE
from hpsearch.trainables.errors import shown
from hpsearch.trainables.plugins import trainable_metrics

__all__ = [
    "SpecContext",
    "across_sections",
    "check_baseline",
    "check_fixed",
    "check_space",
    "without_refused",
]

Problems = list[InitErrorDetails]


@dataclass
class SpecContext:
    """What the validators of one spec share: the mapping as given, and the sections (by
    field name) that validated so far."""

    given: dict[str, Any]
    valid: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, info: ValidationInfo) -> SpecContext:
        """The context of the spec being validated."""
        if not isinstance(info.context, SpecContext):
            raise TypeError("a SweepSpec is validated with a SpecContext (see parse_spec)")
        return info.context

    def mapping(self, section: str) -> dict[str, Any]:
        """The section as given when it is a mapping, else ``{}``."""
        value = self.given.get(section)
        return value if isinstance(value, dict) else {}

    @property
    def fixed(self) -> dict[str, Any]:
        """``fixed``, normalized, when all of it is valid; else ``{}``."""
        return self.valid.get("fixed") or {}

    @property
    def ofat(self) -> bool:
        """Whether the spec is a valid one-factor-at-a-time design."""
        return self.valid.get("design") == "ofat"


def without_refused(raw: Any, refused: Mapping[str, str], out: Problems,
                    deep: bool = False, loc: tuple[Any, ...] = ()) -> Any:
    """``raw`` without the keys refused with a reason of their own (``{got}`` in it is the
    value given); each is added to ``out``. The rest is validated as usual, so a refused key
    hides no other problem. With ``deep``, refused keys in nested mappings go too."""
    if not isinstance(raw, dict):
        return raw
    kept = {}
    for key, value in raw.items():
        if key in refused:
            out.append(problem((*loc, key), refused[key].format(got=shown(value))))
        elif deep and isinstance(value, dict):
            kept[key] = without_refused(value, refused, out, deep, (*loc, key))
        else:
            kept[key] = value
    return kept


# --------------------------------------------------------------------------- fixed, baseline

def check_fixed(raw: dict[str, Any]) -> dict[str, Any]:
    """``fixed`` normalized to TrialConfig values; every problem raised at once."""
    raise_problems(trial_problems(raw, {k: (k,) for k in raw}, (), nest_other=True))
    return {k: normalized(k, v) for k, v in raw.items()}


def check_baseline(raw: dict[str, Any] | None, ctx: SpecContext) -> dict[str, Any] | None:
    """``baseline`` normalized (None without one); it belongs to ``design: ofat`` alone."""
    if raw is None:
        if ctx.ofat:
            raise_problems([problem((), "design: ofat needs a baseline, the settings every "
                                        "variation starts from, e.g. baseline: {optimizer: "
                                        "sgd, lr: 0.05}")])
        return None
    out: Problems = []
    if "design" in ctx.valid and not ctx.ofat:
        out.append(problem((), f"only used with design: ofat (got design: "
                               f"{json.dumps(ctx.valid['design'])})"))
    raw = without_refused(raw, {"epochs": EPOCHS}, out)
    for key in [k for k in raw if k in ctx.fixed]:
        out.append(problem((key,), "also set in fixed; a setting is either fixed or varied"))
        del raw[key]
    out += trial_problems({**ctx.fixed, **raw}, {k: (k,) for k in raw}, ())
    raise_problems(out)
    return {k: normalized(k, v) for k, v in raw.items()}


# --------------------------------------------------------------------------- space

def check_space(raw: Any, validate: Callable[[Any], dict[str, Entry]],
                ctx: SpecContext) -> dict[str, Entry]:
    """The space, validated entry by entry (``validate`` is pydantic's, for a sub-mapping)
    so that one bad entry leaves the others checked; then the ``when`` conditions."""
    ctx.valid["space"] = {}
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise_problems([problem((), f"expected a mapping of setting -> distribution, e.g. "
                                    f"{{lr: {{type: loguniform, low: 1.0e-4, high: 0.1}}}} "
                                    f"(got {shown(raw)})")])
    space: dict[str, Entry] = {}
    out: Problems = []
    for key, value in raw.items():
        why = _not_searchable(key, ctx)
        if why:
            out.append(problem((str(key),), why))
            continue
        if isinstance(value, dict) and value.get("type") == "loguniform":
            value = without_refused(value, LogUniform.refused_keys, out, loc=(key,))
        try:
            entry = validate({key: value})[key]
        except ValidationError as err:
            out += reraised(err)
            continue
        found = _setting_problems(key, entry, ctx.fixed)
        out += found
        if not found:
            space[key] = _with_values_normalized(key, entry)
    out += _condition_problems(space, raw, ctx.mapping("fixed"))
    space = {k: _with_when_normalized(e) for k, e in space.items()}
    ctx.valid["space"] = space
    raise_problems(out)
    return space


def _not_searchable(key: Any, ctx: SpecContext) -> str | None:
    """Why ``key`` cannot be a space entry, or None."""
    if key == "epochs":
        return EPOCHS
    if key == "trainable":
        return "set it in fixed: a sweep runs one trainable (the objective is one of its metrics)"
    if key not in settings():
        return f"not a trial setting{did_you_mean(key, settings())}"
    if key in ctx.mapping("fixed"):
        return "also set in fixed; a setting is either fixed or searched"
    return None


def _setting_problems(key: str, entry: Entry, fixed: dict[str, Any]) -> Problems:
    """Problems with the values ``entry`` gives the TrialConfig setting ``key``."""
    kind = numeric_kind(key)
    if isinstance(entry, Uniform | LogUniform | IntRange):
        if kind is None:
            return [problem((key,), f"{key} is not a number, so it needs type: choice "
                                    f"(got {entry.type})")]
        if kind == "int" and not isinstance(entry, IntRange):
            return [problem((key,), f"{key} takes whole numbers, so it needs type: int or "
                                    f"choice (got {entry.type})")]
        return [p for name in ("low", "high")
                for p in _value_problems(key, getattr(entry, name), (key, name), fixed)]
    out: Problems = []
    for i, v in enumerate(entry.values):
        where = (key, "values", i)
        if takes_list(key) and not isinstance(v, list | None):
            out.append(problem(where, f"{key} takes a list, so each choice is a list, e.g. "
                                      f"values: [[16, 32], [32, 64]] (got {shown(v)})"))
        else:
            out += _value_problems(key, v, where, fixed)
    return out


def _value_problems(key: str, value: Any, where: tuple[Any, ...],
                    fixed: dict[str, Any]) -> Problems:
    return trial_problems({**fixed, key: value}, {key: where}, where)


def _with_values_normalized(key: str, entry: Entry) -> Entry:
    if isinstance(entry, Choice | Grid):
        return entry.model_copy(update={"values": [normalized(key, v) for v in entry.values]})
    return entry


def _with_when_normalized(entry: Entry) -> Entry:
    if not entry.when:
        return entry
    when = {c: ([normalized(c, v) for v in raw] if isinstance(raw, list) else normalized(c, raw))
            for c, raw in entry.when.items()}
    return entry.model_copy(update={"when": when})


def _condition_problems(space: dict[str, Entry], given: Mapping[str, Any],
                        fixed: Mapping[str, Any]) -> Problems:
    out = [problem((key, "when", str(ctl)), msg)
           for key, entry in space.items() for ctl, raw in (entry.when or {}).items()
           if (msg := _condition_problem(space, given, fixed, key, ctl, raw))]
    cyclic = condition_order(space)[1]
    if cyclic:
        out.append(problem((), f"the `when` conditions of {', '.join(cyclic)} depend on each "
                               f"other in a cycle; a setting cannot depend on itself"))
    return out


def _condition_problem(space: dict[str, Entry], given: Mapping[str, Any],
                       fixed: Mapping[str, Any], key: str, ctl: str, raw: Any) -> str | None:
    """What is wrong with ``when: {ctl: raw}`` on the entry ``key``, or None."""
    if ctl not in space:
        if ctl in given:  # its own problem is reported already
            return None
        if ctl in fixed:
            return f"{ctl} is fixed (to {shown(fixed[ctl])}), not searched; a condition needs " \
                   f"a setting in space"
        others = [k for k in space if k != key]
        return f"not in space{did_you_mean(ctl, others)}; a condition needs a searched " \
               f"setting; allowed: {', '.join(others)}"
    if ctl == key:
        return "a setting cannot depend on itself"
    values = space[ctl].finite_values()
    if values is None:
        return f"a condition needs a setting with finite values (choice, grid or int), but " \
               f"{ctl} is {space[ctl].type}"
    options = raw if isinstance(raw, list) else [raw]
    never = [v for v in options if normalized(ctl, v) not in values]
    if never:
        hint = "; a list means any of them" if any(isinstance(v, list) for v in values) else ""
        return f"{ctl} can never be {shown(never[0])}; its values are {listed(values)}{hint}"
    return None


# --------------------------------------------------------------------------- across sections

def across_sections(ctx: SpecContext) -> tuple[Problems, dict[str, Any]]:
    """(problems between sections, the sections they resolve): search against the space and
    the design, the scheduler against the objective and budget, the trials against the search.
    Each rule runs on the sections that validated and is skipped for those that did not."""
    out: Problems = []
    space: dict[str, Entry] = ctx.valid.get("space", {})
    search = ctx.valid.get("search")
    scheduler, budget = ctx.valid.get("scheduler"), ctx.valid.get("budget")
    pbt = scheduler is not None and scheduler.name == "pbt"
    if search is not None:
        search = _checked_search(pbt_search(search, out) if pbt else search, space, ctx, out)
    objective = ctx.valid.get("objective")
    if scheduler is not None:
        out += _scheduler_problems(scheduler, objective, budget)
    if pbt:
        out += pbt_problems(scheduler, ctx.mapping("fixed"), ctx.mapping("space"), budget,
                            ctx.valid.get("design"))
    if search is not None and objective is not None and objective.metrics is not None \
            and search.sampler == "cmaes":
        out.append(problem(("search", "sampler"), f"CMA-ES optimises one objective, but the "
                           f"objective has {len(objective.metrics)}; use nsgaii, tpe or gp"))
    if budget is not None and budget.plateau is not None and objective is not None \
            and objective.metrics is not None:
        out.append(problem(("budget", "plateau"), "a plateau is watched on one objective; "
                           "the objective has several (use budget.target)"))
    if budget is not None and budget.terminator is not None:
        out += _terminator_problems(budget, search, space, objective, ctx.ofat)
    if budget is not None and search is not None and budget.trials is None \
            and search.algorithm != "grid":
        out.append(problem(("budget", "trials"), f"required with search.algorithm "
                                                 f"{search.algorithm} (how many trials to run)"))
    if ctx.ofat:
        out += _ofat_problems(space)
    objective = ctx.valid.get("objective")
    trainable = ctx.fixed.get("trainable", BUILTIN_TRAINABLE)
    if objective is not None and "fixed" in ctx.valid:
        out += _objective_problems(objective, trainable)
    constraints = ctx.valid.get("constraints")
    if trainable != BUILTIN_TRAINABLE and constraints is not None and (
            constraints.max_params is not None or constraints.max_macs is not None):
        out.append(problem(("constraints",), f"limits the built-in classifier's models; "
                                             f"trainable '{trainable}' has none to measure"))
    return out, ({"search": search} if search is not None else {})


def _terminator_problems(budget: Budget, search: Search | None, space: dict[str, Entry],
                         objective: Objective | None, ofat: bool) -> Problems:
    """Optuna's Terminator judges one objective over Optuna-sampled trials, from
    :data:`TERMINATOR_MIN_TRIALS` completed trials on. (Its regret bound needs a setting every
    trial searches: a space always has one, as a `when` condition names a searched setting.)"""
    where, why = ("budget", "terminator"), None
    if search is not None and search.algorithm not in ("optuna", "random"):
        why = (f"Optuna's Terminator judges trials Optuna sampled: it needs search.algorithm "
               f"optuna or random (got {'design: ofat' if ofat else search.algorithm}); use "
               f"budget.plateau")
    elif objective is not None and objective.metrics is not None:
        why = "Optuna's Terminator judges one objective; the objective has several"
    elif budget.trials is not None and budget.trials <= TERMINATOR_MIN_TRIALS:
        why = (f"Optuna's Terminator judges from {TERMINATOR_MIN_TRIALS} completed trials on, "
               f"so it needs budget.trials above {TERMINATOR_MIN_TRIALS} (got {budget.trials}); "
               f"use budget.plateau")
    return [problem(where, why)] if why else []


def _objective_problems(objective: Objective, trainable: str) -> Problems:
    """The objective's metrics must be ones the sweep's trainable reports."""
    reported = trainable_metrics(trainable)
    goals = [(("objective", "metric"), objective.metric)] if objective.metrics is None else \
        [(("objective", "metrics", i, "name"), g.name) for i, g in enumerate(objective.metrics)]
    return [problem(loc, f"trainable '{trainable}' does not report {shown(name)}; allowed: "
                         f"{', '.join(reported)}")
            for loc, name in goals if name not in reported]


def _checked_search(search: Search, space: dict[str, Entry], ctx: SpecContext,
                    out: Problems) -> Search:
    """``search`` as the design and space make it (``ofat`` runs as a grid; start points
    normalized); its problems are added to ``out``."""
    if ctx.ofat:
        if search.algorithm != "grid" and "algorithm" in search.model_fields_set:
            out.append(problem(("search", "algorithm"), f"design: ofat runs the baseline and one "
                               f"change at a time, with no search algorithm (got "
                               f"{search.algorithm!r}); leave it out"))
        if search.start_points:
            out.append(problem(("search", "start_points"), "design: ofat runs a fixed list of "
                               "trials; start points are for optuna and random search"))
        return search.model_copy(update={"algorithm": "grid"})
    if search.algorithm == "grid":
        for key, entry in space.items():
            if entry.finite_values() is None:
                how = "; list them with type: choice" if isinstance(entry, Uniform) else ""
                out.append(problem(("space", key), f"grid search needs finite values, but got "
                                                   f"{entry.type}{how}"))
        if search.start_points:
            out.append(problem(("search", "start_points"), "grid search runs every "
                               "combination; start points are for optuna and random search"))
        return search
    if not ctx.given.get("space"):
        out.append(problem(("space",), f"nothing to search; {search.algorithm} search needs at "
                                       f"least one setting in space (or use search.algorithm: "
                                       f"grid to run fixed once)"))
    points = [_start_point(i, p, space, ctx, out) for i, p in enumerate(search.start_points)]
    return search.model_copy(update={"start_points": points})


def _start_point(i: int, point: dict[str, Any], space: dict[str, Entry], ctx: SpecContext,
                 out: Problems) -> dict[str, Any]:
    """The start point normalized; its problems are added to ``out``."""
    base = ("search", "start_points", i)
    known = {}
    for key, value in point.items():
        if key in space:
            known[key] = value
        elif key not in ctx.mapping("space"):
            why = " (it is fixed)" if key in ctx.fixed else did_you_mean(key, list(space))
            out.append(problem((*base, key), f"not in space{why}; allowed: {', '.join(space)}"))
    found = trial_problems({**ctx.fixed, **known}, {k: (*base, k) for k in known}, base)
    out += found
    if found:
        return point
    norm = {k: normalized(k, v) for k, v in known.items()}
    for key, value in norm.items():
        entry = space[key]
        msg = point_problem(entry, value)
        if msg:
            out.append(problem((*base, key), msg))
        elif not entry.is_active(norm) and all(c in norm for c in entry.when or {}):
            has = ", ".join(f"{c}={shown(norm[c])}" for c in entry.when or {})
            out.append(problem((*base, key), f"only searched when {describe_conditions(entry)}"
                                             f", but this point has {has}"))
    return {**point, **norm}


def _scheduler_problems(sched: Scheduler, objective: Objective | None,
                        budget: Budget | None) -> Problems:
    if not sched.compares:
        return []
    out: Problems = []
    who = Scheduler.LABELS[sched.name]
    if objective is not None and objective.metrics is not None:
        names = ", ".join(m.name for m in objective.metrics)
        out.append(problem(("scheduler", "name"), f"{who} compares trials on one metric, but "
                           f"the objective has {len(objective.metrics)} ({names}); use "
                           f"scheduler: {{name: none}}"))
    elif objective is not None and str(objective.metric).startswith("test_"):
        out.append(problem(("scheduler", "name"), f"{objective.metric} is reported after the "
                           f"last epoch only, so {who} cannot compare trials on it; optimise "
                           f"a val_ metric or use scheduler: {{name: none}}"))
    if budget is not None and sched.grace_period is not None \
            and sched.grace_period > budget.max_epochs:
        out.append(problem(("scheduler", "grace_period"), f"`grace_period <= budget.max_epochs` "
                           f"must hold, but got (grace_period={sched.grace_period}, "
                           f"max_epochs={budget.max_epochs})"))
    return out


def _ofat_problems(space: dict[str, Entry]) -> Problems:
    out: Problems = []
    for key, entry in space.items():
        if entry.finite_values() is None:
            out.append(problem(("space", key), f"design: ofat needs finite values, but got "
                                               f"{entry.type}; list the variations, e.g. "
                                               f"{key}: {{values: [...]}}"))
        if entry.when:
            out.append(problem(("space", key, "when"), "design: ofat changes one setting at a "
                               "time from the baseline; conditions are not used"))
    return out

"""The sections of a spec besides the trial settings: objective, search, scheduler, budget,
resources, constraints and tracking. Each checks what it can on its own; rules that need
another section live in :mod:`search.spec.rules`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from hpsearch.search.names import check_plain
from hpsearch.search.spec.distributions import FROZEN
from hpsearch.search.spec.errors import problem, raise_problems, unknown
from hpsearch.search.units import parse_count, parse_duration
from hpsearch.trainables.errors import shown
from hpsearch.trainables.plugins import metric_modes
from hpsearch.trainables.vocab import METRICS  # re-exported: search.spec.METRICS

__all__ = [
    "Budget",
    "Constraints",
    "DEFAULT_TRACKING_URI",
    "METRICS",
    "MetricGoal",
    "Objective",
    "PRUNER",
    "PlainName",
    "Resources",
    "SAMPLERS",
    "Scheduler",
    "Search",
    "TERMINATOR_MIN_TRIALS",
    "Tracking",
    "mapping",
    "plugin_list",
    "resolve_tracking_uri",
    "scheduler_shorthand",
    "search_shorthand",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # relative to the folder the sweep starts in


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The explicit URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<abs ./mlflow.db>``
    (absolute, so that resume, sync and report find it from any folder)."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(DEFAULT_TRACKING_URI.removeprefix('sqlite:///')).resolve()}"
# Refused wherever it is written (see rules.without_refused), so the reason is what shows.
PRUNER = ("early stopping belongs to `scheduler` (ASHA), not to the search algorithm; remove "
          "it and set scheduler: {{name: asha, grace_period: 1, reduction_factor: 3}}")
# A name that becomes a folder (the sweep's, its MLflow experiment's artifacts).
PlainName = Annotated[str, AfterValidator(check_plain)]


def mapping(raw: Any) -> Any:
    """A section as given: ``null`` is an empty one; anything but a mapping is refused."""
    if raw is None:
        return {}
    if not isinstance(raw, dict | BaseModel):
        raise ValueError(f"expected a mapping (got {shown(raw)})")
    return raw


def plugin_list(raw: Any) -> list[str]:
    """``plugins`` as given: a list of module names (``null`` is none)."""
    if raw is None:
        return []
    names = raw if isinstance(raw, list) else None
    if names is None or not all(isinstance(n, str) and n and all(
            part.isidentifier() for part in n.split(".")) for n in names):
        raise ValueError(f"expected a list of module names, e.g. [my_lab.models] "
                         f"(got {shown(raw)})")
    return list(names)


def _optional(parse: Callable[[Any], Any]) -> BeforeValidator:
    return BeforeValidator(lambda v: None if v is None else parse(v))


class MetricGoal(BaseModel):
    """One objective of a multi-objective sweep."""

    model_config = FROZEN

    name: str
    mode: Literal["min", "max"] | None = None


class Objective(BaseModel):
    """``metric`` + ``mode`` (one objective) or ``metrics`` (several); modes default sensibly."""

    model_config = FROZEN

    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    metrics: list[MetricGoal] | None = None

    @model_validator(mode="after")
    def _known_metrics(self) -> Objective:
        if self.metrics is not None and (self.metric is not None or self.mode is not None):
            raise_problems([problem((), "give metric (+ mode) for one objective or metrics for "
                                        "several, not both")])
        if self.metrics == []:
            raise_problems([problem(("metrics",), "needs at least one metric (got [])")])
        known = metric_modes()  # the built-in metrics and those plugin trainables report
        out = [problem(loc, unknown(goal.name, list(known), "metric"))
               for loc, goal in self._goals() if goal.name not in known]
        names = [goal.name for _, goal in self._goals()]
        out += [problem(("metrics",), f"{shown(dup)} is listed more than once")
                for dup in sorted({n for n in names if names.count(n) > 1})]
        raise_problems(out)
        return self

    def _goals(self) -> list[tuple[tuple[Any, ...], MetricGoal]]:
        if self.metrics is None:
            return [(("metric",), MetricGoal(name=self.metric or "val_top1", mode=self.mode))]
        return [(("metrics", i, "name"), goal) for i, goal in enumerate(self.metrics)]

    def resolved(self) -> Objective:
        """Every mode filled in from :data:`METRICS` (and the plugin trainables' metrics);
        one goal as ``metric`` + ``mode``."""
        known = metric_modes()
        goals = [MetricGoal(name=g.name, mode=g.mode or known[g.name])  # type: ignore[arg-type]
                 for _, g in self._goals()]
        if len(goals) == 1:
            return Objective(metric=goals[0].name, mode=goals[0].mode)
        return Objective(metrics=goals)


def search_shorthand(raw: Any) -> Any:
    """``search: random`` -> ``{algorithm: random}``."""
    return {"algorithm": raw} if isinstance(raw, str) else mapping(raw)


# Optuna's samplers by the name `search.sampler` takes (search.algorithms builds them).
SAMPLERS = ("tpe", "gp", "cmaes", "nsgaii", "random", "qmc")


class Search(BaseModel):
    """What to try next: Optuna (sampler TPE by default), the full grid, or random sampling;
    optionally warm-started from the finished trials of earlier sweeps."""

    model_config = FROZEN
    refused_keys: ClassVar[dict[str, str]] = {"pruner": PRUNER}

    algorithm: Literal["optuna", "grid", "random"] = "optuna"
    sampler: Literal[SAMPLERS] | None = None  # type: ignore[valid-type]
    seed: int | None = None
    start_points: list[dict[str, Any]] = Field(default_factory=list)
    warm_start: list[PlainName] | None = None

    @model_validator(mode="after")
    def _sampler_is_optunas(self) -> Search:
        if self.sampler is not None and self.algorithm != "optuna":
            raise_problems([problem(("sampler",), f"chooses Optuna's sampler, so it needs "
                                    f"algorithm: optuna (got algorithm: {self.algorithm})")])
        if self.warm_start and self.algorithm == "grid":
            raise_problems([problem(("warm_start",), "grid search runs a fixed list; warm "
                                    "starts are for optuna and random search")])
        return self

    @property
    def sampler_name(self) -> str:
        """The Optuna sampler that runs: ``sampler``, else random for ``algorithm: random``,
        else TPE."""
        return self.sampler or ("random" if self.algorithm == "random" else "tpe")


def scheduler_shorthand(raw: Any) -> Any:
    """``scheduler: none`` (or ``null``) -> ``{name: none}``; ``scheduler: asha`` likewise."""
    return {"name": raw or "none"} if raw is None or isinstance(raw, str) else mapping(raw)


class Scheduler(BaseModel):
    """When to stop a trial: ASHA (early stopping per epoch), HyperBand (synchronous brackets,
    pausing trials at each rung), PBT (population-based training: every few epochs the worst
    trials continue from a copy of the best ones' weights with mutated settings) or none
    (every trial runs out)."""

    model_config = FROZEN
    # which settings each scheduler reads
    USES: ClassVar[dict[str, tuple[str, ...]]] = {
        "asha": ("grace_period", "reduction_factor"), "hyperband": ("reduction_factor",),
        "pbt": ("perturbation_interval", "quantile_fraction", "resample_probability"),
        "none": ()}
    # how the report and messages name each
    LABELS: ClassVar[dict[str, str]] = {"asha": "ASHA", "hyperband": "HyperBand", "pbt": "PBT",
                                        "none": "no scheduler"}

    name: Literal["asha", "hyperband", "pbt", "none"] = "asha"
    grace_period: int | None = Field(None, ge=1)
    reduction_factor: float | None = Field(None, gt=1)
    # PBT: epochs between two exploit/explore steps; the share of trials that copy (the
    # bottom) and are copied (the top); how often a mutation resamples instead of perturbing
    perturbation_interval: int | None = Field(None, ge=1)
    quantile_fraction: float | None = Field(None, gt=0, le=0.5)
    resample_probability: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _own_settings(self) -> Scheduler:
        def users(key: str) -> str:
            return " and ".join(n for n, keys in self.USES.items() if key in keys)

        keys = dict.fromkeys(k for used in self.USES.values() for k in used)
        raise_problems([problem((key,), f"not used by scheduler {self.name}; only by "
                                        f"{users(key)}")
                        for key in keys
                        if getattr(self, key) is not None and key not in self.USES[self.name]])
        return self

    @property
    def stops_early(self) -> bool:
        """Whether trials may end before their last epoch (on one metric, per epoch)."""
        return self.name in ("asha", "hyperband")

    @property
    def compares(self) -> bool:
        """Whether the scheduler compares trials on one metric as they train."""
        return self.name != "none"

    def rungs(self, max_epochs: int) -> tuple[int, ...] | None:
        """The epochs after which this scheduler may stop a trial, first to last (resolved
        settings): ASHA's rungs, the milestones Ray's ``ASHAScheduler`` (one bracket, as
        :func:`search.algorithms.build_scheduler` makes it, ``max_t = budget.max_epochs``)
        computes, each at the first whole epoch that reaches it; HyperBand's, the milestones of
        every bracket Ray's ``HyperBandScheduler`` makes; none for ``none`` and ``pbt`` (which
        stops no trial); None when not known (settings not resolved)."""
        if not self.stops_early:
            return ()
        if self.reduction_factor is None:
            return None
        import numpy as np  # Ray's own arithmetic, so a rung on a log boundary rounds alike

        if self.name == "hyperband":
            eta, found = self.reduction_factor, set()
            for s in range(int(np.round(np.log(max_epochs) / np.log(eta))) + 1):
                r = int(max_epochs * eta ** (-s))  # bracket s: r0, then s times x eta
                for _ in range(s + 1 if r else 0):
                    found.add(r)
                    r = int(min(r * eta, max_epochs))
            return tuple(sorted(e for e in found if e < max_epochs))
        if self.grace_period is None:
            return None
        count = int(np.log(max_epochs / self.grace_period) / np.log(self.reduction_factor) + 1)
        epochs = {math.ceil(self.grace_period * self.reduction_factor ** k)
                  for k in range(max(count, 0))}
        return tuple(sorted(e for e in epochs if e < max_epochs))

    def resolved(self) -> Scheduler:
        """Each scheduler's settings filled in: ASHA's grace period 1 and HyperBand's and
        ASHA's reduction factor 3; PBT's perturbation interval 1 epoch, quantile fraction and
        resample probability 0.25 (Ray's)."""
        if self.name == "none":
            return self
        if self.name == "pbt":
            return self.model_copy(update={
                "perturbation_interval": self.perturbation_interval or 1,
                "quantile_fraction": self.quantile_fraction or 0.25,
                "resample_probability": 0.25 if self.resample_probability is None
                else self.resample_probability})
        if self.name == "hyperband":
            return self.model_copy(update={"reduction_factor": self.reduction_factor or 3.0})
        return self.model_copy(update={"grace_period": self.grace_period or 1,
                                       "reduction_factor": self.reduction_factor or 3.0})


# Completed trials before Optuna's Terminator judges (its own default, min_n_trials).
TERMINATOR_MIN_TRIALS = 20


class Budget(BaseModel):
    """How much to run: trials, epochs per trial (ASHA's max_t), an optional wall-clock limit."""

    model_config = FROZEN

    trials: int | None = Field(None, ge=1)
    max_epochs: int = Field(ge=1)
    time_limit: Annotated[float | None, _optional(parse_duration)] = None
    # Study-level stopping: the sweep ends when one trial reaches every target (each in its
    # metric's direction), when the best has not improved in `plateau` finished trials, or when
    # Optuna's Terminator bounds what the best could still gain below `terminator` (the
    # objective's noise, in its units; judged from TERMINATOR_MIN_TRIALS completed trials on).
    target: dict[str, float] | None = None
    plateau: int | None = Field(None, ge=1)
    terminator: float | None = Field(None, gt=0, allow_inf_nan=False)

    @field_validator("target")
    @classmethod
    def _known_targets(cls, target: dict[str, float] | None) -> dict[str, float] | None:
        if target is not None and not target:
            raise ValueError("needs at least one metric: value (got {})")
        raise_problems([problem((name,), unknown(name, list(METRICS), "metric"))
                        for name in target or {} if name not in METRICS])
        return target


class Resources(BaseModel):
    """Per-trial CPUs and GPUs (fractions allowed below 1), a cap on concurrent trials, and how
    often a crashed trial is retried from its last checkpoint."""

    model_config = FROZEN

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

    model_config = FROZEN

    max_params: Annotated[int | None, _optional(parse_count)] = None
    max_macs: Annotated[int | None, _optional(parse_count)] = None


class Tracking(BaseModel):
    """MLflow settings; None: ``sqlite:///mlflow.db`` and an experiment named after the sweep."""

    model_config = FROZEN

    uri: str | None = None
    experiment: PlainName | None = None


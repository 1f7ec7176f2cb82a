"""The whole spec: :class:`SweepSpec`, its sections wired to their rules, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from hpsearch.search.spec.distributions import Distribution
from hpsearch.search.spec.errors import raise_problems, reraised
from hpsearch.search.spec.rules import (
    SpecContext,
    across_sections,
    check_baseline,
    check_fixed,
    check_space,
    without_refused,
)
from hpsearch.search.spec.sections import (
    PRUNER,
    Budget,
    Constraints,
    Objective,
    PlainName,
    Resources,
    Scheduler,
    Search,
    Tracking,
    mapping,
    plugin_list,
    resolve_tracking_uri,
    scheduler_shorthand,
    search_shorthand,
)
from hpsearch.search.spec.settings import EPOCHS, settings_mapping

__all__ = ["SweepSpec", "spec_fingerprint"]

_Mapping = BeforeValidator(mapping)


class SweepSpec(BaseModel):
    """One validated sweep. Build it with :func:`~search.spec.load_spec` or
    :func:`~search.spec.parse_spec`.

    Every section is validated even when another fails (sections left out are validated
    from ``{}``), so a spec's problems are reported all at once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    # Keys refused with a reason of their own, at the top level and in a section (True: in
    # its nested mappings too); the rest of the section is still checked and still counts.
    refused_keys: ClassVar[dict[str, str]] = {"pruner": PRUNER}
    refused_in: ClassVar[dict[str, tuple[dict[str, str], bool]]] = {
        "fixed": ({"epochs": EPOCHS}, False), "search": (Search.refused_keys, True)}

    name: PlainName
    plugins: Annotated[list[str], BeforeValidator(plugin_list)] = Field(default_factory=list)
    description: Annotated[str, BeforeValidator(lambda v: "" if v is None else v)] = ""
    fixed: Annotated[dict[str, Any], BeforeValidator(lambda v: settings_mapping(v) or {})] = \
        Field(default_factory=dict)
    space: dict[str, Distribution] = Field(default_factory=dict)
    objective: Annotated[Objective, _Mapping] = Field(default_factory=dict)
    search: Annotated[Search, BeforeValidator(search_shorthand)] = Field(default_factory=dict)
    scheduler: Annotated[Scheduler, BeforeValidator(scheduler_shorthand)] = \
        Field(default_factory=dict)
    budget: Annotated[Budget, _Mapping] = Field(default_factory=dict)
    resources: Annotated[Resources, _Mapping] = Field(default_factory=dict)
    constraints: Annotated[Constraints, _Mapping] = Field(default_factory=dict)
    design: Literal["ofat"] | None = None
    baseline: Annotated[dict[str, Any] | None, BeforeValidator(settings_mapping)] = None
    storage: str | None = None
    tracking: Annotated[Tracking, _Mapping] = Field(default_factory=dict)

    # ---- validation (of two validators on one field, the later one wraps the earlier)

    @field_validator("fixed")
    @classmethod
    def _fixed(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_fixed(value)

    @field_validator("fixed", "search", mode="wrap")
    @classmethod
    def _refusing(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                  info: ValidationInfo) -> Any:
        """Refused keys are reported; the rest of the section is validated and remembered."""
        refused, deep = cls.refused_in[str(info.field_name)]
        out: list[Any] = []
        try:
            valid = handler(without_refused(value, refused, out, deep))
        except ValidationError as err:
            raise_problems(out + reraised(err))
        SpecContext.of(info).valid[str(info.field_name)] = valid
        raise_problems(out)
        return valid

    @field_validator("space", mode="wrap")
    @classmethod
    def _space(cls, value: Any, handler: ValidatorFunctionWrapHandler,
               info: ValidationInfo) -> dict[str, Any]:
        return check_space(value, handler, SpecContext.of(info))

    @field_validator("objective", "scheduler")
    @classmethod
    def _resolved(cls, value: Objective | Scheduler) -> Objective | Scheduler:
        return value.resolved()

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, value: dict[str, Any] | None,
                  info: ValidationInfo) -> dict[str, Any] | None:
        return check_baseline(value, SpecContext.of(info))

    @field_validator("*")
    @classmethod
    def _remember(cls, value: Any, info: ValidationInfo) -> Any:
        """Each section that validated, for the rules that need more than one section."""
        SpecContext.of(info).valid[str(info.field_name)] = value
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _across_sections(cls, data: Any, handler: ValidatorFunctionWrapHandler,
                         info: ValidationInfo) -> SweepSpec:
        """Rules between sections, run on the sections that validated even when one failed."""
        if isinstance(data, SweepSpec):
            return handler(data)
        if not isinstance(info.context, SpecContext):  # validated without parse_spec
            given = data if isinstance(data, dict) else {}
            return cls.model_validate(data, context=SpecContext(given))
        refused: list[Any] = []
        data = without_refused(data, cls.refused_keys, refused)
        try:
            spec = handler(data)
        except ValidationError as err:
            raise_problems(refused + reraised(err) + across_sections(info.context)[0])
        problems, resolved = across_sections(info.context)
        raise_problems(refused + problems)
        return spec.model_copy(update=resolved)

    # ---- reading

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
        """The MLflow tracking URI, resolved as a sweep resolves it (see
        :func:`search.spec.sections.resolve_tracking_uri`)."""
        return resolve_tracking_uri(self.tracking.uri)

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

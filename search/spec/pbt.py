"""What population-based training (``scheduler: pbt``) needs of the rest of a spec.

Ray's PBT evolves its population itself: it takes no search algorithm, so the first population
is drawn at random (``search.algorithm: random``, the default under PBT) or from the grid, and
every ``perturbation_interval`` epochs the bottom trials continue from a copy of the top ones'
checkpoints with mutated settings. Only settings a trial can change between two epochs of the
same weights are mutated (:data:`~trainables.config.MUTABLE_SETTINGS`); the other searched
settings are drawn once, at the start.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import InitErrorDetails

from hpsearch.search.spec.errors import problem
from hpsearch.search.spec.sections import Budget, Scheduler, Search
from hpsearch.trainables.config import BUILTIN_TRAINABLE, MUTABLE_SETTINGS
from hpsearch.trainables.errors import shown

__all__ = ["mutated_keys", "pbt_problems", "pbt_search"]

Problems = list[InitErrorDetails]
_RANDOM = "random"


def mutated_keys(space: dict[str, Any]) -> list[str]:
    """The searched settings PBT mutates as trials train, in the space's order."""
    return [k for k in space if k in MUTABLE_SETTINGS]


def pbt_search(search: Search, out: Problems) -> Search:
    """``search`` as PBT runs it: the first population drawn at random (or the grid); its
    problems are added to ``out``."""
    if search.algorithm == "optuna" and "algorithm" in search.model_fields_set:
        out.append(problem(("search", "algorithm"), "scheduler pbt evolves its population "
                           "itself and takes no search algorithm; use random (the default "
                           "under pbt) or grid for the first population"))
    if search.sampler is not None:
        out.append(problem(("search", "sampler"), "scheduler pbt draws its first population "
                           "at random or from the grid, with no Optuna sampler; remove it"))
    if search.warm_start:
        out.append(problem(("search", "warm_start"), "scheduler pbt starts from a population "
                           "of its own; warm starts are for optuna and random search"))
    if search.algorithm == "optuna":
        return search.model_copy(update={"algorithm": _RANDOM})
    return search


def pbt_problems(sched: Scheduler, fixed: dict[str, Any], given_space: dict[str, Any],
                 budget: Budget | None, design: Any) -> Problems:
    """What else PBT needs: settings to mutate, a constant learning rate, the built-in
    classifier, a population, and epochs after the first perturbation."""
    out: Problems = []
    if design == "ofat":
        out.append(problem(("design",), "design: ofat changes one setting at a time from a "
                           "baseline; scheduler pbt changes them as trials train; use one or "
                           "the other"))
    if given_space and not any(k in MUTABLE_SETTINGS for k in given_space):
        out.append(problem(("scheduler", "name"), f"pbt mutates {', '.join(MUTABLE_SETTINGS)} "
                           f"as trials train, but space searches none of them; add e.g. lr: "
                           f"{{type: loguniform, low: 1.0e-4, high: 0.1}}"))
    schedule = fixed.get("schedule", "none")
    if schedule != "none":
        out.append(problem(("fixed", "schedule"), f"scheduler pbt changes lr as trials train "
                           f"(its mutations are the schedule), so schedule must be none (got "
                           f"{shown(schedule)})"))
    if "schedule" in given_space:
        out.append(problem(("space", "schedule"), "scheduler pbt changes lr as trials train "
                           "(its mutations are the schedule), so schedule cannot be searched"))
    trainable = fixed.get("trainable", BUILTIN_TRAINABLE)
    if trainable != BUILTIN_TRAINABLE:
        out.append(problem(("scheduler", "name"), f"pbt needs the built-in classifier, which "
                           f"takes mutated settings over with another trial's weights; "
                           f"trainable '{trainable}' does not"))
    if budget is None:
        return out
    if budget.trials is not None and budget.trials < 2:
        out.append(problem(("budget", "trials"), f"`trials >= 2` must hold for scheduler pbt "
                           f"(a population that copies its best), but got {budget.trials}"))
    interval = sched.perturbation_interval or 1
    if interval >= budget.max_epochs:
        out.append(problem(("scheduler", "perturbation_interval"), f"`perturbation_interval < "
                           f"budget.max_epochs` must hold, but got (perturbation_interval="
                           f"{interval}, max_epochs={budget.max_epochs}): no trial would ever "
                           f"train on after a copy"))
    return out

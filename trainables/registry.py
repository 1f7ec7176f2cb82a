"""One generic name -> implementation registry for models, datasets, augmentations, optimizers,
schedules, searchers and schedulers.

The set of names is declared up front (cheap, no torch import) so that specs can be validated
before any heavy module loads; implementations register themselves against a declared name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from hpsearch.trainables.errors import MAX_SHOWN, UserError, closest, shown

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names declared up front, implementations registered by decorator.

    Args:
        kind: What the entries are ("model", "optimizer" ...), used in error messages.
        names: Every name this registry will ever hold.
        module: The module whose import registers the implementations (imported lazily).
    """

    def __init__(self, kind: str, names: Iterable[str], module: str) -> None:
        self.kind = kind
        self._names = tuple(names)
        self._module = module
        self._entries: dict[str, T] = {}

    def names(self) -> tuple[str, ...]:
        """Every declared name, in declaration order."""
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def check(self, name: str, where: str | None = None) -> str:
        """Return ``name`` if declared, else raise a one-line UserError listing what exists."""
        if name in self._names:
            return name
        near = isinstance(name, str) and len(name) <= MAX_SHOWN  # a longer name is near none
        hint = closest(name, self._names) if near else None
        suggestion = f" (did you mean '{hint}'?)" if hint else ""
        place = f"{where}: " if where else ""
        raise UserError(
            f"{place}unknown {self.kind} {shown(name)}{suggestion}; allowed: "
            f"{', '.join(self._names)}"
        )

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under a declared ``name``; duplicates are an error."""

        def decorate(obj: T) -> T:
            if name not in self._names:
                raise RuntimeError(f"{self.kind} '{name}' is not declared in the registry")
            if name in self._entries:
                raise RuntimeError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str, where: str | None = None) -> T:
        """The implementation registered under ``name``."""
        self.check(name, where)
        if name not in self._entries:
            importlib.import_module(self._module)
        if name not in self._entries:
            raise RuntimeError(f"{self.kind} '{name}' is declared but has no implementation")
        return self._entries[name]

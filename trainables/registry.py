"""One generic name -> implementation registry for models, datasets, augmentations, optimizers,
schedules, searchers and schedulers.

The set of built-in names is declared up front (cheap, no torch import) so that specs can be
validated before any heavy module loads; implementations register themselves against a declared
name. Plugins (:mod:`trainables.plugins`) add entries of their own with :meth:`Registry.add`.
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
        self._plugins: dict[str, str] = {}  # name -> the module that registered it

    def names(self) -> tuple[str, ...]:
        """Every name: the built-in ones in declaration order, then the plugins'."""
        return self._names + tuple(self._plugins)

    def is_plugin(self, name: str) -> bool:
        """Whether ``name`` was registered by a plugin (not built in)."""
        return name in self._plugins

    def add(self, name: str, obj: T, origin: str) -> T:
        """Register a plugin's ``obj`` under a new ``name``; ``origin`` names its module."""
        self.check_free(name, origin)
        self._plugins[name] = origin
        self._entries[name] = obj
        return obj

    def check_free(self, name: str, origin: str) -> None:
        """Raise a one-line UserError unless a plugin may register ``name``: a built-in name or
        one another plugin registered already is taken."""
        if not isinstance(name, str) or not name.isidentifier():
            raise UserError(f"{origin}: a {self.kind} name must be a Python identifier, e.g. "
                            f"'deep_mlp', but got {shown(name)}")
        if name in self._names:
            raise UserError(f"{origin}: {self.kind} '{name}' is a built-in name; choose another "
                            f"(built in: {', '.join(self._names)})")
        if name in self._plugins:
            raise UserError(f"{origin}: {self.kind} '{name}' is registered twice (first by "
                            f"{self._plugins[name]}); each name is registered once")

    def __contains__(self, name: object) -> bool:
        return name in self._names or name in self._plugins

    def check(self, name: str, where: str | None = None) -> str:
        """Return ``name`` if declared, else raise a one-line UserError listing what exists."""
        if name in self:
            return name
        names = self.names()
        near = isinstance(name, str) and len(name) <= MAX_SHOWN  # a longer name is near none
        hint = closest(name, names) if near else None
        suggestion = f" (did you mean '{hint}'?)" if hint else ""
        place = f"{where}: " if where else ""
        raise UserError(
            f"{place}unknown {self.kind} {shown(name)}{suggestion}; allowed: "
            f"{', '.join(names)}"
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

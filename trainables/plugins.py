"""Bring your own: models, datasets, augmentations and whole training functions from user code.

A plugin is a module (``my_lab.models``) that registers entries when imported; a sweep names it
under ``plugins:`` and hpsearch imports it on the driver before validating the spec and in
every Ray worker before a trial starts. Each entry declares its own settings as a pydantic model
with defaults and bounds; they become trial settings, checked, searched, logged and reported
like the built-in ones. This module imports neither torch nor Ray.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from hpsearch.trainables.config import (
    AUGMENTATIONS,
    BUILTIN_TRAINABLE,
    DATASETS,
    MODELS,
    TRAINABLES,
    TrialConfig,
    add_settings,
)
from hpsearch.trainables.errors import UserError, shown
from hpsearch.trainables.vocab import METRICS

if TYPE_CHECKING:
    from hpsearch.trainables.bundle import ImageSets

__all__ = [
    "Reporter",
    "TrainFn",
    "TrainableSpec",
    "import_plugins",
    "metric_modes",
    "plugin_roots",
    "run_trainable",
    "register_augmentation",
    "register_dataset",
    "register_model",
    "register_trainable",
    "settings_of",
    "shipped_modules",
    "trainable_metrics",
]

F = TypeVar("F", bound=Callable[..., Any])

# report(metrics, make_state): make_state() builds the checkpoint dict, called only if wanted.
Reporter = Callable[[dict[str, Any], Callable[[], dict[str, Any]] | None], None]
# A whole training function: fn(config, report, state); state is what make_state() returned
# at the checkpoint it resumes from, or None for a fresh start.
TrainFn = Callable[[TrialConfig, Reporter, dict[str, Any] | None], None]


@dataclass(frozen=True)
class TrainableSpec:
    """A plugin training function, the metrics it reports (name -> ``min``/``max``) and the
    settings it reads."""

    fn: TrainFn
    metrics: dict[str, str] = field(default_factory=dict)
    uses: tuple[str, ...] = ()


_SETTINGS_OF: dict[tuple[str, str], tuple[str, ...]] = {}


def settings_of(kind: str, name: str) -> tuple[str, ...]:
    """The settings a plugin entry declared itself (empty for a built-in one)."""
    return _SETTINGS_OF.get((kind, name), ())


def _own_settings(kind: str, name: str, settings: type[BaseModel] | None,
                  uses: Iterable[str], origin: str) -> tuple[str, ...]:
    """The entry's settings added to the trial config, then the built-in ones it ``uses``."""
    uses = tuple(uses)
    unknown = [k for k in uses if k not in TrialConfig.model_fields]
    if unknown:
        raise UserError(f"{origin}: {kind} '{name}' uses={list(uses)}: {shown(unknown[0])} is "
                        f"not a trial setting; declare it in settings=")
    own = add_settings(kind, name, settings, origin) if settings is not None else ()
    _SETTINGS_OF[(kind, name)] = own
    return own + tuple(k for k in uses if k not in own)


def register_model(name: str, *, settings: type[BaseModel] | None = None,
                   uses: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator: ``build(config, in_channels, image_size, num_classes) -> nn.Module`` becomes
    model ``name``; it maps ``[B, C, H, W]`` floats to ``[B, num_classes]`` logits.

    Args:
        name: The model's name in a spec (``model: name``); a new name, not a built-in one.
        settings: A pydantic model whose fields (each with a default) become trial settings.
        uses: Built-in settings the builder reads too (``dropout``, ``activation`` ...).
    """

    def decorate(build: F) -> F:
        from hpsearch.trainables.models import ModelSpec

        origin = build.__module__
        MODELS.check_free(name, origin)  # the name first: a taken one is the error to show
        MODELS.add(name, ModelSpec(_own_settings("model", name, settings, uses, origin), build),
                   origin)
        return build

    return decorate


@dataclass(frozen=True)
class _PluginDataset:
    """A plugin dataset as the data loader calls every dataset: ``(root, config)``."""

    load: Callable[[TrialConfig], ImageSets]
    name: str

    def __call__(self, root: Path | None, config: TrialConfig) -> ImageSets:
        from hpsearch.trainables.bundle import ImageSets

        sets = self.load(config)
        if not isinstance(sets, ImageSets):
            raise TypeError(f"dataset '{self.name}' returned a {type(sets).__name__}; a plugin "
                            "dataset returns hpsearch.ImageSets(classes, train_x, train_y, "
                            "test_x, test_y)")
        return sets


def register_dataset(name: str, *, settings: type[BaseModel] | None = None,
                     uses: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator: ``load(config) -> ImageSets`` (uint8 ``[N, C, H, W]`` images, int64 labels,
    class names) becomes dataset ``name``. hpsearch splits off the validation set, applies
    ``train_limit``/``eval_limit`` and shares the result through Ray's object store."""

    def decorate(load: F) -> F:
        origin = load.__module__
        DATASETS.check_free(name, origin)
        _own_settings("dataset", name, settings, uses, origin)
        DATASETS.add(name, _PluginDataset(load, name), origin)
        return load

    return decorate


def register_augmentation(name: str, *, settings: type[BaseModel] | None = None,
                          uses: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator: ``fn(x, config, generator) -> x`` becomes augmentation ``name``: a batched op
    on float ``[B, C, H, W]`` in ``[0, 1]``, drawing every random number from ``generator``."""

    def decorate(fn: F) -> F:
        origin = fn.__module__
        AUGMENTATIONS.check_free(name, origin)
        _own_settings("augmentation", name, settings, uses, origin)
        AUGMENTATIONS.add(name, fn, origin)
        return fn

    return decorate


def register_trainable(name: str, *, metrics: dict[str, Literal["min", "max"]],
                       settings: type[BaseModel] | None = None,
                       uses: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator: ``fn(config, report, state)`` becomes trainable ``name``, a whole training
    function a spec runs with ``fixed: {trainable: name}``.

    ``fn`` runs ``config.epochs`` epochs from ``state`` (None, or what its ``make_state``
    returned at the checkpoint it resumes from) and calls ``report(metrics, make_state)`` once
    per epoch; ``metrics`` holds every name in ``metrics=`` (the objective is one of them).

    Args:
        name: The trainable's name; not ``classifier`` (the built-in image classifier).
        metrics: Every metric it reports that a spec may optimise, with its direction.
        settings: A pydantic model whose fields (each with a default) become trial settings.
        uses: Built-in settings it reads too (``seed``, ``lr`` ...).
    """

    def decorate(fn: F) -> F:
        origin = fn.__module__
        if not isinstance(metrics, dict) or not metrics:
            raise UserError(f"{origin}: trainable '{name}' needs metrics={{name: 'min' | 'max'}}"
                            f", the metrics it reports (got {shown(metrics)})")
        for metric, mode in metrics.items():
            if mode not in ("min", "max") or not str(metric).isidentifier():
                raise UserError(f"{origin}: trainable '{name}' metrics: {shown(metric)}: "
                                f"{shown(mode)}; allowed: an identifier mapped to 'min' or 'max'")
            if METRICS.get(metric, mode) != mode or metric_modes().get(metric, mode) != mode:
                raise UserError(f"{origin}: trainable '{name}' metrics: {metric} is a "
                                f"{metric_modes()[metric]} metric elsewhere; rename it")
        TRAINABLES.check_free(name, origin)
        uses_all = _own_settings("trainable", name, settings, uses, origin)
        TRAINABLES.add(name, TrainableSpec(fn, dict(metrics), uses_all), origin)
        return fn

    return decorate


def trainable_metrics(name: str) -> dict[str, str]:
    """The metrics trainable ``name`` reports: its declared ones, or the classifier's."""
    if name == BUILTIN_TRAINABLE or name not in TRAINABLES:
        return dict(METRICS)
    spec: TrainableSpec = TRAINABLES.get(name)
    return dict(spec.metrics)


def metric_modes() -> dict[str, str]:
    """Every metric a spec may optimise (built in and plugin trainables'), with its direction."""
    out = dict(METRICS)
    for name in TRAINABLES.names():
        if TRAINABLES.is_plugin(name):
            out.update(TRAINABLES.get(name).metrics)
    return out


# --------------------------------------------------------------------------- importing

def _last_line(err: BaseException) -> str:
    lines = traceback.format_exception_only(type(err), err)
    return (lines[-1].strip() if lines else "") or type(err).__name__


def import_plugins(modules: Sequence[str], where: str = "plugins") -> list[ModuleType]:
    """Import each plugin module (from the working directory or the environment).

    Raises:
        UserError: One line: the module that cannot be imported and the last line of its
            error, or a registration mistake (a name taken, a setting declared twice).
    """
    cwd = os.getcwd()
    if cwd not in sys.path:  # a console script's sys.path lacks the working directory
        sys.path.insert(0, cwd)
    out = []
    for i, name in enumerate(modules):
        try:
            out.append(importlib.import_module(name))
        except UserError as err:
            raise UserError(f"{where}[{i}] {name}: {err}") from None
        except Exception as err:  # noqa: BLE001 - any failure of user code: one line
            raise UserError(f"{where}[{i}]: cannot import plugin {shown(name)}: "
                            f"{_last_line(err)}") from None
    return out


def _installed_dirs() -> list[Path]:
    """Where the environment keeps installed packages (and the standard library)."""
    paths = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return [Path(p).resolve() for p in paths]


def _top_level(module: str) -> ModuleType:
    return sys.modules[module.partition(".")[0]]


def _location(mod: ModuleType) -> Path | None:
    """The package folder or single file of an imported top-level module."""
    paths = list(getattr(mod, "__path__", []) or [])
    if len(paths) == 1:
        return Path(paths[0]).resolve()
    file = getattr(mod, "__file__", None)
    return Path(file).resolve() if file and not paths else None


def shipped_modules(modules: Sequence[str]) -> list[str]:
    """The folders (packages) and files (single-file modules) of the imported plugins' top-level
    modules that live outside the installed environment, the user's own code: what Ray's
    ``runtime_env`` ``py_modules`` uploads to a cluster."""
    installed = _installed_dirs()
    out: dict[str, None] = {}
    for name in modules:
        where = _location(_top_level(name))
        if where is None or any(where.is_relative_to(d) for d in installed):
            continue
        out[str(where)] = None
    return list(out)


def plugin_roots(modules: Sequence[str]) -> list[str]:
    """The folders to put on ``PYTHONPATH`` so that a local Ray's workers import the plugins."""
    return list(dict.fromkeys(str(Path(path).parent) for path in shipped_modules(modules)))


# --------------------------------------------------------------------------- running

class _Diverged(Exception):
    """Raised through a plugin's loop when its objective is no longer finite."""


def run_trainable(config: TrialConfig, report: Reporter, state: dict[str, Any] | None,
                  objective: Sequence[str]) -> str:
    """Run plugin trainable ``config.trainable``; how it ended (``completed``/``diverged``).

    Every report gets the epoch (counted from 1, on from the checkpoint's) and a status; the
    checkpoint ``report`` receives wraps the plugin's own state with that history, so a trial
    resumes where it left off. ``state`` is such a wrapped checkpoint, or None.
    """
    import math

    spec: TrainableSpec = TRAINABLES.get(config.trainable, "trainable")
    history: list[dict[str, Any]] = list(state["history"]) if state else []
    epoch = int(state["epoch"]) if state else 0

    def plugin_report(metrics: dict[str, Any],
                      make_state: Callable[[], dict[str, Any]] | dict[str, Any] | None = None,
                      ) -> None:
        nonlocal epoch
        epoch += 1
        if "epoch" in metrics and metrics["epoch"] != epoch:
            raise ValueError(f"trainable '{config.trainable}' reported epoch "
                             f"{shown(metrics['epoch'])}, but this is report {epoch}; report "
                             "once per epoch (the epoch key may be left out)")
        missing = [m for m in objective if m not in metrics]
        if missing:
            raise ValueError(f"trainable '{config.trainable}' reported {sorted(metrics)}, "
                             f"without the objective {', '.join(missing)}")
        diverged = any(not math.isfinite(float(metrics[m])) for m in objective)
        done = diverged or epoch >= config.epochs
        status = "diverged" if diverged else ("completed" if done else "running")
        out = {**metrics, "epoch": epoch, "status": status}
        history.append(out)
        own = make_state if callable(make_state) else (lambda: make_state)

        def whole() -> dict[str, Any]:
            return {"epoch": epoch, "history": list(history), "plugin": own(),
                    "config": config.to_dict()}

        report(out, whole if make_state is not None else None)
        if diverged:
            raise _Diverged

    try:
        spec.fn(config, plugin_report, state["plugin"] if state else None)
    except _Diverged:
        return "diverged"
    return "completed"

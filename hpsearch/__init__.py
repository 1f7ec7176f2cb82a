"""hpsearch: distributed hyperparameter search for PyTorch image classifiers.

The repository keeps its two packages at the top, ``search/`` (what to try and how) and
``trainables/`` (what one trial does); installed, they live here, as ``hpsearch.search`` and
``hpsearch.trainables`` (pyproject's ``package-dir``), so hpsearch claims no generic top-level
import name of its own.

The plugin API is one import, ``from hpsearch import register_model, register_dataset,
register_augmentation, register_trainable`` (and ``TrialConfig``, ``Reporter``, ``ImageSets``,
``UserError``); see :mod:`hpsearch.trainables.plugins` and the README's "Bring your own model,
data or training loop". ``check_model`` runs the contract every registered model keeps
(:mod:`hpsearch.trainables.contract`), for a plugin author's own tests.
"""

from __future__ import annotations

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "search" / "__init__.py").is_file() and (_checkout / "pyproject.toml").is_file():
    # imported from a checkout (its root on sys.path, e.g. pytest or `python -m hpsearch`):
    # find the packages where the repository keeps them, as an installed copy would
    __path__.append(str(_checkout))  # noqa: F821 - a package's own __path__

# The plugin API, resolved on first use: `import hpsearch` stays free of torch and Ray.
_PUBLIC = {
    "register_model": "hpsearch.trainables.plugins",
    "register_dataset": "hpsearch.trainables.plugins",
    "register_augmentation": "hpsearch.trainables.plugins",
    "register_trainable": "hpsearch.trainables.plugins",
    "Reporter": "hpsearch.trainables.plugins",
    "TrialConfig": "hpsearch.trainables.config",
    "UserError": "hpsearch.trainables.errors",
    "ImageSets": "hpsearch.trainables.bundle",  # imports torch (a dataset plugin has it anyway)
    "check_model": "hpsearch.trainables.contract",  # a plugin model's own tests (imports torch)
    "ContractError": "hpsearch.trainables.contract",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])

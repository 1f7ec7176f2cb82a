"""hpsearch: distributed hyperparameter search for PyTorch image classifiers.

The repository keeps its two packages at the top, ``search/`` (what to try and how) and
``trainables/`` (what one trial does); installed, they live here, as ``hpsearch.search`` and
``hpsearch.trainables`` (pyproject's ``package-dir``), so hpsearch claims no generic top-level
import name of its own.
"""

from __future__ import annotations

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "search" / "__init__.py").is_file() and (_checkout / "pyproject.toml").is_file():
    # imported from a checkout (its root on sys.path, e.g. pytest or `python -m hpsearch`):
    # find the packages where the repository keeps them, as an installed copy would
    __path__.append(str(_checkout))  # noqa: F821 - a package's own __path__

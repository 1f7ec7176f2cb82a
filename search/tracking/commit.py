"""The git commit of the hpsearch code that runs (kept with every sweep and MLflow run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["git_commit"]


def git_commit() -> str | None:
    """The commit of the hpsearch code that runs: ``$HPSEARCH_GIT_COMMIT`` (set when the
    image is built; containers have no git), else ``git rev-parse HEAD`` of this checkout."""
    if os.environ.get("HPSEARCH_GIT_COMMIT"):
        return os.environ["HPSEARCH_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None

"""A population-based training sweep's lineage, read from either source: one row per copy of
another trial's weights a trial trained on, with the settings mutated.

From Ray's files, a copy is in the result of the first epoch after it
(:data:`~trainables.vocab.COPIED`); from MLflow, in the trial run's lineage tag
(:mod:`search.tracking.lineage`). Both become the same frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from hpsearch.trainables.vocab import COPIED

__all__ = ["LINEAGE_CAPTION", "LINEAGE_COLUMNS", "copies_in_results", "copies_in_tags",
           "lineage_frame", "lineage_table"]

# trial, the epoch whose checkpoint it copied, whose it was, the settings mutated (old -> new)
LINEAGE_COLUMNS = ("trial_id", "epoch", "copied_from", "changes")


def copies_in_results(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The copies a trial's results report, oldest first: ``{"epoch", "from", "changes"}``."""
    return [{"epoch": int(r[COPIED]["epoch"]), "from": str(r[COPIED]["from"]),
             "changes": dict(r[COPIED].get("changes") or {})}
            for r in rows if isinstance(r.get(COPIED), Mapping)]


def copies_in_tags(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """The copies a trial run's lineage tag lists, oldest first."""
    from hpsearch.search.tracking.lineage import lineage_of

    return lineage_of(tags)


def lineage_frame(trials: Iterable[tuple[str, list[dict[str, Any]]]]) -> pd.DataFrame:
    """(trial id, its copies) pairs as one frame of :data:`LINEAGE_COLUMNS`, by epoch then
    trial; ``changes`` as text (``lr: 0.1 → 0.12``)."""
    from hpsearch.search.tracking.lineage import changes_text

    rows = [{"trial_id": trial_id, "epoch": int(c["epoch"]), "copied_from": str(c["from"]),
             "changes": changes_text(c.get("changes") or {})}
            for trial_id, copies in trials for c in copies]
    frame = pd.DataFrame(rows, columns=list(LINEAGE_COLUMNS))
    return frame.sort_values(["epoch", "trial_id"], kind="stable").reset_index(drop=True)


LINEAGE_CAPTION = ("population-based training: at each meeting, a trial of the bottom "
                   "quantile went on from a copy of a top trial's checkpoint (weights and "
                   "settings) after the epoch shown, with the settings shown mutated (the "
                   "other trial's value → its own); its scores are the copy's from then on")


def lineage_table(data: Any) -> pd.DataFrame | None:
    """The report's lineage table of a :class:`~search.report.data.SweepData`, or None when
    no trial trained on another's weights."""
    frame = data.lineage
    if frame is None or frame.empty:
        return None
    return frame.rename(columns={"trial_id": "Trial", "epoch": "Epoch",
                                 "copied_from": "Copied from", "changes": "Changes"})

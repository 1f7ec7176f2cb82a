"""The parent run as the sweep's front page: its description is the leaderboard (markdown, as
:mod:`search.report` tabulates it) and ``report.html`` (the whole report) is its artifact."""

from __future__ import annotations

import bisect
import logging
import tempfile
from pathlib import Path
from typing import Any

from hpsearch.search.tracking.store import _Store
from hpsearch.search.tracking.values import NOTE_TAG, TAG_MAX

__all__ = ["REPORT_ARTIFACT", "log_summary", "summary_markdown"]

logger = logging.getLogger(__name__)

REPORT_ARTIFACT = "report.html"


def log_summary(store: _Store, only_changed: bool = False) -> bool:
    """Write the sweep's report from its folder; set the parent's description to the
    leaderboard and upload ``report.html``. ``only_changed``: skip both when the description
    is already this one and the report is there (a repeated ``sync``).

    Returns whether the summary was logged. A report that cannot be built (no trial has
    results yet) is a warning, never an error; MLflow errors propagate (the writer retries).
    """
    parent = store.parent
    if parent is None:
        return False
    from hpsearch.search.report import from_ray_dir, write_report

    with tempfile.TemporaryDirectory() as tmp:
        try:
            data = from_ray_dir(store.run_dir)
            note = summary_markdown(data)
            if only_changed and parent.tags.get(NOTE_TAG) == note \
                    and REPORT_ARTIFACT in store.artifact_names(parent):
                return False
            files = write_report(data, Path(tmp))
        except Exception as err:  # noqa: BLE001 - the report must not fail the tracking
            logger.warning("no report on the MLflow parent run: %s: %s",
                           type(err).__name__, err)
            return False
        parent.set_tags({NOTE_TAG: note})
        store.flush(parent)
        store.upload(parent, files[REPORT_ARTIFACT])
    return True


def summary_markdown(data: Any, limit: int = TAG_MAX) -> str:
    """The report's leaderboard as a markdown description (as many rows, best first, as fit
    in ``limit`` characters, MLflow's size of a tag)."""
    from hpsearch.search.report import leaderboard, leaderboard_text

    head = leaderboard_text(data, top=0).splitlines()[0]
    lines = _markdown(leaderboard(data))
    header, rows = lines[:2], lines[2:]
    foot = (f"\n\nThe whole report: artifact `{REPORT_ARTIFACT}`. Trial runs are named "
            "`<trial id> · <status>`.")

    def text(shown: int) -> str:
        if not shown:
            return f"{head}{foot}"
        cut = f"\n\n(best {shown} of {len(rows)} trials)" if shown < len(rows) else ""
        return f"{head}\n\n" + "\n".join(header + rows[:shown]) + cut + foot

    if len(whole := text(len(rows))) <= limit:
        return whole
    # the most rows that fit: a text's length grows with its rows, so a bisection builds the
    # text a dozen times at 5,000 trials, not once per row count
    shown = bisect.bisect_right(range(len(rows)), limit, key=lambda n: len(text(n))) - 1
    return text(shown) if shown >= 0 else head[:limit]


def _markdown(frame: Any) -> list[str]:
    """A table's markdown lines: header, rule, one line per row."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |"
                    for row in frame.itertuples(index=False)]

"""A trial's run brought to its end: points caught up from ``result.json``, final status tags,
learning-curve and confusion artifacts, the run ended and its bookkeeping forgotten."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hpsearch.search.figures import CONFUSION_CSV, CONFUSION_PNG, CURVES_PNG
from hpsearch.search.sweepdir import RESULT_FILE, by_step, read_results, result_step
from hpsearch.search.tracking.plots import plot_curves, write_confusion
from hpsearch.search.tracking.store import _Run, _Store, end_run
from hpsearch.search.tracking.values import (
    NOTE_TAG,
    RUN_ENDED,
    STOPPED_EPOCH_TAG,
    now_ms,
    result_metrics,
    run_status,
    stamp_ms,
    trial_note,
)
from hpsearch.trainables.vocab import Status, ended_with_sweep, stopped_label

__all__ = ["FIGURES_MIN_S", "finish_trial", "is_complete", "trial_history"]

# A trial that trained for less than this (its epochs' ``epoch_seconds`` summed) gets its
# confusion matrix as CSV only, and no PNGs: the heatmap and the curves take the writer thread
# about 0.3 s on this project's 2-core machine under load, more than a tiny trial's training,
# and a sweep of thousands of those left MLflow minutes behind.
FIGURES_MIN_S = 10.0

# The last step an ended run is known to hold in full: a sync replays nothing into it.
SYNCED_TAG = "hpsearch.synced_through"


def trial_history(state: _Run) -> list[dict[str, Any]]:
    """A trial's results, one per step: its ``result.json`` and what this process was told."""
    disk = read_results(Path(state.trial_path) / RESULT_FILE) if state.trial_path else []
    return by_step([*disk, *(state.history[s] for s in sorted(state.history))])


def is_complete(state: _Run, rows: list[dict[str, Any]]) -> bool:
    """Whether a finished run already holds every step of ``rows`` (its tracker said so)."""
    through = state.tags.get(SYNCED_TAG, "")
    return (state.status in RUN_ENDED and through.isdigit()
            and int(through) >= max((result_step(r) for r in rows), default=0))


def finish_trial(store: _Store, trial_id: str, status: Status | str, *,
                 error: str | None = None, only_missing: bool = False) -> None:
    """Catch up the trial's points from its result.json, set final status tags, upload the
    learning-curve and confusion artifacts, end the run, then forget its bookkeeping.

    The ended run is named ``<trial id> · <status>`` and gets MLflow's run status for it
    (:func:`~search.tracking.values.run_status`), so the runs table tells a trial ASHA
    stopped early from a completed one; a trial still training when the sweep ended (its
    epoch none of the scheduler's rungs, as the report tells them) is ``<trial id> · ended at
    epoch N``, its description says so, and its status tag stays ``stopped early``. A status
    that is not final (running, unknown) only updates the tags.
    """
    status = Status(status)
    state = store.children[trial_id]
    history = trial_history(state)
    if not is_complete(state, history):
        for row in history:  # heals gaps left by an outage or an earlier session
            store.add_metrics(state, result_metrics(row), result_step(row), stamp_ms(row))
    tags: dict[str, Any] = {"hpsearch.status": status}
    epochs_run = result_step(history[-1]) if history else 0
    if status == Status.STOPPED_EARLY:
        tags[STOPPED_EPOCH_TAG] = epochs_run
    elif status.final and STOPPED_EPOCH_TAG in state.tags:  # stopped once, resumed since
        store.client.delete_tag(state.run_id, STOPPED_EPOCH_TAG)
        del state.tags[STOPPED_EPOCH_TAG]
        state.pending_tags.pop(STOPPED_EPOCH_TAG, None)
    if status == Status.FAILED and error:
        tags["hpsearch.error"] = error
    reason = history[-1].get("rejected_reason") if history else None
    if status == Status.REJECTED and reason:
        tags["hpsearch.rejected_reason"] = reason
    cut = status == Status.STOPPED_EARLY and ended_with_sweep(epochs_run, store.rungs)
    if status.final:
        tags[NOTE_TAG] = trial_note(status, epochs_run, state.setting("epochs"),
                                    error or reason, cut=cut)
    if status.final and history and not store.lossy:
        # Sent after the points in the same flush (:meth:`_Run.send`): once it is on the run,
        # every step up to here is in MLflow, so a sync may skip this run.
        tags[SYNCED_TAG] = result_step(history[-1])
    state.set_tags(tags)
    store.flush(state)
    if not status.final:
        return
    store.trial_ended(trial_id, stamp_ms(history[-1]) if history else now_ms())
    if history:
        existing = store.artifact_names(state) if only_missing else set()
        with tempfile.TemporaryDirectory() as tmp:
            for local in _artifacts(trial_id, status, history, Path(tmp), store.classes):
                if local.name not in existing:
                    store.upload(state, local)
    end = run_status(status)
    name = run_name(trial_id, status, stopped_label(epochs_run, store.rungs) if cut else None)
    if state.status != end or state.tags.get("mlflow.runName") != name:
        end_run(store.client, state.run_id, end, name)
        state.status = end
    state.compact()


def run_name(trial_id: str, status: Status, label: str | None = None) -> str:
    """An ended trial's run name: ``3f2a_00001 · stopped early``, or with ``label`` in place
    of the status (``3f2a_00001 · ended at epoch 4``)."""
    return f"{trial_id} · {label or status.label}"


def _artifacts(trial_id: str, status: Status, history: list[dict[str, Any]],
               tmp: Path, classes: tuple[str, ...] | None) -> list[Path]:
    """The trial's artifacts in ``tmp``: its test confusion matrix as CSV, and for a trial that
    trained :data:`FIGURES_MIN_S` or more (or whose results do not say), that matrix as a
    heatmap and its learning curves from two epochs on (a curve of one point says no more than
    the run's metrics)."""
    files = []
    seconds = [r["epoch_seconds"] for r in history
               if isinstance(r.get("epoch_seconds"), int | float)]
    draw = not seconds or sum(seconds) >= FIGURES_MIN_S
    if draw and sum(1 for r in history if "train_loss" in r or "val_loss" in r) >= 2:
        plot_curves(history, tmp / CURVES_PNG, f"trial {trial_id} ({status})")
        files.append(tmp / CURVES_PNG)
    matrix = next((r["test_confusion"] for r in reversed(history)
                   if isinstance(r.get("test_confusion"), list) and r["test_confusion"]),
                  None)
    if matrix is not None:
        png = tmp / CONFUSION_PNG if draw else None
        write_confusion(matrix, tmp / CONFUSION_CSV, png, classes)
        files += [tmp / CONFUSION_CSV, *([png] if png else [])]
    return files

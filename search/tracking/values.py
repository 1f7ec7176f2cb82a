"""What a Tune result becomes in MLflow: params as text, numeric metrics, a step, a timestamp,
and the trial's :class:`~trainables.vocab.Status`."""

from __future__ import annotations

import json
import numbers
import time
from collections.abc import Mapping
from typing import Any

from hpsearch.trainables import vocab
from hpsearch.trainables.vocab import Status

__all__ = ["flatten_params", "resolved_config", "result_metrics", "run_status", "trial_note",
           "trial_status"]

# Ray's own bookkeeping in a result: not metrics worth a chart (``epoch`` is the step).
_NOT_METRICS = frozenset({
    "epoch", "timestamp", "training_iteration", "time_this_iter_s", "time_since_restore",
    "iterations_since_restore", "pid", "done", "should_checkpoint", "trial_id", "date",
    "node_ip", "hostname", "experiment_tag", "config", "checkpoint_dir_name", "gpu_ids",
    "node_id", "device",
})
# MLflow's run statuses: the run status a trial's Status ends its run with (the runs table's
# icon); the Status itself is in the run's name and tag ``hpsearch.status``.
RUN_RUNNING, RUN_FINISHED, RUN_FAILED, RUN_KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
_RUN_END = {Status.COMPLETED: RUN_FINISHED, Status.STOPPED_EARLY: RUN_KILLED,
            Status.REJECTED: RUN_KILLED, Status.DIVERGED: RUN_FAILED, Status.FAILED: RUN_FAILED}
RUN_ENDED = frozenset(_RUN_END.values())
NOTE_TAG = "mlflow.note.content"  # MLflow's run description (markdown)
STOPPED_EPOCH_TAG = "hpsearch.stopped_epoch"  # the epoch a scheduler stopped the trial at
PARAM_MAX = 6000  # MLflow's size limits of a param's and a tag's value
TAG_MAX = 8000


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings to dotted keys; lists and None as JSON strings (MLflow params are text)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        elif isinstance(value, str):
            out[name] = value[:PARAM_MAX]
        else:
            try:
                text = json.dumps(value) if not isinstance(value, float) else repr(value)
            except TypeError:
                text = str(value)
            out[name] = text[:PARAM_MAX]
    return out


def resolved_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting a trial used: Tune's config with the trial config's defaults filled in
    (``activation``, ``seed``, ``schedule``...), as the trial itself parsed it."""
    from hpsearch.trainables.config import parse_trial_config
    from hpsearch.trainables.errors import UserError

    try:
        return {**config, **parse_trial_config(dict(config)).to_dict()}
    except UserError:  # not a trial config (a foreign trainable): log what Tune gave
        return dict(config)


def run_status(status: Status) -> str:
    """The MLflow run status a trial that ended with ``status`` gets: FINISHED when it
    completed, KILLED when it was stopped early or rejected, FAILED when it failed or
    diverged."""
    return _RUN_END[status]


def trial_note(status: Status, epochs_run: int, epochs: str | None, why: str | None,
               cut: bool = False) -> str:
    """A trial run's description, the status first: what the runs table's Description column
    shows whole where the run name is cut (``stopped early: by the scheduler after epoch 1 of
    3``). ``cut``: a trial stopped early that was still training when the sweep ended (``ended
    with the sweep: after epoch 4 of 10, still training``)."""
    of = f" of {epochs}" if epochs else ""
    if cut and status == Status.STOPPED_EARLY:
        return f"{vocab.ENDED_WITH_SWEEP}: " + (
            f"after epoch {epochs_run}{of}, still training" if epochs_run
            else "before its first epoch")
    detail = {Status.COMPLETED: f"trained all {epochs_run} epochs",
              Status.STOPPED_EARLY: f"by the scheduler after epoch {epochs_run}{of}",
              Status.DIVERGED: f"loss not finite at epoch {epochs_run}{of}",
              Status.REJECTED: why or "over a cost limit, never trained",
              Status.FAILED: why or "raised"}.get(status, "")
    return f"{status.label}: {detail}" if detail else status.label


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of one result (no strings, no lists, no Ray bookkeeping)."""
    return {k: float(v) for k, v in result.items()
            if k not in _NOT_METRICS and isinstance(v, numbers.Real) and not isinstance(v, bool)}


def trial_status(history: list[dict[str, Any]], tune_status: str | None,
                 error: str | None) -> Status:
    """:func:`trainables.vocab.trial_status` of a trial from its results (the last one's
    ``status``), Tune's status and its error."""
    return vocab.trial_status(history[-1].get("status") if history else None, tune_status, error)


def now_ms() -> int:
    return int(time.time() * 1000)


def stamp_ms(result: Mapping[str, Any]) -> int:
    """When a result was reported (Tune's ``timestamp``), in MLflow's milliseconds."""
    stamp = result.get("timestamp")
    return int(stamp * 1000) if isinstance(stamp, numbers.Real) else now_ms()


def quote(text: str) -> str:
    """``text`` inside single quotes of an MLflow search filter."""
    return text.replace("'", "\\'")

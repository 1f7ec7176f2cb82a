"""A killed sweep's folder brought back in line with Tune's record of it.

Tune writes its experiment snapshot (``experiment_state-<session>.json``: every trial's status,
last result and checkpoint) only now and then, and copies the trials' ``result.json`` from the
driver's staging folder to the storage path only with it. A driver killed between two
snapshots therefore leaves a folder that disagrees with the record Tune will restore:

- trial folders Tune never recorded (a trial started, perhaps checkpointed, after the last
  snapshot): Tune will not resume them, so they are removed; the searcher, restored to the same
  snapshot, asks for that config again;
- ``result.json`` rows past the checkpoint Tune resumes a trial from: cut, because the resumed
  trial reports those epochs again from its newest checkpoint (see ``trainables.tune_adapter``);
- rows missing up to the epoch Tune recorded (the copy to storage lagged): rebuilt from the
  trial's newest checkpoint, which holds every epoch's metrics;
- the checkpoint Tune resumes an unfinished trial from, pruned since (a trial keeps its newest
  two): its newest put back under that name, since Tune refuses a checkpoint that is gone;
- a newest snapshot cut off mid-write: removed with its session's searcher files, so Tune restores
  the one before.

The snapshot is the one truth: after :func:`rollback`, Ray's record and the trial folders agree,
and :func:`search.tracking.sync` makes MLflow agree with both. The record itself is read by
:func:`search.sweepdir.read_record` (re-exported here).
"""

from __future__ import annotations

import json
import logging
import shutil
from typing import Any

from hpsearch.search.storage import Location, RemotePath, write_atomic
from hpsearch.search.sweepdir import (
    RESULT_FILE,
    SEARCH_STATE_GLOB,
    STATE_GLOB,
    TRIAL_GLOB,
    RecordedTrial,
    TuneRecord,
    read_record,
    result_lines,
    result_step,
)

__all__ = ["STATE_GLOB", "RecordedTrial", "TuneRecord", "read_record", "rollback",
           "set_concurrency", "set_trial_budget"]

logger = logging.getLogger(__name__)


def _remove_tree(path: Location) -> None:
    if isinstance(path, RemotePath):
        path.fs.delete_dir(path.fs_path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _checkpoint_history(trial_dir: Location) -> list[dict[str, Any]]:
    """Every epoch's metrics from the trial's newest complete checkpoint (empty if none)."""
    from hpsearch.trainables.tune_adapter import latest_checkpoint_state

    state = latest_checkpoint_state(_trial_folder(trial_dir), None)
    return list(state.get("history", [])) if state else []


def _trial_folder(trial_dir: Location) -> Any:
    from hpsearch.trainables.tune_adapter import TrialFolder

    return TrialFolder(trial_dir.fs, trial_dir.fs_path) if isinstance(trial_dir, RemotePath) \
        else TrialFolder.local(trial_dir)


def _restore_recorded_checkpoint(trial_dir: Location, trial: RecordedTrial) -> bool:
    """Put back the checkpoint Tune will resume an unfinished trial from, when the trial has
    since pruned it (it keeps its newest two, and Tune's snapshot may be several epochs old):
    a copy of the trial's newest one under that name, its marker naming the epoch Tune
    recorded for it (the resumed trial reports the epochs after that one again). Tune refuses
    to restore a trial from a checkpoint that is gone; the trial resumes from its newest
    anyway (``trainables``'s ``latest_checkpoint_state``). Whether a copy was made."""
    if trial.over or trial.checkpoint_name is None:
        return False
    if (trial_dir / trial.checkpoint_name).is_dir():
        return False
    folder = _trial_folder(trial_dir)
    newest = folder.newest()
    if newest is None:
        return False
    folder.copy_checkpoint(newest, trial.checkpoint_name, trial.checkpoint_epoch)
    return True


def _align_results(trial_dir: Location, trial: RecordedTrial) -> bool:
    """Cut or complete ``result.json`` to the epochs Tune recorded; whether it changed."""
    path = trial_dir / RESULT_FILE
    try:
        text = path.read_text()
    except (OSError, FileNotFoundError):
        text = ""
    through = trial.kept_epochs
    kept: dict[int, str] = {}
    for line, row in result_lines(text):
        epoch = result_step(row)
        if through is not None and epoch <= through:
            kept.setdefault(epoch, line)
    if through is not None and max(kept, default=-1) < through:
        for row in _checkpoint_history(trial_dir):  # the copy to storage lagged the snapshot
            epoch = result_step(row)
            if epoch <= through:
                kept.setdefault(epoch, json.dumps({**row, "trial_id": trial.trial_id}))
    new = "".join(f"{kept[e]}\n" for e in sorted(kept))
    if new == text:
        return False
    write_atomic(path, new)
    return True


def rollback(run_dir: Location, record: TuneRecord) -> dict[str, int]:
    """Bring the sweep's folder in line with ``record`` (see the module docstring).

    Returns counts: ``orphans`` (trial folders removed), ``rows`` (trials whose
    ``result.json`` was cut or completed) and ``checkpoints`` (recorded checkpoints put back).
    """
    known = record.by_dirname()
    orphans = rows = checkpoints = 0
    for trial_dir in run_dir.glob(TRIAL_GLOB):
        if not trial_dir.is_dir():
            continue
        trial = known.get(trial_dir.name)
        if trial is None:
            _remove_tree(trial_dir)
            orphans += 1
        else:
            rows += _align_results(trial_dir, trial)
            checkpoints += _restore_recorded_checkpoint(trial_dir, trial)
    if orphans or rows or checkpoints:
        logger.info("resume: %d trial folder(s) Tune never recorded removed, %d result file(s) "
                    "aligned with its last snapshot, %d pruned checkpoint(s) it resumes from "
                    "put back", orphans, rows, checkpoints)
    return {"orphans": orphans, "rows": rows, "checkpoints": checkpoints}


_LIMITER = "name:ConcurrencyLimiter"  # Tune's key of the concurrency cap in that snapshot


def _newest_search_state(run_dir: Location) -> tuple[Location, dict[str, Any]] | None:
    """Tune's newest search generator snapshot (the one it restores) and its state, unpickled:
    trusted, our own file."""
    import ray.cloudpickle as cloudpickle

    snapshots = sorted(run_dir.glob(SEARCH_STATE_GLOB), key=lambda p: p.name)
    if not snapshots:
        return None
    newest = snapshots[-1]  # Tune restores max(paths)
    return newest, cloudpickle.loads(newest.read_bytes())


def _save_search_state(path: Location, state: dict[str, Any]) -> None:
    import ray.cloudpickle as cloudpickle

    write_atomic(path, cloudpickle.dumps(state))


def set_trial_budget(run_dir: Location, total: int) -> int:
    """Tune's restored search generator told that the sweep now runs ``total`` trials (``resume
    --set budget.trials=N``); returns how many trials it had already started.

    Tune keeps the trial budget in its searcher snapshot, not in the spec it is restored with;
    the newest snapshot (the one Tune restores) is rewritten.
    """
    from hpsearch.trainables.errors import UserError

    found = _newest_search_state(run_dir)
    if found is None:
        raise UserError(f"{run_dir}: Tune's searcher snapshot ({SEARCH_STATE_GLOB}) is missing; "
                        "the trial budget cannot be changed")
    newest, state = found
    started = int(state["counter"])
    if total < started:
        raise UserError(f"budget.trials: {started} trials have already started, so the budget "
                        f"cannot be {total}; give at least {started}")
    state["total_samples"], state["finished"] = total, False
    _save_search_state(newest, state)
    return started


def set_concurrency(run_dir: Location, cap: int) -> int | None:
    """Tune's restored search generator told to run at most ``cap`` trials at once; returns the
    cap it had (``None``: no snapshot or no cap in it, nothing changed).

    Like the trial budget, Tune restores the cap from its searcher snapshot, whatever
    ``max_concurrent_trials`` the restored Tuner is given: without this, a resumed sweep would
    keep the share it was started with.
    """
    found = _newest_search_state(run_dir)
    if found is None or not isinstance(found[1].get(_LIMITER), dict):
        return None
    newest, state = found
    before = state[_LIMITER].get("max_concurrent")
    if before != cap:
        state[_LIMITER]["max_concurrent"] = cap
        _save_search_state(newest, state)
    return before

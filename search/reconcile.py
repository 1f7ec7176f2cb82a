"""Tune's record of a sweep, and a killed sweep's folder brought back in line with it.

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
- a newest snapshot cut off mid-write: removed with its session's searcher files, so Tune restores
  the one before.

The snapshot is the one truth: after :func:`rollback`, Ray's record and the trial folders agree,
and :func:`search.tracking.sync` makes MLflow agree with both.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from typing import Any

from search.storage import Location, RemotePath

__all__ = ["STATE_GLOB", "RecordedTrial", "TuneRecord", "read_record", "rollback"]

logger = logging.getLogger(__name__)

STATE_GLOB = "experiment_state-*.json"
_SESSION_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json",
                  "searcher-state-{}.pkl", "callback-states-{}.pkl")
TERMINAL = frozenset({"TERMINATED", "ERROR"})  # Tune's statuses of a trial that is over


@dataclass(frozen=True)
class RecordedTrial:
    """One trial as Tune's snapshot has it."""

    trial_id: str
    status: str  # Tune's: PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    dirname: str | None  # the trial's folder name under the sweep's folder
    epoch: int | None  # epoch of its last recorded result; None: no result recorded
    checkpoint_epoch: int | None  # epoch of the checkpoint Tune resumes it from; None: none
    config: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def over(self) -> bool:
        return self.status in TERMINAL

    @property
    def kept_epochs(self) -> int | None:
        """The epochs of ``result.json`` that stay: all Tune recorded for a trial that is over;
        for one Tune resumes, those up to its checkpoint (Tune restores ``result.json`` only
        with a checkpoint, and the trial reports every later epoch again)."""
        return self.epoch if self.over else self.checkpoint_epoch


@dataclass(frozen=True)
class TuneRecord:
    """Tune's newest readable experiment snapshot of a sweep."""

    file: str
    trials: dict[str, RecordedTrial]

    def by_dirname(self) -> dict[str, RecordedTrial]:
        return {t.dirname: t for t in self.trials.values() if t.dirname}

    @property
    def over(self) -> bool:
        """Every recorded trial has ended (the sweep is not running now, or between trials)."""
        return all(t.over for t in self.trials.values())


def _step(result: Any) -> int | None:
    if not isinstance(result, dict) or not result:
        return None
    step = result.get("epoch", result.get("training_iteration"))
    return int(step) if isinstance(step, int | float) else None


def _parse(text: str, name: str, trusted: bool) -> TuneRecord:
    """Tune's snapshot as a record. Raises ValueError when the file is cut off (not JSON).

    ``trusted``: unpickle each trial's checkpoint manager to learn the epoch Tune resumes it
    from. That runs code from the file, as ``Tuner.restore`` does with the same file: only for
    a resume, never for reading (report, sync), which takes the plain JSON parts only.
    """
    data = json.loads(text)
    if trusted:
        from ray.tune.utils.serialization import TuneFunctionDecoder

        def load_meta(raw: str) -> dict[str, Any]:
            return json.loads(raw, cls=TuneFunctionDecoder, allow_cloudpickle=True)
    else:
        load_meta = json.loads
    trials = {}
    for entry in data["trial_data"]:
        trial = json.loads(entry[0])
        meta = load_meta(entry[1])
        latest = getattr(meta.get("checkpoint_manager"), "latest_checkpoint_result", None)
        config = trial.get("config") if isinstance(trial.get("config"), dict) else {}
        trials[trial["trial_id"]] = RecordedTrial(
            trial["trial_id"], trial.get("status", "PENDING"), trial.get("relative_logdir"),
            _step(meta.get("last_result")), _step(getattr(latest, "metrics", None)), config)
    return TuneRecord(name, trials)


def read_record(run_dir: Location, *, drop_torn: bool = False,
                trusted: bool = False) -> TuneRecord | None:
    """Tune's newest readable snapshot under ``run_dir``; None when there is none.

    ``drop_torn``: a newer snapshot cut off mid-write (the driver was killed while writing it)
    is removed with its session's searcher files, so Tune's own restore does not trip on it.
    ``trusted``: see :func:`_parse`; without it, ``checkpoint_epoch`` is None.
    """
    for path in sorted(run_dir.glob(STATE_GLOB), key=lambda p: p.name, reverse=True):
        try:
            text = path.read_text()
            json.loads(text)
        except (OSError, ValueError):
            if not drop_torn:
                continue
            session = path.name.removeprefix("experiment_state-").removesuffix(".json")
            logger.warning("Tune's snapshot %s was cut off mid-write; resuming from the one "
                           "before it", path.name)
            for pattern in _SESSION_FILES:
                (run_dir / pattern.format(session)).unlink(missing_ok=True)
            continue
        try:
            return _parse(text, path.name, trusted)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            logger.warning("Tune's snapshot %s could not be read (%s); trying an older one",
                           path.name, str(err)[:200])
    return None


def _remove_tree(path: Location) -> None:
    if isinstance(path, RemotePath):
        path.fs.delete_dir(path.fs_path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _rows(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(line, row) pairs of a ``result.json``; a torn line is dropped."""
    out = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append((line, row))
    return out


def _epoch(row: dict[str, Any]) -> int:
    step = row.get("epoch", row.get("training_iteration", 0))
    return int(step) if isinstance(step, int | float) else 0


def _checkpoint_history(trial_dir: Location) -> list[dict[str, Any]]:
    """Every epoch's metrics from the trial's newest complete checkpoint (empty if none)."""
    from trainables.tune_adapter import TrialFolder, latest_checkpoint_state

    folder = TrialFolder(trial_dir.fs, trial_dir.fs_path) if isinstance(trial_dir, RemotePath) \
        else TrialFolder.local(trial_dir)
    state = latest_checkpoint_state(folder, None)
    return list(state.get("history", [])) if state else []


def _align_results(trial_dir: Location, trial: RecordedTrial) -> bool:
    """Cut or complete ``result.json`` to the epochs Tune recorded; whether it changed."""
    path = trial_dir / "result.json"
    try:
        text = path.read_text()
    except (OSError, FileNotFoundError):
        text = ""
    through = trial.kept_epochs
    kept: dict[int, str] = {}
    for line, row in _rows(text):
        epoch = _epoch(row)
        if through is not None and epoch <= through:
            kept.setdefault(epoch, line)
    if through is not None and max(kept, default=-1) < through:
        for row in _checkpoint_history(trial_dir):  # the copy to storage lagged the snapshot
            if _epoch(row) <= through:
                kept.setdefault(_epoch(row), json.dumps({**row, "trial_id": trial.trial_id}))
    new = "".join(f"{kept[e]}\n" for e in sorted(kept))
    if new == text:
        return False
    from search.storage import write_atomic

    write_atomic(path, new)
    return True


def rollback(run_dir: Location, record: TuneRecord) -> dict[str, int]:
    """Bring the sweep's folder in line with ``record`` (see the module docstring).

    Returns counts: ``orphans`` (trial folders removed) and ``rows`` (trials whose
    ``result.json`` was cut or completed).
    """
    known = record.by_dirname()
    orphans = rows = 0
    for trial_dir in run_dir.glob("trial_*"):
        if not trial_dir.is_dir():
            continue
        trial = known.get(trial_dir.name)
        if trial is None:
            _remove_tree(trial_dir)
            orphans += 1
        else:
            rows += _align_results(trial_dir, trial)
    if orphans or rows:
        logger.info("resume: %d trial folder(s) Tune never recorded removed, %d result file(s) "
                    "aligned with its last snapshot", orphans, rows)
    return {"orphans": orphans, "rows": rows}

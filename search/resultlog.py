"""A paused trial's ``result.json`` kept whole, and on storage, when Tune resumes it in the same
driver session.

Tune's JSON logger writes each trial's ``result.json`` in the driver's staging folder and copies
it to the storage path only with an experiment snapshot. When a paused trial starts again
(HyperBand pauses a rung's trials until their bracket reaches it), the logger first copies the
storage path's file back over the staging one, to restore it after a driver restart. Within one
session that copy can be older than the staging file, and the epochs in between would be lost
from Ray's record (seen: a trial whose ``result.json`` began at epoch 2).

A trial restarted without a checkpoint keeps its staging file, but the trial itself reads the
storage path's copy to learn which epochs it has already reported (``trainables.tune_adapter``
reports again those a killed driver never recorded). A stale copy there made it report them
twice (seen: HyperBand paused a resumed trial at its milestone right after it reported epoch 1
again; restarted, it found no epoch 1 on storage and reported it a third time).

:class:`KeepResultLog` runs before Tune's loggers (Tune appends its default callbacks after the
user's) and first copies the staging file to the storage path, so what the logger restores is
the whole file. After a driver restart the staging folder is new and empty, the callback does
nothing, and :mod:`search.reconcile` has already made the storage path's file agree with the
snapshot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback

from hpsearch.search.sweepdir import RESULT_FILE

__all__ = ["KeepResultLog"]

logger = logging.getLogger(__name__)


class KeepResultLog(Callback):
    """Copies a restarting trial's staged ``result.json`` to storage before Tune restores it
    and before the trial reads it."""

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        staged = Path(trial.local_path, RESULT_FILE)
        if not staged.is_file():  # a first start, or a new driver session: the storage file is
            return  # the record
        import pyarrow.fs

        try:
            pyarrow.fs.copy_files(staged.as_posix(),
                                  Path(trial.storage.trial_fs_path, RESULT_FILE).as_posix(),
                                  destination_filesystem=trial.storage.storage_filesystem)
        except Exception:  # noqa: BLE001 - storage down a moment: Tune's own copy stands
            logger.warning("could not copy %s to the storage path before the trial resumed",
                           staged, exc_info=True)

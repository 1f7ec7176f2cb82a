"""A sweep read from Ray's files: ``<storage>/<name>/``, each trial's ``result.json`` and
``params.json``, Tune's experiment state and ``hpsearch.json``, a local folder or a URI."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.search.operate import sweep_state
from hpsearch.search.report.assemble import Confusion, Trial, assemble, split_sizes
from hpsearch.search.report.data import SweepData, per_epoch
from hpsearch.search.report.lineage import copies_in_results
from hpsearch.search.report.saved_spec import objective, spec_facts, spec_or_none
from hpsearch.search.sweepdir import DRIVER_FILE, META_FILE, RESULT_FILE, read_final, read_json
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import FINAL_METRICS, Status, trial_status

if TYPE_CHECKING:
    from hpsearch.search.spec import SweepSpec
    from hpsearch.search.storage import RemotePath
    from hpsearch.search.tracking import TrialFiles

__all__ = ["from_ray_dir"]


def from_ray_dir(run_dir: str | os.PathLike[str] | RemotePath) -> SweepData:
    """A sweep from Tune's results dir ``<storage>/<name>/`` (its files only; no MLflow), a
    local folder or a URI (read through a temporary local copy without the checkpoints).

    Raises:
        UserError: ``run_dir`` holds no trials, or remote storage cannot be read.
    """
    from hpsearch.search.storage import local_copy, location, storage_error

    where = location(run_dir)
    if isinstance(where, Path):
        return _from_local_dir(where, str(where), where.name)
    try:
        if not (where / META_FILE).is_file() and not any(where.glob(f"*/{RESULT_FILE}")):
            raise UserError(f"report {where}: no sweep there (no {META_FILE}, no trial "
                            "results)")
        copy = local_copy(where)
    except (OSError, ValueError) as err:
        raise UserError(storage_error(where, err)) from None
    try:
        return _from_local_dir(copy, str(where), where.name)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _from_local_dir(run_dir: Path, shown: str, name: str) -> SweepData:
    from hpsearch.search.tracking import read_trial_dirs, tune_states

    meta_path = run_dir / META_FILE
    saved = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    spec = spec_or_none(saved.get("spec"), f"{run_dir.name}/{META_FILE}")
    states = tune_states(run_dir)
    trials = [_ray_trial(files, states) for files in read_trial_dirs(run_dir, states)]
    matrices = {t.trial_id: m for t, m in trials if m}
    driver = read_json(run_dir / DRIVER_FILE) or {}  # the host its (last) driver ran on
    meta = {"source": "ray", "run_dir": shown, "sweep_host": driver.get("host"),
            **_meta_from(saved, spec)}
    name = saved.get("name") or name
    state = sweep_state(driver, time.time()) if driver and not trials else None
    if state is not None and state.resumable:
        # killed or stopped before Tune copied any trial's result.json to the sweep's folder
        raise UserError(f"report {name}: no trial results in {shown} yet: the sweep is {state} "
                        f"and Tune had saved none there; `hpsearch resume {name}` recovers "
                        "them from the trials' checkpoints")
    data = assemble(name, spec, [t for t, _ in trials], meta,
                    objective(spec, saved.get("spec"), None), matrices.get)
    data.final = read_final(run_dir)
    return data


def _ray_trial(files: TrialFiles, states: Mapping[str, tuple[str | None, str | None]],
               ) -> tuple[Trial, Confusion | None]:
    """One trial folder (``result.json``, ``params.json``, ``error.txt``) and its test
    confusion matrix with the class names, if it has one."""
    from hpsearch.search.tracking import by_step, result_metrics, result_step

    rows = by_step(files.rows)  # a resumed trial may repeat an epoch
    trial_id = files.trial_id or files.dir.name.removeprefix("trial_")
    error = files.error
    if error is None and (files.dir / "error.pkl").is_file():
        error = "error.pkl (no error.txt)"
    status = trial_status(rows[-1].get("status") if rows else None,
                          states.get(trial_id, (None, None))[0], error).value
    metric_rows, finals, matrix = [], {}, None
    for r in rows:
        values = result_metrics(r)
        metric_rows.append({"epoch": float(result_step(r)),
                            "timestamp": float(r.get("timestamp", math.nan)),
                            **per_epoch(values)})
        finals.update({k: values[k] for k in FINAL_METRICS if k in values})
        if isinstance(r.get("test_confusion"), list) and r["test_confusion"]:
            matrix = (r["test_confusion"], _names(r.get("test_classes")))
    last = rows[-1] if rows else {}
    trial = Trial(trial_id=trial_id, config=files.config, rows=metric_rows, finals=finals,
                  status=status, error=error if status == Status.FAILED else None,
                  rejected_reason=last.get("rejected_reason")
                  if status == Status.REJECTED else None,
                  node=last.get("hostname"), sizes=split_sizes(last),
                  gpus=last.get("gpu_ids") or None, copies=copies_in_results(rows))
    return trial, matrix


def _names(classes: Any) -> list[str] | None:
    """Class names a trial recorded, if they are a list of strings."""
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        return classes
    return None


def _meta_from(saved: Mapping[str, Any], spec: SweepSpec | None) -> dict[str, Any]:
    meta = {k: saved.get(k) for k in ("git_commit", "created", "tracking_uri", "experiment",
                                      "spec_yaml")}
    return {**meta, **spec_facts(spec, saved.get("spec"))}

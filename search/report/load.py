"""A sweep read into :class:`~search.report.data.SweepData`, from whichever source holds it.

Ray's files (a results dir, local or a URI, or a sweep under the storage root):
:mod:`.ray_files`; MLflow (the sweep's parent run and its nested trial runs):
:mod:`.mlflow_runs`. Both read their trials into :class:`~.assemble.Trial` records that
:mod:`.assemble` turns into frames, so either source gives the same frames; :mod:`.saved_spec`
reads back the spec the sweep kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from hpsearch.search.report.data import SweepData
from hpsearch.search.report.mlflow_runs import find_experiment, from_mlflow, store_exists
from hpsearch.search.report.ray_files import from_ray_dir
from hpsearch.search.sweepdir import META_FILE, RESULT_FILE, STATE_GLOB, run_dir_for, sweep_names
from hpsearch.trainables.errors import UserError

__all__ = ["from_mlflow", "from_ray_dir", "load_trials"]


def load_trials(source: str, *, storage: str | None = None,
                tracking_uri: str | None = None) -> SweepData:
    """A sweep by name (under ``storage``), a Ray results dir, or an MLflow experiment name.

    Ray's files are read when ``source`` is a results dir or a sweep under ``storage``
    (default ``$HPSEARCH_STORAGE`` or ``runs``); otherwise MLflow at ``tracking_uri``
    (default ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``).

    Raises:
        UserError: None of these holds such a sweep.
    """
    from hpsearch.search.names import check_plain
    from hpsearch.search.storage import is_uri, location, storage_error
    from hpsearch.search.tracking import resolve_tracking_uri

    if is_uri(source):  # a sweep folder on remote storage, e.g. s3://bucket/runs/<name>
        return from_ray_dir(source)
    path = Path(source).expanduser()
    if path.is_dir() and _is_results_dir(path):
        return from_ray_dir(path)
    try:
        run_dir = run_dir_for(check_plain(source), storage)
    except ValueError:  # a path that is no results dir: only MLflow may know the name
        run_dir = None
    try:
        if run_dir is not None and (run_dir / META_FILE).is_file():
            return from_ray_dir(run_dir)
    except (OSError, ValueError) as err:  # remote storage: bad URI, no bucket, no credentials
        raise UserError(storage_error(run_dir.parent, err)) from None
    uri = resolve_tracking_uri(tracking_uri)
    if store_exists(uri) and find_experiment(source, uri) is not None:
        return from_mlflow(source, tracking_uri=uri)
    root = run_dir.parent if run_dir is not None else location(
        storage or os.environ.get("HPSEARCH_STORAGE") or "runs")
    sweeps = sweep_names(root)
    listed = f"; sweeps there: {', '.join(sweeps)}" if sweeps else ""
    raise UserError(f"report {source}: not a Ray results dir, not a sweep under {root}/"
                    f"{listed}, and no MLflow experiment '{source}' at {uri} (pass "
                    f"--storage or --tracking-uri)")


def _is_results_dir(path: Path) -> bool:
    return ((path / META_FILE).is_file() or any(path.glob(STATE_GLOB))
            or any(path.glob(f"*/{RESULT_FILE}")))

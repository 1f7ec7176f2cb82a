"""A sweep's folder, local or by URI: the names of its files, and what reads and writes them.

``<storage>/<name>/`` holds Tune's experiment state and one folder per trial, and hpsearch's own
small files beside them:

- :data:`META_FILE` ``hpsearch.json``: the spec, its fingerprint and where tracking goes; what
  ``resume``, ``sync`` and ``report`` start from;
- :data:`RUNS_FILE` ``mlflow_runs.json``: the run map, MLflow run ids per tracking URI;
- :data:`MARKER_FILE` ``mlflow_pending``: there while MLflow may lack results of the sweep;
- :data:`DRIVER_FILE` ``hpsearch-driver.state`` (JSON): the driver's heartbeat and progress
  (where it runs, its Ray job, counts, best, running trials), how it ended; what ``list`` and
  ``status`` read;
- :data:`STOP_FILE` ``hpsearch-stop.request`` (JSON): ``hpsearch stop`` asks the driver to stop;
- :data:`FINAL_FILE` ``final.json``: the sweep's final model, ``hpsearch finalize``'s record of
  the best trial retrained on train+val and tested once (what ``report`` shows apart);
- :data:`STATE_GLOB` ``experiment_state-<session>.json``: Tune's snapshot, read as a
  :class:`TuneRecord`;
- one folder per trial (:func:`trial_dirname`): :data:`RESULT_FILE` (a JSON line per result),
  :data:`PARAMS_FILE` (its config), :data:`ERROR_FILE` (why it failed) and its checkpoints,
  read as :class:`TrialFiles`.

A folder is a :class:`pathlib.Path` or a :class:`search.storage.RemotePath` alike.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.search.names import plain_name
from hpsearch.search.storage import Location, is_uri, location, storage_error, write_atomic
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import TuneStatus

__all__ = ["DRIVER_FILE", "ERROR_FILE", "FINAL_FILE", "HEARTBEAT_S", "MARKER_FILE", "META_FILE",
           "PARAMS_FILE", "RESULT_FILE", "RUNS_FILE", "SEARCH_STATE_GLOB", "SPEC_FILE",
           "STALE_AFTER_S", "STATE_GLOB", "STOP_FILE", "TRIAL_GLOB", "TUNE_OVER", "RecordedTrial",
           "TrialFiles", "TuneRecord", "by_step", "check_storage", "find_sweep", "has_marker",
           "last_line", "load_meta", "pending_reason", "read_driver", "read_final", "read_json",
           "read_meta", "read_record", "read_results", "read_run_map", "read_trial_dirs",
           "remove_marker", "result_lines", "result_step", "run_dir_for", "sweep_names",
           "touch_marker", "trial_dirname", "tune_states", "write_json", "write_meta",
           "write_run_map"]

logger = logging.getLogger(__name__)

# hpsearch's own files
META_FILE = "hpsearch.json"
RUNS_FILE = "mlflow_runs.json"
MARKER_FILE = "mlflow_pending"
SPEC_FILE = "spec.yaml"  # a spec kept in the folder by hand or by older versions
# Not *.json: Tune's restore copies every *.json/*.pkl of the folder to its staging dir and
# uploads them back with each snapshot, which would bring back a dead driver's copy.
DRIVER_FILE = "hpsearch-driver.state"
HEARTBEAT_S = 5.0  # the driver rewrites DRIVER_FILE this often
STALE_AFTER_S = 60.0  # a heartbeat older than this: the driver is gone (killed, machine down)
STOP_FILE = "hpsearch-stop.request"
FINAL_FILE = "final.json"  # written once the sweep is over, never while its driver runs
# Tune's files
STATE_GLOB = "experiment_state-*.json"
SEARCH_STATE_GLOB = "search_gen_state-*.json"  # Tune's search generator: its trial budget
_SESSION_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json",
                  "searcher-state-{}.pkl", "callback-states-{}.pkl")
TRIAL_GLOB = "trial_*"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"

TUNE_OVER = frozenset({TuneStatus.TERMINATED, TuneStatus.ERROR})  # Tune's: the trial is over
_LINE_MAX = 8000  # an error's last line becomes an MLflow tag: cut to MLflow's tag size


# --------------------------------------------------------------------------- the folder


def run_dir_for(name: str, storage: str | os.PathLike[str] | None) -> Location:
    """``<storage>/<name>``: an absolute local path (Tune needs one every node sees, e.g. a
    shared volume) or a URI such as ``s3://bucket/runs/<name>`` (see :mod:`search.storage`)."""
    root = storage or os.environ.get("HPSEARCH_STORAGE") or "runs"
    return location(root) / plain_name(name, "sweep name")


def trial_dirname(trial_id: str) -> str:
    """The folder name of a trial under the sweep's folder (matches :data:`TRIAL_GLOB`)."""
    return f"trial_{trial_id}"


def sweep_names(root: Location) -> list[str]:
    """The sweeps (folders with a :data:`META_FILE`) under a storage root, sorted."""
    return sorted(p.parent.name for p in root.glob(f"*/{META_FILE}")) if root.is_dir() else []


def check_storage(run_dir: Location) -> bool:
    """Before anything starts, and leaving nothing behind: the storage path opens and takes
    writes. Returns whether a sweep of this name already has its :data:`META_FILE` there."""
    try:
        if (run_dir / META_FILE).exists():
            return True
        if isinstance(run_dir, Path):
            existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
            if not os.access(existing, os.W_OK):
                raise PermissionError(f"{existing} is not writable")
            return False
        root = run_dir.parent
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".hpsearch-probe-{run_dir.name}"
        probe.write_text("ok")
        probe.unlink()
    except (OSError, ValueError) as err:  # pyarrow: unknown scheme, no bucket, no credentials
        raise UserError(storage_error(run_dir.parent, err)) from None
    return False


# --------------------------------------------------------------------------- hpsearch.json


def read_meta(run_dir: Location, name: str) -> dict[str, Any]:
    """The :data:`META_FILE` of the sweep in ``run_dir``, or a UserError naming the sweeps
    there are."""
    meta = run_dir / META_FILE
    try:
        if meta.is_file():
            return json.loads(meta.read_text())
        root = run_dir.parent
        found = sweep_names(root)
    except (OSError, ValueError) as err:  # pyarrow: unknown scheme, no bucket, no credentials
        raise UserError(storage_error(run_dir.parent, err)) from None
    raise UserError(f"no sweep named '{name}' under {root}/"
                    f"{'; found: ' + ', '.join(found) if found else ' (no sweeps there)'}")


def load_meta(name: str, storage: str | None = None) -> dict[str, Any]:
    """The :data:`META_FILE` of an existing sweep, or a UserError naming the sweeps there are."""
    return read_meta(run_dir_for(name, storage), name)


def find_sweep(name_or_path: str, storage: str | None = None) -> tuple[Location, dict[str, Any]]:
    """A sweep's folder and its :data:`META_FILE`, from its name (under the storage dir) or a
    path or URI of the folder; a UserError naming the sweeps there are when there is none."""
    given = location(name_or_path)
    if is_uri(name_or_path) or (given / META_FILE).is_file():
        return given, read_meta(given, given.name)
    return run_dir_for(name_or_path, storage), load_meta(name_or_path, storage)


def write_meta(run_dir: Location, meta: Mapping[str, Any]) -> None:
    """Write the sweep's :data:`META_FILE` (atomically)."""
    write_atomic(run_dir / META_FILE, json.dumps(meta, indent=2))


# --------------------------------------------------------------------------- small JSON files


def read_json(path: Location) -> dict[str, Any] | None:
    """A small JSON object file of the sweep (:data:`DRIVER_FILE`, :data:`STOP_FILE`); None
    when it is not there or not an object. Raises OSError when the storage cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Location, data: Mapping[str, Any]) -> None:
    """Write a small JSON object file of the sweep atomically."""
    write_atomic(path, json.dumps(data, indent=1, default=str))


def read_driver(run_dir: Location) -> dict[str, Any] | None:
    """The sweep's :data:`DRIVER_FILE`, or None (a sweep from before it existed)."""
    return read_json(run_dir / DRIVER_FILE)


def read_final(run_dir: Location) -> dict[str, Any] | None:
    """The sweep's :data:`FINAL_FILE`, or None when it has none or it cannot be read."""
    try:
        return read_json(run_dir / FINAL_FILE)
    except OSError:
        return None


# --------------------------------------------------------------------------- the run map


def read_run_map(run_dir: Location, tracking_uri: str) -> dict[str, Any]:
    """The run map's entry for one tracking URI (``experiment``, ``experiment_id``,
    ``parent_run_id``, ``trials``: trial id -> run id); empty when there is none."""
    try:
        data = json.loads((run_dir / RUNS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    entry = data.get(tracking_uri) if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) else {}


def write_run_map(run_dir: Location, tracking_uri: str, entry: Mapping[str, Any]) -> None:
    """Set the run map's entry for one tracking URI, keeping the others."""
    path = run_dir / RUNS_FILE
    try:
        data = json.loads(path.read_text())
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[tracking_uri] = dict(entry)
    write_atomic(path, json.dumps(data, indent=1))


# --------------------------------------------------------------------------- the pending marker


def touch_marker(run_dir: Location, reason: str) -> None:
    """Say (best effort) that MLflow may lack results of the sweep, and why."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MARKER_FILE).write_text(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {reason}\n"
            f"MLflow may lack results of this sweep; `hpsearch sync {run_dir}` replays them.\n")
    except OSError:
        pass


def has_marker(run_dir: Location) -> bool:
    """Whether the marker is there; True when the folder cannot be read now (assume the
    worst)."""
    try:
        return (run_dir / MARKER_FILE).exists()
    except OSError:
        return True


def pending_reason(run_dir: Location) -> str | None:
    """Why MLflow may lack results (the marker's own words), or None when there is no marker."""
    try:
        text = (run_dir / MARKER_FILE).read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"{MARKER_FILE} unreadable: {err}"
    first = text.splitlines()[0] if text.strip() else ""
    return first.partition(" ")[2].strip()[:200] or "reason not recorded"


def remove_marker(run_dir: Location) -> None:
    """Remove the marker if it is there. Raises OSError when storage cannot be reached."""
    (run_dir / MARKER_FILE).unlink(missing_ok=True)


# --------------------------------------------------------------------------- Tune's record


@dataclass(frozen=True)
class RecordedTrial:
    """One trial as Tune's snapshot has it."""

    trial_id: str
    status: str  # a TuneStatus: PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    dirname: str | None  # the trial's folder name under the sweep's folder
    epoch: int | None  # epoch of its last recorded result; None: no result recorded
    checkpoint_epoch: int | None  # epoch of the checkpoint Tune resumes it from; None: none
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    # that checkpoint's folder name (``checkpoint_000003``) in the trial's folder; None: none
    checkpoint_name: str | None = field(default=None, compare=False)

    @property
    def over(self) -> bool:
        return self.status in TUNE_OVER

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
        checkpoint = getattr(getattr(latest, "checkpoint", None), "path", None)
        trials[trial["trial_id"]] = RecordedTrial(
            trial["trial_id"], trial.get("status", TuneStatus.PENDING),
            trial.get("relative_logdir"), _step(meta.get("last_result")),
            _step(getattr(latest, "metrics", None)), config,
            str(checkpoint).rstrip("/").rsplit("/", 1)[-1] if checkpoint else None)
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


def tune_states(run_dir: Location) -> dict[str, tuple[str | None, str | None]]:
    """trial_id -> (Tune status, trial dir name) from Tune's newest readable snapshot."""
    record = read_record(run_dir)
    if record is None:
        return {}
    return {t.trial_id: (t.status, t.dirname) for t in record.trials.values()}


# --------------------------------------------------------------------------- trial folders


def result_step(result: Mapping[str, Any]) -> int:
    """A result's step: its ``epoch``, else Tune's ``training_iteration``, else 0."""
    step = result.get("epoch", result.get("training_iteration", 0))
    return int(step) if isinstance(step, numbers.Real) else 0


def result_lines(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(line, result) pairs of a ``result.json``'s text; a torn line (writer killed) is
    skipped."""
    out = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append((line, row))
    return out


def read_results(path: Location) -> list[dict[str, Any]]:
    """The results of a Tune ``result.json`` in file order; none when it cannot be read."""
    try:
        text = path.read_text()
    except OSError:
        return []
    return [row for _, row in result_lines(text)]


def by_step(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per step (the last one wins: a resumed trial may repeat an epoch), in order."""
    merged: dict[int, dict[str, Any]] = {}
    for row in rows:
        merged[result_step(row)] = row
    return [merged[s] for s in sorted(merged)]


def last_line(path: str | Path | None) -> str | None:
    """The last non-blank line of a text file (an error's message), cut to MLflow's tag size;
    None when there is no such file."""
    if not path:
        return None
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [ln for ln in lines if ln]
    return lines[-1][:_LINE_MAX] if lines else None


@dataclass
class TrialFiles:
    """What one trial folder of a Tune results dir holds (``sync`` and ``report`` read it)."""

    dir: Path
    trial_id: str | None  # from its results, else from Tune's experiment state
    config: dict[str, Any]  # params.json, else the config in its results
    rows: list[dict[str, Any]]  # result.json in file order (a resumed trial may repeat a step)
    error: str | None  # the last line of error.txt


def read_trial_dirs(run_dir: Path, states: Mapping[str, tuple[str | None, str | None]],
                    ) -> list[TrialFiles]:
    """Every trial folder under ``run_dir`` (one with ``params.json`` or ``result.json``);
    ``states`` is :func:`tune_states` of it."""
    by_dir = {d: t for t, (_, d) in states.items() if d}
    dirs = sorted({p.parent for p in run_dir.glob(f"*/{PARAMS_FILE}")}
                  | {p.parent for p in run_dir.glob(f"*/{RESULT_FILE}")})
    if states:  # a folder Tune never recorded (its driver was killed) is no trial of the sweep
        dirs = [d for d in dirs if d.name in by_dir]
    found = []
    for trial_dir in dirs:
        rows = read_results(trial_dir / RESULT_FILE)
        config = _read_json(trial_dir / PARAMS_FILE)
        if not isinstance(config, dict):
            config = next((r["config"] for r in rows if isinstance(r.get("config"), dict)), {})
        found.append(TrialFiles(
            dir=trial_dir, config=config, rows=rows, error=last_line(trial_dir / ERROR_FILE),
            trial_id=next((r["trial_id"] for r in rows if r.get("trial_id")),
                          by_dir.get(trial_dir.name))))
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

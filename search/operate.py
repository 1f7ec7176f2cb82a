"""Operating sweeps from any machine that sees their storage: ``hpsearch list``, ``status`` and
``stop``.

A sweep's state comes from its folder alone (:func:`sweep_state`): the driver file its driver
keeps fresh (:mod:`search.driver`), and for sweeps from before that file, Tune's record. No Ray
is needed, except to reach the Ray job API of a submitted sweep (its logs; ``stop --now``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpsearch.search.spec.errors import did_you_mean
from hpsearch.search.storage import Location, location, storage_error
from hpsearch.search.sweepdir import (
    HEARTBEAT_S,
    META_FILE,
    STALE_AFTER_S,
    STOP_FILE,
    read_driver,
    read_json,
    read_record,
    run_dir_for,
    sweep_names,
    write_json,
)
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.vocab import StopMode, SweepState

__all__ = ["SweepView", "job_api_error", "list_sweeps", "list_text", "status_text", "stop_sweep",
           "sweep_state", "view_sweep"]

_LOG_LINES = 5  # lines of a submitted sweep's Ray job log that `status` shows


def sweep_state(driver: dict[str, Any] | None, now: float, record_over: bool | None = None,
                ) -> SweepState:
    """A sweep's state from its driver file (``None``: a sweep from before the file existed,
    judged by whether Tune's record has every trial over)."""
    if driver is None:
        return SweepState.FINISHED if record_over else SweepState.INTERRUPTED
    state = driver.get("state")
    if state == SweepState.RUNNING:
        try:
            age = now - float(driver.get("heartbeat", 0))
        except (TypeError, ValueError):
            return SweepState.INTERRUPTED
        return SweepState.RUNNING if age < STALE_AFTER_S else SweepState.INTERRUPTED
    return SweepState(state) if state in tuple(SweepState) else SweepState.INTERRUPTED


@dataclass(frozen=True)
class SweepView:
    """One sweep as ``list`` shows it (``--json``: these fields)."""

    name: str
    state: str
    done: int | None
    total: int | None
    best: dict[str, Any] | None  # metric, value, trial_id, epoch
    started: float | None  # epoch seconds
    wall_s: float | None
    where: str  # "local HOST" or "ray job ID"
    run_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _root(storage: str | None) -> Location:
    return run_dir_for("x", storage).parent


def _where(driver: dict[str, Any] | None) -> str:
    if not driver:
        return "-"
    if driver.get("job_id"):
        return f"ray job {driver['job_id']}"
    return f"local {driver.get('host', '?')}"


def _started(driver: dict[str, Any] | None, meta: dict[str, Any]) -> float | None:
    if driver and isinstance(driver.get("started"), int | float):
        return float(driver["started"])
    try:
        return time.mktime(time.strptime(meta.get("created", ""), "%Y-%m-%dT%H:%M:%S%z"))
    except (TypeError, ValueError):
        return None


def _wall(driver: dict[str, Any] | None, state: SweepState, now: float) -> float | None:
    """Seconds the sweep has run, over every driver session (resumes included)."""
    if not driver or not isinstance(driver.get("run_s"), int | float):
        return None
    beat = driver.get("heartbeat")
    since = now - beat if state == SweepState.RUNNING and isinstance(beat, int | float) else 0
    return float(driver["run_s"]) + max(0.0, since)


def view_sweep(run_dir: Location, meta: dict[str, Any], now: float | None = None,
               driver: dict[str, Any] | None = None) -> SweepView:
    """A sweep's state, counts, best and times from its folder."""
    now = time.time() if now is None else now
    driver = driver if driver is not None else read_driver(run_dir)
    progress = (driver or {}).get("progress") or {}
    done, total = progress.get("done"), progress.get("total")
    record_over = None
    if driver is None:  # a sweep from before the driver file: Tune's record says what it can
        record = read_record(run_dir)
        record_over = record is not None and bool(record.trials) and record.over
        if record is not None:
            done = sum(1 for t in record.trials.values() if t.over)
            total = len(record.trials)
    state = sweep_state(driver, now, record_over)
    started = _started(driver, meta)
    wall = _wall(driver, state, now)
    return SweepView(name=str(meta.get("name", run_dir.name)), state=str(state), done=done,
                     total=total, best=progress.get("best"), started=started, wall_s=wall,
                     where=_where(driver), run_dir=str(run_dir))


def _readable(root: Location) -> list[str]:
    """The sweep names under a storage root; a UserError when the root cannot be read."""
    try:
        if isinstance(root, Path) and not root.is_dir():
            raise FileNotFoundError(f"no folder {root}")
        return sweep_names(root)
    except (OSError, ValueError) as err:
        raise UserError(storage_error(root, err)) from None


def list_sweeps(storage: str | None = None, now: float | None = None) -> list[SweepView]:
    """Every sweep in a storage (a folder or URI), by name."""
    root = _root(storage)
    views = []
    for name in _readable(root):
        run_dir = root / name
        try:
            meta = json.loads((run_dir / META_FILE).read_text())
            views.append(view_sweep(run_dir, meta if isinstance(meta, dict) else {}, now))
        except (OSError, ValueError) as err:
            raise UserError(storage_error(run_dir, err)) from None
    return views


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def _when(epoch_s: float | None) -> str:
    return "-" if epoch_s is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def _best(best: dict[str, Any] | None) -> str:
    if not best or not isinstance(best.get("value"), int | float):
        return "-"
    return f"{best.get('metric', '?')} {best['value']:.4f}"


def _trial(best: dict[str, Any] | None) -> str:
    if not best or not best.get("trial_id"):
        return ""
    epoch = f", epoch {best['epoch']}" if best.get("epoch") is not None else ""
    return f" (trial {best['trial_id']}{epoch})"


def list_text(views: list[SweepView], root: str) -> str:
    """``hpsearch list`` as a table."""
    if not views:
        return f"no sweeps under {root}"
    rows = [("NAME", "STATE", "TRIALS", "BEST", "STARTED", "WALL", "WHERE")]
    for v in views:
        trials = "-" if v.total is None else f"{v.done or 0}/{v.total}"
        rows.append((v.name, v.state, trials, _best(v.best), _when(v.started), _hms(v.wall_s),
                     v.where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def find_known(name: str, storage: str | None) -> tuple[Location, dict[str, Any]]:
    """A sweep's folder and meta by name; a one-line error listing the known ones otherwise."""
    root = _root(storage)
    run_dir = root / name
    try:
        if (run_dir / META_FILE).is_file():
            meta = json.loads((run_dir / META_FILE).read_text())
            return run_dir, meta if isinstance(meta, dict) else {}
    except (OSError, ValueError) as err:
        raise UserError(storage_error(root, err)) from None
    known = _readable(root)
    raise UserError(f"no sweep named '{name}' under {root}{did_you_mean(name, known)}; "
                    f"known: {', '.join(known) if known else 'none'}")


def _mlflow_link(driver: dict[str, Any] | None, meta: dict[str, Any], run_dir: Location,
                 name: str) -> str:
    from hpsearch.search.sweepdir import read_run_map

    uri = (driver or {}).get("tracking_uri") or meta.get("tracking_uri") or "-"
    experiment_id = read_run_map(run_dir, uri).get("experiment_id")
    if uri.startswith(("http://", "https://")) and experiment_id:
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"
    return f"{uri} (experiment '{meta.get('experiment') or name}'; open it: hpsearch ui {name})"


def job_api_error(address: str, err: BaseException) -> str:
    """The one line for a Ray job API that refused or could not be reached."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return (f"--address {address}: the Ray job API refused or could not be reached "
            f"({first[:300]}); is the cluster up, and RAY_AUTH_MODE=token with the cluster's "
            "RAY_AUTH_TOKEN set?")


def _job_address(command: str, name: str, driver: dict[str, Any], address: str | None,
                 ) -> tuple[str | None, Any]:
    """The job API to reach a submitted sweep's job at: ``--address``, checked to answer for
    the job (one line otherwise), or the address the sweep recorded; with the job's status
    when the check asked for it (None otherwise)."""
    if address is None:
        return driver.get("job_address"), None
    job_id = driver.get("job_id")
    if not job_id:
        raise UserError(f"{command} {name} --address: the sweep was not submitted as a Ray job "
                        f"(where: {_where(driver)}); --address is the job API of a submitted "
                        "sweep")
    try:
        from ray.job_submission import JobSubmissionClient

        status = JobSubmissionClient(address).get_job_status(job_id)
    except Exception as err:  # noqa: BLE001 - refused, auth, unknown job: one line
        raise UserError(job_api_error(address, err)) from None
    return address, status


def _job_lines(driver: dict[str, Any], address: str | None, status: Any = None) -> list[str]:
    """A submitted sweep's Ray job: its status (``status``, when already asked), dashboard and
    the tail of its log."""
    job_id = driver.get("job_id")
    if not job_id:
        return []
    lines = [f"Ray job: {job_id} | dashboard: {address or '-'} | full log: ray job logs "
             f"{job_id} --address {address or 'ADDRESS'}"]
    if address:
        try:
            from ray.job_submission import JobSubmissionClient

            client = JobSubmissionClient(address)
            status = status or client.get_job_status(job_id)
            tail = [ln for ln in client.get_job_logs(job_id).splitlines() if ln.strip()]
            lines.append(f"Ray job status: {status}; last lines of its log:")
            lines += [f"  {ln[:200]}" for ln in tail[-_LOG_LINES:]]
        except Exception as err:  # noqa: BLE001 - the job API is a plus; the storage is the record
            lines.append(f"Ray job API at {address} not reachable from here "
                         f"({str(err).splitlines()[0][:120] if str(err) else type(err).__name__}"
                         "; another address: --address)")
    return lines


def status_text(name: str, storage: str | None = None, now: float | None = None,
                address: str | None = None) -> str:
    """``hpsearch status NAME``: state, progress line, running trials, links; ``address``: the
    Ray job API to ask about a submitted sweep's job instead of the one it recorded."""
    run_dir, meta = find_known(name, storage)
    now = time.time() if now is None else now
    try:
        driver = read_driver(run_dir)
        view = view_sweep(run_dir, meta, now, driver)
    except OSError as err:
        raise UserError(storage_error(run_dir, err)) from None
    progress = (driver or {}).get("progress") or {}
    out = [f"sweep '{view.name}': {view.state} ({view.where}), started {_when(view.started)}, "
           f"wall {_hms(view.wall_s)}"]
    if progress.get("line") and view.state == SweepState.RUNNING:
        out.append(progress["line"])  # the driver's own progress line, as of its heartbeat
    elif view.total is not None:
        ended = ", ".join(f"{n} {k}" for k, n in (progress.get("ended") or {}).items())
        out.append(f"trials: {view.done}/{view.total} done{f' ({ended})' if ended else ''} | "
                   f"best {_best(view.best)}{_trial(view.best)}")
    running = progress.get("running") or []
    if running and view.state == SweepState.RUNNING:
        out.append("running: " + ", ".join(f"trial {r['trial_id']} epoch {r.get('epoch', 0)}"
                                           for r in running))
    if driver and view.state == SweepState.RUNNING:
        out.append(f"heartbeat {now - float(driver.get('heartbeat', now)):.0f}s ago "
                   f"(host {driver.get('host')}, pid {driver.get('pid')})")
    out.append(f"MLflow: {_mlflow_link(driver, meta, run_dir, view.name)}")
    out += _job_lines(driver or {}, *_job_address("status", name, driver or {}, address))
    out.append(f"folder: {run_dir}")
    if SweepState(view.state).resumable:
        out.append(f"continue it: hpsearch resume {view.name}")
    return "\n".join(out)


def follow_status(name: str, storage: str | None, echo: Callable[[str], None] = print,
                  every_s: float = HEARTBEAT_S, address: str | None = None) -> None:
    """``status --follow``: the status now, then each new progress line until the sweep is no
    longer running, then the status again."""
    first = status_text(name, storage, address=address)
    echo(first)
    if f": {SweepState.RUNNING} (" not in first.splitlines()[0]:
        return
    run_dir, _ = find_known(name, storage)
    last = first.splitlines()[1] if len(first.splitlines()) > 1 else None  # printed already
    while True:
        try:
            driver = read_driver(run_dir)
        except OSError as err:
            raise UserError(storage_error(run_dir, err)) from None
        if sweep_state(driver, time.time()) != SweepState.RUNNING:
            break
        line = ((driver or {}).get("progress") or {}).get("line")
        if line and line != last:
            echo(line)
            last = line
        time.sleep(every_s)
    echo(status_text(name, storage, address=address))


def stop_sweep(name: str, storage: str | None = None, *, now: bool = False,
               address: str | None = None, echo: Callable[[str], None] = print) -> StopMode:
    """Ask a running sweep to stop: gracefully (trials finish their epoch), or at once when
    ``now`` or when a stop was asked before. A submitted sweep's job is also stopped through
    the Ray job API when at once (it sends SIGINT: Tune saves its state); ``address``: that
    API's address instead of the one the sweep recorded."""
    run_dir, meta = find_known(name, storage)
    try:
        driver = read_driver(run_dir)
        view = view_sweep(run_dir, meta, None, driver)
        earlier = read_json(run_dir / STOP_FILE)
    except OSError as err:
        raise UserError(storage_error(run_dir, err)) from None
    if view.state != SweepState.RUNNING:
        hint = f"; `hpsearch resume {name}` continues it" if SweepState(view.state).resumable \
            else ""
        raise UserError(f"stop {name}: the sweep is not running (it is {view.state}){hint}")
    job_id = (driver or {}).get("job_id")
    address, _ = _job_address("stop", name, driver or {}, address)  # checked before any request
    mode = StopMode.NOW if now or earlier else StopMode.GRACEFUL
    try:
        write_json(run_dir / STOP_FILE, {"mode": str(mode), "requested": time.time(),
                                         "by": socket.gethostname()})
    except OSError as err:
        raise UserError(storage_error(run_dir, err)) from None
    if mode == StopMode.NOW and job_id and address:
        try:
            from ray.job_submission import JobSubmissionClient

            JobSubmissionClient(address).stop_job(job_id)
            echo(f"asked the Ray job API at {address} to stop job {job_id}")
        except Exception as err:  # noqa: BLE001 - the stop file alone stops it too
            echo(f"the Ray job API at {address} could not be reached ({str(err)[:120]}); the "
                 "driver reads the stop request from the storage instead")
    if mode == StopMode.GRACEFUL:
        echo(f"stopping '{name}' ({view.where}): running trials finish their current epoch "
             f"and checkpoint, then the sweep stops; `hpsearch stop {name}` again stops it at "
             "once")
    else:
        echo(f"stopping '{name}' ({view.where}) now: the epochs in progress are dropped, every "
             "finished one is kept")
    echo(f"continue it later: hpsearch resume {name}")
    return mode


def list_json(views: list[SweepView]) -> str:
    """``hpsearch list --json``."""
    return json.dumps([v.to_dict() for v in views], indent=1)


def storage_root(storage: str | None) -> str:
    """The storage root as the user reads it."""
    return str(location(str(_root(storage))))

"""The driver's side of operating a sweep: its heartbeat file, stop requests, its cluster share.

While a sweep runs, its driver keeps :data:`search.sweepdir.DRIVER_FILE` fresh (every
``HEARTBEAT_S`` seconds): where it runs (host, pid, Ray job), when it started, the progress
line's counts and best, the trials running now with their epoch. Any machine that sees the
storage derives the sweep's :class:`SweepState` from it (:mod:`search.operate`); a heartbeat
older than ``STALE_AFTER_S`` means the driver is gone.

``hpsearch stop`` writes :data:`search.sweepdir.STOP_FILE`; the driver polls it. A graceful stop
waits until every trial running at the request has reported one more epoch (each epoch reports
with a checkpoint), then ends Tune the way Ctrl-C does (Tune's SIGUSR1 handler: the experiment
state is saved, trials stay unfinished), so ``hpsearch resume`` continues them. ``now`` ends
Tune at once: the epoch in progress is lost, none that finished.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from hpsearch.search.storage import Location
from hpsearch.search.sweepdir import (
    DRIVER_FILE,
    HEARTBEAT_S,
    STALE_AFTER_S,
    STOP_FILE,
    read_json,
    write_json,
)
from hpsearch.trainables.vocab import StopMode, SweepState, TuneStatus

__all__ = ["JOB_ADDRESS_ENV", "JOB_ID_ENV", "JOB_METADATA_KEY", "SweepDriver", "fair_share",
           "job_env"]

_POLL_S = 1.0  # how often the stop file is read
# Set by `hpsearch submit` on the job: the job's id and the job API's address, so the driver
# records them and counts the other sweeps on the cluster.
JOB_ID_ENV = "HPSEARCH_JOB_ID"
JOB_ADDRESS_ENV = "HPSEARCH_JOB_ADDRESS"
JOB_METADATA_KEY = "hpsearch.sweep"  # a Ray job's metadata: the sweep it runs
_TRIM_S = 30.0  # how often the heartbeat hands the C heap's free pages back (trim_heap)


def job_env(job_id: str, address: str) -> dict[str, str]:
    """Environment for a submitted sweep's driver. ``ray job stop`` then sends SIGINT, which
    Tune answers by saving its state (a graceful interrupt), and waits for it."""
    return {JOB_ID_ENV: job_id, JOB_ADDRESS_ENV: address, "RAY_JOB_STOP_SIGNAL": "SIGINT",
            "RAY_JOB_STOP_WAIT_TIME_S": "60"}


def _cluster_id() -> str | None:
    import ray

    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 - an older Ray: no sharing by storage then
        return None


def _running_jobs(address: str) -> int:
    """hpsearch sweeps the Ray job API lists as pending or running (this one included)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    jobs = JobSubmissionClient(address).list_jobs()
    return sum(1 for j in jobs if JOB_METADATA_KEY in (j.metadata or {})
               and j.status in (JobStatus.PENDING, JobStatus.RUNNING))


def _running_here(root: Location, cluster: str | None, me: str) -> int:
    """Other sweeps under the storage ``root`` whose fresh driver file names this cluster."""
    if cluster is None:
        return 0
    count = 0
    for path in root.glob(f"*/{DRIVER_FILE}"):
        if path.parent.name == me:
            continue
        try:
            info = read_json(path)
        except OSError:
            continue
        if info and info.get("cluster") == cluster and info.get("state") == SweepState.RUNNING \
                and time.time() - float(info.get("heartbeat", 0)) < STALE_AFTER_S:
            count += 1
    return count


def fair_share(slots: int, run_dir: Location, *, shared: bool) -> tuple[int, str]:
    """This sweep's concurrency on a cluster other sweeps may use: ``slots`` (what the whole
    cluster fits) divided by the hpsearch sweeps running there, found through the Ray job API
    (submitted sweeps) and the driver files under the same storage. Returns (slots, why)."""
    if not shared:
        return slots, ""
    sweeps = 1 + _running_here(run_dir.parent, _cluster_id(), run_dir.name)
    address = os.environ.get(JOB_ADDRESS_ENV)
    if address:
        try:
            sweeps = max(sweeps, _running_jobs(address))
        except Exception:  # noqa: BLE001 - job API unreachable: the storage count stands
            pass
    if sweeps <= 1:
        return slots, ""
    share = max(1, slots // sweeps)
    return share, f"a fair share: {sweeps} sweeps on this cluster"


class SweepDriver(Callback):
    """Keeps the driver file fresh and acts on stop requests (see the module doc)."""

    def __init__(self, run_dir: Location, info: dict[str, Any], snapshot: Callable[[], dict],
                 echo: Callable[[str], None] = print) -> None:
        self.run_dir, self.snapshot, self.echo = run_dir, snapshot, echo
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                     "job_id": os.environ.get(JOB_ID_ENV),
                     "job_address": os.environ.get(JOB_ADDRESS_ENV),
                     "cluster": _cluster_id(), **info}
        self.request: str | None = None  # the StopMode asked for, seen by the poller
        self._acted: str | None = None  # the StopMode acted on
        self._interrupted = False  # Tune told to end: progress is frozen as it was then
        self._waiting: set[str] = set()  # trials to report one more epoch before the stop
        self._progress: dict[str, Any] = {}
        self._last_snapshot = 0.0
        self._ran_before, self._session = 0.0, time.time()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into its state
        return {"run_dir": self.run_dir, "info": self.info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread = None

    # ---- the file

    def start(self) -> None:
        """Clear an old stop request, write the driver file, start the heartbeat."""
        (self.run_dir / STOP_FILE).unlink(missing_ok=True)
        try:
            before = read_json(self.run_dir / DRIVER_FILE) or {}
        except OSError:
            before = {}
        if isinstance(before.get("started"), int | float):  # resumed: the sweep's first start
            self.info["started"] = before["started"]
            self.info["resumed"] = time.time()
        ran = before.get("run_s")
        self._ran_before = float(ran) if isinstance(ran, int | float) else 0.0
        self._session = time.time()
        self._write(SweepState.RUNNING)
        self._thread = threading.Thread(target=self._beat, name="hpsearch-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _write(self, state: SweepState, **extra: Any) -> None:
        with self._lock:
            now = time.time()
            data = {**self.info, "state": str(state), "heartbeat": now,
                    # seconds the sweep has run, over every driver session
                    "run_s": self._ran_before + now - self._session,
                    "progress": self._progress, **extra}
        try:
            write_json(self.run_dir / DRIVER_FILE, data)
        except OSError:
            pass  # storage down a moment: the next beat writes it

    def _beat(self) -> None:
        from hpsearch.search.preflight import trim_heap

        last_write = last_trim = 0.0
        while not self._done.wait(_POLL_S):
            try:
                asked = read_json(self.run_dir / STOP_FILE)
            except OSError:
                asked = None
            if asked and asked.get("mode") in tuple(StopMode):
                self.request = asked["mode"]
            if time.monotonic() - last_write >= HEARTBEAT_S:
                last_write = time.monotonic()
                self._write(SweepState.RUNNING)
            if time.monotonic() - last_trim >= _TRIM_S:
                last_trim = time.monotonic()
                trim_heap()

    def finish(self, state: SweepState, **extra: Any) -> None:
        """The driver's last word: how the sweep ended, with its final progress."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._refresh(force=True)
        self._write(state, ended=time.time(), **extra)
        try:
            (self.run_dir / STOP_FILE).unlink(missing_ok=True)  # answered
        except OSError:
            pass  # start() of the next driver removes it

    def stop_asked(self) -> bool:
        """Whether this sweep was told to stop (its stop file, read once more now)."""
        try:
            asked = read_json(self.run_dir / STOP_FILE)
        except OSError:
            asked = None
        return bool(self._acted or self._interrupted
                    or (asked and asked.get("mode") in tuple(StopMode)))

    @property
    def progress(self) -> dict[str, Any]:
        """The last progress snapshot (after a stop: as it was when Tune was told to end,
        before its clean-up ends the running trials' actors)."""
        with self._lock:
            return dict(self._progress)

    def _refresh(self, force: bool = False) -> None:
        if self._interrupted:
            return
        if force or time.monotonic() - self._last_snapshot >= _POLL_S:
            self._last_snapshot = time.monotonic()
            try:
                progress = self.snapshot()
            except Exception:  # noqa: BLE001 - a view only: never end a sweep over it
                return
            with self._lock:
                self._progress = progress

    # ---- Tune hooks (the driver's main thread)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._refresh()
        request = self.request
        if request is None or self._interrupted:
            return
        if request == StopMode.NOW:
            self._interrupt(StopMode.NOW)
            return
        if self._acted is None:  # graceful, first seen
            self._acted = StopMode.GRACEFUL
            self._waiting = {t.trial_id for t in trials if t.status == TuneStatus.RUNNING}
            self.echo(f"stop requested: {len(self._waiting)} running trial(s) finish their "
                      "current epoch, then the sweep stops; `hpsearch resume "
                      f"{self.run_dir.name}` continues it")
            self._maybe_interrupt()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._settled(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settled(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settled(trial)

    def _settled(self, trial: Any) -> None:
        if self._acted == StopMode.GRACEFUL and trial.trial_id in self._waiting:
            self._waiting.discard(trial.trial_id)
            self._maybe_interrupt()

    def _maybe_interrupt(self) -> None:
        if not self._waiting:
            self._interrupt(StopMode.GRACEFUL)

    def _interrupt(self, mode: StopMode) -> None:
        """End Tune's loop as Ctrl-C does: it saves its state and leaves trials unfinished."""
        if self._interrupted:
            return
        self._refresh(force=True)
        self._interrupted = True
        self.echo(f"stopping the sweep ({mode}): Tune saves its state")
        signal.raise_signal(getattr(signal, "SIGUSR1", signal.SIGINT))
        # Tune's handler put back the default SIGINT handler; `ray job stop` of this sweep
        # (stop --now) sends one SIGINT on top of the stop file: let it not cut the save short.
        signal.signal(signal.SIGINT, self._again)

    def _again(self, signum: int, frame: Any) -> None:
        self.echo("already stopping: Tune is saving its state (interrupt again to abort)")
        signal.signal(signal.SIGINT, signal.default_int_handler)


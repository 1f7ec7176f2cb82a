"""The tracker's one background thread: queued events become batched MLflow calls.

Events are ``(handler, *args)``; the thread calls ``handler(store, *args)`` in order. While
MLflow fails it keeps the backlog and retries every ``retry_interval`` seconds; an error that
will not go away drops the event and leaves the ``mlflow_pending`` marker for a ``sync``. Nothing
here ever raises into Tune.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hpsearch.search.storage import Location
from hpsearch.search.sweepdir import MARKER_FILE, remove_marker, touch_marker
from hpsearch.search.tracking.store import RUN_FINISHED, _Store, is_transient

__all__ = ["Writer"]

logger = logging.getLogger(__name__)

_THREAD = "hpsearch-mlflow"
_FLUSH, _CLOSE = object(), object()  # control events
_MAX_ATTEMPTS = 20  # a head event failing this often in a row is dropped


class Writer:
    """Delivers queued events to the store ``open_store()`` returns (opened on first use)."""

    def __init__(self, *, run_dir: Location, tracking_uri: str,
                 open_store: Callable[[], _Store], flush_interval: float,
                 retry_interval: float, close_timeout: float,
                 marker_preexisting: bool) -> None:
        self.run_dir, self.tracking_uri, self.open_store = run_dir, tracking_uri, open_store
        self.flush_interval, self.retry_interval = flush_interval, retry_interval
        self.close_timeout = close_timeout
        self.marker_preexisting = marker_preexisting  # an earlier session left a sync due
        self.queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.store: _Store | None = None
        self.warned = False
        self.degraded = False  # MLflow is failing now: the backlog waits for a retry
        self.lost = False  # something was dropped: only a sync can bring it back
        self.progress = time.monotonic()  # when an event was last delivered
        self.thread = threading.Thread(target=self._loop, name=_THREAD, daemon=True)

    def start(self) -> None:
        _quiet_retry_warnings()
        self.thread.start()

    def put(self, event: tuple[Any, ...]) -> None:
        self.queue.put(event)

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued so far reached MLflow; False if it could not (yet)."""
        if not self.thread.is_alive():
            return not self.degraded
        done = threading.Event()
        self.queue.put((_FLUSH, done))
        done.wait(timeout)
        return done.is_set() and not self.degraded

    def close(self, timeout: float) -> bool:
        """Drain the queue (retrying up to ``timeout``), end the parent run, stop the thread."""
        self.queue.put((_CLOSE, time.monotonic() + timeout))
        # A writer that is behind but delivering (a long sweep on a slow store) is waited for;
        # one stuck in a call gets the timeout + 30 s (one in-flight call) from its last delivery.
        self.progress = max(self.progress, time.monotonic())
        while self.thread.is_alive() and time.monotonic() - self.progress < timeout + 30:
            self.thread.join(1.0)
        if self.thread.is_alive():
            touch_marker(self.run_dir, "the MLflow writer made no progress for "
                         f"{timeout + 30:.0f} s at the end of the sweep")
            return False
        return not self.lost and not self.degraded

    # ---- the thread

    def _loop(self) -> None:
        backlog: deque[tuple[Any, ...]] = deque()
        waiters: list[threading.Event] = []
        deadline: float | None = None
        last_try = last_flush = 0.0
        attempts = 0
        while True:
            wait = 0.05 if deadline else (self.retry_interval if self.degraded
                                          else self.flush_interval)
            for event in self._take(wait):
                if event[0] is _FLUSH:
                    waiters.append(event[1])
                elif event[0] is _CLOSE:
                    deadline = event[1]
                else:
                    backlog.append(event)
            now = time.monotonic()
            if not self.degraded or deadline or now - last_try >= self.retry_interval:
                last_try = now
                # Metrics wait up to flush_interval, so one log_batch carries many results.
                force = bool(waiters) or deadline is not None \
                    or now - last_flush >= self.flush_interval
                attempts = self._drain(backlog, attempts, flush=force)
                if force and not self.degraded:
                    last_flush = now
            for done in waiters:
                done.set()
            waiters.clear()
            if deadline is not None:
                if not self.degraded:
                    self._finish()
                    return
                if time.monotonic() >= deadline:
                    self._give_up(backlog)
                    return
                time.sleep(min(self.retry_interval, max(0.0, deadline - time.monotonic()), 2.0))

    def _take(self, wait: float) -> list[tuple[Any, ...]]:
        """Every queued event, waiting up to ``wait`` seconds for the first."""
        try:
            events = [self.queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self.queue.get_nowait())
            except queue.Empty:
                return events

    def _drain(self, backlog: deque[tuple[Any, ...]], attempts: int, flush: bool) -> int:
        """Handle events in order (then send buffers if ``flush``); stop at a transient error.

        Returns how often the head event has failed in a row: after 20 it is dropped, so one
        poisoned event cannot hold back the rest forever.
        """
        was_degraded = self.degraded
        try:
            store = self.store = self.open_store()
            while backlog:
                try:
                    handler, *args = backlog[0]
                    handler(store, *args)
                except Exception as err:  # noqa: BLE001 - MLflow must never fail the sweep
                    if is_transient(err) and attempts < _MAX_ATTEMPTS:
                        self._failed(err, transient=True)
                        return attempts + 1
                    self._failed(err, transient=False)
                backlog.popleft()
                self.progress = time.monotonic()
                attempts = 0
            for run in store.runs() if flush else ():
                try:
                    store.flush(run)
                except Exception as err:  # noqa: BLE001
                    if is_transient(err):
                        self._failed(err, transient=True)
                        return attempts
                    run.drop_pending()
                    self._failed(err, transient=False)
            if flush:
                store.save_map_if_due(soon=True)
        except Exception as err:  # noqa: BLE001 - e.g. the store could not even be opened
            self._failed(err, transient=is_transient(err))
            return attempts + 1
        self.degraded = False
        if was_degraded:
            logger.warning("MLflow reachable again: tracking caught up with the sweep")
        return attempts

    def _failed(self, err: BaseException, *, transient: bool) -> None:
        from mlflow.exceptions import MlflowException

        self.degraded = self.degraded or transient
        self.lost = self.lost or not transient
        if self.store is not None and not transient:
            self.store.lossy = True
        touch_marker(self.run_dir, f"MLflow error: {type(err).__name__}: {err}"[:500])
        if not isinstance(err, (MlflowException, OSError)):  # a bug here, not an outage
            logger.warning("MLflow tracking error (event dropped)", exc_info=err)
            return
        if self.warned:
            logger.debug("MLflow error (%s): %s", "will retry" if transient else "dropped", err)
            return
        self.warned = True
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        hint = " (is this host in the server's --allowed-hosts?)" if "403" in first else ""
        logger.warning("MLflow logging to %s failed: %s%s. The sweep goes on; Ray keeps every "
                       "result in the trial dirs, and `hpsearch sync %s` catches MLflow up.",
                       self.tracking_uri, first, hint, self.run_dir)

    def _finish(self) -> None:
        store = self.store
        try:
            if store is not None:
                store.save_map_if_due()
            if store is not None and store.parent is not None:
                store.client.set_terminated(store.parent.run_id, status=RUN_FINISHED)
        except Exception as err:  # noqa: BLE001
            self._failed(err, transient=False)
        if not self.lost and not self.marker_preexisting:
            try:
                remove_marker(self.run_dir)
            except OSError as err:  # remote storage unreachable: the marker only asks a sync
                logger.warning("could not remove %s: %s", self.run_dir / MARKER_FILE, err)

    def _give_up(self, backlog: deque[tuple[Any, ...]]) -> None:
        self.lost = True
        logger.warning("MLflow still unreachable after %.0f s: %d event(s) not logged; "
                       "`hpsearch sync %s` replays them from the trial dirs.",
                       self.close_timeout, len(backlog), self.run_dir)
        touch_marker(self.run_dir, f"{len(backlog)} event(s) not delivered")


class _NotFromWriter(logging.Filter):
    """Drops urllib3's warning per HTTP retry when it comes from the writer thread: during an
    outage that is a line every few seconds, and the tracker already warned once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return threading.current_thread().name != _THREAD


def _quiet_retry_warnings() -> None:
    pool = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _NotFromWriter) for f in pool.filters):
        pool.addFilter(_NotFromWriter())

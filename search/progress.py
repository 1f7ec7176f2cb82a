"""A live progress view for a sweep: one status line at most every few seconds, and a summary.

Counts and the best value come from the trials list Tune passes to every hook, so after
``hpsearch resume`` the trials that ended before the interruption count as done (with how they
ended) and the best so far includes their results.

The line a trial's end triggers waits for the trial that takes its slot: printed at the very
moment one ends, before Tune starts the next, it would show a busy 2-slot sweep with "1
running". A searcher under a concurrency limit (Optuna's) makes that trial only once the slot
is free, so the line waits while the budget has trials left to start, at most a few seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from hpsearch.search.console import failure_line
from hpsearch.trainables.vocab import (
    ENDED_WITH_SWEEP,
    NOT_STARTED,
    OWN_ENDS,
    STATUS_ORDER,
    Status,
    TuneStatus,
)

__all__ = ["ProgressPrinter", "status_word"]

# The ways to end other than completed, in the order the line counts them.
_DETAIL = (*(s for s in STATUS_ORDER if s.final and s != Status.COMPLETED), ENDED_WITH_SWEEP,
           NOT_STARTED)
_STOPPED = "stopped"  # the word for stopped_early: "3 stopped" reads better on a count
_REFILL_S = 5.0  # longest wait after a trial's end for the next to start before printing
_LOOK_S = 0.05  # Tune's steps come faster: a look at every trial at most this often


def status_word(status: str) -> str:
    """A status as the progress line and the sweep's summary print it."""
    return _STOPPED if status == Status.STOPPED_EARLY else str(status)


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ended(last_status: str) -> str:
    """How a trial Tune ended (not errored) finished, from its own last reported ``status``:
    still "running" means the scheduler stopped it early."""
    if last_status == Status.RUNNING:
        return Status.STOPPED_EARLY
    return last_status or Status.COMPLETED


class ProgressPrinter(Callback):
    """Prints ``[elapsed] trials: R running, D/N done (S stopped ...) | best ... | ETA``, and one
    line per trial failure (see :mod:`search.console`)."""

    def __init__(self, total: int, metric: str, mode: str, every_s: float = 10.0,
                 echo: Callable[[str], None] = print) -> None:
        self.total, self.metric, self.mode, self.every_s = total, metric, mode, every_s
        self.echo = echo
        self._start = time.monotonic()
        self._last = 0.0
        self._trials: list[Trial] = []  # Tune's own list, refreshed by every hook
        self._done_before: int | None = None  # over before this process: not in the ETA's rate
        self._ends: dict[str, str] = {}  # trial id -> how it ended, seen in this process
        self._last_status: dict[str, str] = {}
        self._best_seen: dict[str, tuple[float, int]] = {}  # trial id -> (best value, its epoch)
        self._started: set[str] = set()  # on_trial_start comes before Tune says RUNNING
        self._due: tuple[float, int] | None = None  # an end's line: (since, running before it)
        self._done = 0  # trials over, as of the last end seen
        self._looked = 0.0  # when a step last looked whether an end's line is due
        self._epochs: dict[str, int] = {}  # trial id -> epoch of its last result seen here
        # The best so far, kept up with each result: one scan of Tune's list per process (the
        # values from before a resume), not one per line (thousands of trials)
        self._top: tuple[float, str, int | None] | None = None
        self._scanned = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["echo"] = None  # print is restored on unpickle; a custom echo is not needed then
        state["_trials"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_epochs", {})
        self.__dict__.setdefault("_done", 0)
        self.__dict__.setdefault("_looked", 0.0)
        self.echo = self.echo or print
        self._start = time.monotonic()
        self._top, self._scanned = None, False

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def _see(self, trials: list[Trial]) -> None:
        self._trials = trials
        if self._done_before is None and trials:
            self._done_before = sum(1 for t in trials if self._how_ended(t))

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._see(trials)
        now = time.monotonic()
        if self._due is not None and now - self._looked >= _LOOK_S:  # a scan of every trial
            self._looked = now
            if now - self._due[0] >= _REFILL_S or not self._more_to_start():
                self._print_due()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._see(trials)
        self._started.add(trial.trial_id)
        if self._due is not None and (self.running() >= self._due[1]
                                      or not self._more_to_start()):
            self._print_due()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        # Tune updates trial.last_result and trial.metric_analysis after this hook: use result.
        self._see(trials)
        status = str(result.get("status", ""))
        self._last_status[trial.trial_id] = status
        self._epochs[trial.trial_id] = int(result.get("epoch", 0) or 0)
        value, seen = result.get(self.metric), self._best_seen.get(trial.trial_id)
        if status != Status.REJECTED and _finite(value) and (
                seen is None or self._better(float(value), seen[0])):
            self._best_seen[trial.trial_id] = found = (float(value), int(result.get("epoch", 0)))
            if self._scanned and (self._top is None or self._better(found[0], self._top[0])):
                self._top = (found[0], trial.trial_id, found[1])
        elif status == Status.REJECTED and self._top is not None \
                and self._top[1] == trial.trial_id:
            self._scanned = False  # the best trial is out: look again
        self._maybe_print()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._see(trials)
        self._started.discard(trial.trial_id)  # pending again until Tune restarts it
        self.echo(failure_line(trial, retrying=True))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Called while the trial is still RUNNING in Tune's list: remember that it is over.
        self._see(trials)
        self._end(trial, _ended(self._status_of(trial)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._see(trials)
        self.echo(failure_line(trial, retrying=False))
        self._end(trial, Status.FAILED)

    def _end(self, trial: Any, how: str) -> None:
        before = self.running()
        self._ends[trial.trial_id] = how
        self._done = done = sum(1 for t in self._trials if self._how_ended(t))
        if done >= self.total:
            self._print_due()
        elif self._due is None:
            self._due = (time.monotonic(), before)

    def _more_to_start(self) -> bool:
        """A trial will take an ended one's slot: one waits to start (Tune has it PENDING), or
        the budget has trials not yet made (a searcher under a concurrency limit makes the next
        once a slot is free)."""
        return self._done + self.running() < self.total or any(
            t.status == TuneStatus.PENDING and t.trial_id not in self._started
            for t in self._trials)

    def _print_due(self) -> None:
        self._due = None
        self._maybe_print(force=True)

    def running(self) -> int:
        """Trials running now: started and not ended."""
        return sum(1 for t in self._trials if t.trial_id not in self._ends and (
            t.status == TuneStatus.RUNNING
            or (t.trial_id in self._started and t.status == TuneStatus.PENDING)))

    def _status_of(self, trial: Trial) -> str:
        """The trial's own last reported status (completed, running, diverged, rejected)."""
        if trial.trial_id in self._last_status:
            return self._last_status[trial.trial_id]
        # last_result of a trial that never reported would wait on its actor: ask first.
        return str(trial.last_result.get("status", "")) if trial.has_reported_at_least_once \
            else ""

    def _how_ended(self, trial: Trial) -> str | None:
        """A final :class:`Status`, or None while the trial is not over."""
        if trial.trial_id in self._ends:
            return self._ends[trial.trial_id]
        if trial.status == TuneStatus.ERROR:
            return Status.FAILED
        if trial.status == TuneStatus.TERMINATED:
            last = self._status_of(trial)
            if last in OWN_ENDS:
                return last  # its own end (HyperBand may hold a completed one at a milestone)
            if trial.trial_id in self._started or trial.trial_id in self._epochs:
                # it ran in this process and Tune ended it without the trial-complete hook:
                # the sweep's end (target, plateau, time limit) cut it
                return ENDED_WITH_SWEEP
            return _ended(last) if last else NOT_STARTED  # ended before a resume, or waiting
        return None

    def _trial_best(self, trial: Trial) -> tuple[float, int | None] | None:
        """The trial's best value and its epoch (None when only Tune's summary of results from
        before a resume knows the value), or None if it has no usable value."""
        seen = self._best_seen.get(trial.trial_id)
        if self._status_of(trial) == Status.REJECTED:
            return None
        value = trial.metric_analysis.get(self.metric, {}).get(self.mode)
        if not _finite(value) or (seen is not None and not self._better(value, seen[0])):
            return seen
        last = trial.last_result if trial.has_reported_at_least_once else {}
        return float(value), (int(last.get("epoch", 0)) if last.get(self.metric) == value
                              else None)

    def _best(self) -> tuple[float, str, int | None] | None:
        if self._scanned:
            return self._top
        best: tuple[float, str, int | None] | None = None
        for trial in self._trials:
            found = self._trial_best(trial)
            if found and (best is None or self._better(found[0], best[0])):
                best = (found[0], trial.trial_id, found[1])
        if self._trials:  # before the first hook there is nothing to scan yet
            self._top, self._scanned = best, True
        return best

    def snapshot(self) -> dict[str, Any]:
        """What the line shows, as data (``hpsearch status`` reads it from the driver file):
        ``done``, ``total``, ``ended`` (status word -> count), ``best``, ``running`` trials
        with their last epoch, and ``line`` itself."""
        ends = [how for how in map(self._how_ended, self._trials) if how]
        best = self._best()
        running = []
        for t in self._trials:
            if t.status == TuneStatus.RUNNING and t.trial_id not in self._ends:
                last = t.last_result if t.has_reported_at_least_once else {}
                epoch = max(self._epochs.get(t.trial_id, 0), int(last.get("epoch", 0) or 0))
                running.append({"trial_id": t.trial_id, "epoch": epoch})
        return {"done": len(ends), "total": self.total, "trials": len(self._trials),
                "line": self.line(),
                "ended": {status_word(k): ends.count(k) for k in (Status.COMPLETED, *_DETAIL)
                          if k in ends},
                "best": None if best is None else {"metric": self.metric, "value": best[0],
                                                   "trial_id": best[1], "epoch": best[2]},
                "running": running}

    def line(self) -> str:
        """The current status line."""
        elapsed = time.monotonic() - self._start
        ends = [how for how in map(self._how_ended, self._trials) if how]
        running = self.running()
        done = len(ends)
        detail = ", ".join(f"{ends.count(k)} {status_word(k)}" for k in _DETAIL if k in ends)
        best = self._best()
        shown = "best: -" if best is None else (
            f"best {self.metric} {best[0]:.4f} (trial {best[1]}"
            f"{'' if best[2] is None else f', epoch {best[2]}'})")
        eta = ""
        done_here = done - (self._done_before or 0)
        if done_here > 0 and done < self.total:
            eta = f" | ETA ~{_hms(elapsed / done_here * (self.total - done))}"
        return (f"[{_hms(elapsed)}] trials: {running} running, {done}/{self.total} "
                f"done{f' ({detail})' if detail else ''} | {shown}{eta}")

    def _maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.echo(self.line())

"""A live progress view for a sweep: one status line at most every few seconds, and a summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

__all__ = ["ProgressPrinter"]


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressPrinter(Callback):
    """Prints ``[elapsed] trials: R running, D done (S stopped early ...) | best ... | ETA``."""

    def __init__(self, total: int, metric: str, mode: str, every_s: float = 10.0,
                 echo: Callable[[str], None] = print) -> None:
        self.total, self.metric, self.mode, self.every_s = total, metric, mode, every_s
        self.echo = echo
        self._start = time.monotonic()
        self._last = 0.0
        self._best: tuple[float, str, int] | None = None
        self._ends: dict[str, str] = {}
        self._last_status: dict[str, str] = {}
        self._running: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["echo"] = None  # print is restored on unpickle; a custom echo is not needed then
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.echo = self.echo or print
        self._start = time.monotonic()

    def _better(self, value: float) -> bool:
        if self._best is None:
            return True
        return value > self._best[0] if self.mode == "max" else value < self._best[0]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._running.add(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._last_status[trial.trial_id] = str(result.get("status", ""))
        value = result.get(self.metric)
        if isinstance(value, int | float) and result.get("status") != "rejected" \
                and value == value and self._better(float(value)):
            self._best = (float(value), trial.trial_id, int(result.get("epoch", 0)))
        self._maybe_print()

    def _end(self, trial: Any, how: str) -> None:
        self._running.discard(trial.trial_id)
        self._ends[trial.trial_id] = how
        self._maybe_print(force=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        status = self._last_status.get(trial.trial_id, "")
        self._end(trial, "stopped" if status == "running" else status or "completed")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "failed")

    def line(self) -> str:
        """The current status line."""
        elapsed = time.monotonic() - self._start
        done = len(self._ends)
        counts = {k: sum(1 for v in self._ends.values() if v == k)
                  for k in ("stopped", "diverged", "rejected", "failed")}
        detail = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        best = (f"best {self.metric} {self._best[0]:.4f} (trial {self._best[1]}, "
                f"epoch {self._best[2]})" if self._best else "best: -")
        eta = ""
        if 0 < done < self.total:
            eta = f" | ETA ~{_hms(elapsed / done * (self.total - done))}"
        return (f"[{_hms(elapsed)}] trials: {len(self._running)} running, {done}/{self.total} "
                f"done{f' ({detail})' if detail else ''} | {best}{eta}")

    def _maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.echo(self.line())

"""What the driver's console shows of its libraries: one line per trial failure instead of
Tune's traceback, and none of the start-up notices that ask nothing of the user."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import Any

__all__ = ["failure_line", "quiet_start_up_notices", "quiet_trial_errors"]

# Ray 2.60's TuneController._trial_task_failure logs every trial failure to this logger with
# the whole traceback (30 lines for a killed worker); Trial.handle_error writes the same error
# to the trial's error.txt, which is where the full text belongs.
_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"
_FAILED = "Trial task failed for trial "


class _TrialErrorFilter(logging.Filter):
    """Drops Tune's traceback per trial failure, keeping its exception for the one line."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: dict[str, BaseException] = {}  # Tune's trial name -> its latest error

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_FAILED) or not record.exc_info:
            return True
        self.errors[message.removeprefix(_FAILED)] = record.exc_info[1]
        return False


_FILTER = _TrialErrorFilter()


class _NoticeFilter(logging.Filter):
    """Drops the records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


# Logged by the libraries as a command starts, each once, asking nothing of the user: Ray's
# note that the local cluster it starts uses token auth (its default, kept;
# RAY_AUTH_MODE=disabled opts out; its warning that a cluster runs *without* it still shows),
# Optuna's line for a new in-memory study, and MLflow's as it creates a new SQLite store's
# tables. Filters on these loggers themselves: the libraries' own logging set-up leaves them.
_NOTICES = {
    "ray._private.authentication.authentication_token_setup": _NoticeFilter(
        ("Token authentication is enabled",)),
    "optuna.storages._in_memory": _NoticeFilter(("A new study created",)),
    "mlflow.store.db.utils": _NoticeFilter(("Creating initial MLflow database tables",
                                            "Updating database tables")),
}


def quiet_start_up_notices() -> None:
    """Leave out the libraries' start-up notices (:data:`_NOTICES`); every other line they
    log still shows (idempotent)."""
    for name, notice in _NOTICES.items():
        logger = logging.getLogger(name)
        if notice not in logger.filters:
            logger.addFilter(notice)


def quiet_trial_errors() -> None:
    """Replace Tune's traceback per trial failure by the :func:`failure_line` that
    :class:`search.progress.ProgressPrinter` prints; call before ``Tuner.fit()`` (idempotent)."""
    logger = logging.getLogger(_CONTROLLER_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def _why(error: BaseException) -> str:
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(error, RayActorError):
        return f"worker died: {type(error).__name__}"
    cause = error.cause if isinstance(error, RayTaskError) else error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0][:200]}" if text else type(cause).__name__


def failure_line(trial: Any, retrying: bool) -> str:
    """``trial <id> failed (<why>); retrying from its checkpoint (1/2)``, or, when Tune gives
    up on it, where its full error is."""
    error = _FILTER.errors.pop(str(trial), None)
    head = f"trial {trial.trial_id} failed" + (f" ({_why(error)})" if error else "")
    failures, most = trial.num_failures, trial.max_failures
    if retrying:
        start = "its checkpoint" if trial.checkpoint else "the start"
        return f"{head}; retrying from {start} ({failures}/{most if most >= 0 else 'unlimited'})"
    attempts = f"{failures} attempt{'s' if failures != 1 else ''}"
    return f"{head}; gave up after {attempts}; full error in {_error_file(trial)}"


def _error_file(trial: Any) -> str:
    try:  # the trial folder's name: the sweep's folder is in the header line
        return f"{PurePosixPath(trial.path).name}/error.txt"
    except (AttributeError, RuntimeError):  # no storage or folder yet: failed before it started
        return "its error.txt"

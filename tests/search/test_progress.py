"""The sweep's console: progress counts that survive a resume, one line per trial failure.

Unit tests drive :class:`ProgressPrinter` with real Tune ``Trial`` objects, restored from Tune's
own JSON state the way ``Tuner.restore`` does (no Ray runtime); the integration test runs a real
Tune experiment whose worker SIGKILLs itself.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray.tune.experiment import Trial

from hpsearch.search.console import quiet_trial_errors
from hpsearch.search.progress import ProgressPrinter


def _trial(trial_id: str, results: list[dict[str, Any]], status: str) -> Trial:
    trial = Trial("train", stub=True, trial_id=trial_id, placement_group_factory={"CPU": 1},
                  max_failures=2)
    trial.create_placement_group_factory()
    for i, result in enumerate(results, start=1):
        trial.update_last_result({**result, "training_iteration": i})
    trial.set_status(status)
    return trial


def _restored(trial: Trial) -> Trial:
    """The trial as ``Tuner.restore`` rebuilds it from the experiment state."""
    state, run_metadata = trial.get_json_state()
    restored = Trial.from_json_state(state, stub=True)
    restored.restore_run_metadata(run_metadata)
    return restored


def _epochs(*values: float, last: str = "completed") -> list[dict[str, Any]]:
    return [{"val_top1": v, "epoch": e, "status": last if e == len(values) else "running"}
            for e, v in enumerate(values, start=1)]


@pytest.fixture
def resumed() -> list[Trial]:
    """Six trials of a sweep interrupted with four over: one of each way to end, two to go."""
    before = [
        _trial("done0001", _epochs(0.5, 0.8, 0.7), Trial.TERMINATED),  # best at epoch 2
        _trial("asha0002", _epochs(0.4, last="running"), Trial.TERMINATED),
        _trial("nan00003", _epochs(0.2, 0.1, last="diverged"), Trial.TERMINATED),
        _trial("big00004", [{"val_top1": 0.99, "epoch": 0, "status": "rejected"}],
               Trial.TERMINATED),
        _trial("kill0005", _epochs(0.3, last="running"), Trial.ERROR),
        _trial("todo0006", _epochs(0.6, last="running"), Trial.RUNNING),
    ]
    return [_restored(t) for t in before]


def test_a_resumed_sweep_counts_the_trials_that_ended_before_it(resumed: list[Trial]) -> None:
    printer = ProgressPrinter(6, "val_top1", "max", echo=lambda s: None)
    printer.on_step_begin(0, resumed)
    line = printer.line()
    assert "trials: 0 running, 5/6 done (1 stopped, 1 diverged, 1 rejected, 1 failed)" in line
    assert "best val_top1 0.8000 (trial done0001)" in line  # its epoch is not in Tune's state
    assert "ETA" not in line  # nothing ended in this process yet: no rate to go by


def test_a_resumed_sweep_ends_at_n_of_n(resumed: list[Trial]) -> None:
    lines: list[str] = []
    printer = ProgressPrinter(6, "val_top1", "max", echo=lines.append)
    last = resumed[-1]
    printer.on_step_begin(0, resumed)
    last.set_status(Trial.RUNNING)
    printer.on_trial_start(1, resumed, last)
    for result in _epochs(0.6, 0.85, 0.9)[1:]:
        printer.on_trial_result(2, resumed, last, result)
        last.update_last_result(result)  # Tune does this after the hook
    assert "trials: 1 running, 5/6 done" in printer.line()
    printer.on_trial_complete(3, resumed, last)  # Tune still has it RUNNING here
    assert lines[-1].split("] ", 1)[1] == (
        "trials: 0 running, 6/6 done (1 stopped, 1 diverged, 1 rejected, 1 failed) | "
        "best val_top1 0.9000 (trial todo0006, epoch 3)")


def test_trials_the_sweeps_end_cut_are_neither_completed_nor_stopped() -> None:
    """A sweep that reached its target (seen: a TPE+HyperBand study): Tune ends every trial
    left without the trial-complete hook. The line, ``hpsearch status`` (the snapshot) and the
    summary must not call those completed (a trial still waiting) or stopped by the scheduler
    (the one that reached the target, paused or training)."""
    trials = [_trial(f"cut0000{i}", [], Trial.PENDING) for i in range(1, 7)]
    printer = ProgressPrinter(27, "val_top1", "max", echo=lambda s: None)
    printer.on_step_begin(0, trials)
    done, held, paused, hit, fresh, waiting = trials
    for trial, results in ((done, _epochs(0.8, 0.9)), (held, _epochs(0.8, 0.85)),
                           (paused, _epochs(0.7, last="running")),
                           (hit, _epochs(0.85, 0.91, last="running")), (fresh, [])):
        trial.set_status(Trial.RUNNING)
        printer.on_trial_start(1, trials, trial)
        for result in results:
            printer.on_trial_result(2, trials, trial, result)
            trial.update_last_result(result)
    printer.on_trial_complete(3, trials, done)
    for trial in (held, paused):  # HyperBand holds each at its milestone (held: its last)
        trial.set_status(Trial.PAUSED)
    for trial in trials:  # the target reached: Tune's stop of every trial left
        trial.set_status(Trial.TERMINATED)
    printer.on_step_begin(4, trials)
    assert "trials: 0 running, 6/27 done (3 ended with the sweep, 1 not started)" \
        in printer.line()
    assert printer.snapshot()["ended"] == {"ended with the sweep": 3, "not started": 1,
                                           "completed": 2}


def test_a_two_slot_sweep_shows_two_running_while_both_slots_are_busy() -> None:
    """Tune calls on_trial_complete while the ended trial is still RUNNING and on_trial_start
    while the next is still PENDING: the end's line waits for the slot to be refilled."""
    lines: list[str] = []
    trials = [_trial(f"slot000{i}", [], Trial.RUNNING if i < 3 else Trial.PENDING)
              for i in range(1, 5)]
    printer = ProgressPrinter(4, "val_top1", "max", echo=lines.append)
    printer.on_step_begin(0, trials)
    for trial in trials[:2]:
        printer.on_trial_start(1, trials, trial)
    assert "trials: 2 running, 0/4 done" in printer.line()
    printer.on_trial_result(2, trials, trials[0], _epochs(0.5)[0])  # prints; the next wait
    lines.clear()

    def end(trial: Trial) -> None:
        printer.on_trial_complete(3, trials, trial)  # Tune still has it RUNNING here
        trial.set_status(Trial.TERMINATED)

    def start(trial: Trial) -> None:
        printer.on_trial_start(4, trials, trial)  # Tune still has it PENDING here
        trial.set_status(Trial.RUNNING)

    end(trials[0])
    assert lines == []  # not "1 running": the next trial is about to take the slot
    start(trials[2])
    assert "trials: 2 running, 1/4 done" in lines[-1]
    end(trials[1])
    start(trials[3])
    assert "trials: 2 running, 2/4 done" in lines[-1]
    end(trials[2])  # nothing left to start: the next step prints what is true then
    printer.on_step_begin(5, trials)
    assert "trials: 1 running, 3/4 done" in lines[-1]
    end(trials[3])
    assert "trials: 0 running, 4/4 done" in lines[-1]
    assert len(lines) == 4


def test_the_line_waits_for_the_trial_a_searcher_makes_once_a_slot_is_free(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a concurrency limit a searcher (Optuna's) makes the next trial only after one
    ends: between that end and the new trial's start Tune has none PENDING, and the end's
    line waits for it while the budget has trials left; at most ``_REFILL_S``."""
    import hpsearch.search.progress as progress

    monkeypatch.setattr(progress, "_LOOK_S", 0.0)  # every step looks
    lines: list[str] = []
    trials = [_trial(f"opt0000{i}", [], Trial.RUNNING) for i in (1, 2)]
    printer = ProgressPrinter(4, "val_top1", "max", echo=lines.append)
    printer.on_step_begin(0, trials)
    for trial in trials:
        printer.on_trial_start(1, trials, trial)
    printer.on_trial_result(2, trials, trials[0], _epochs(0.5)[0])
    lines.clear()
    printer.on_trial_complete(3, trials, trials[0])
    trials[0].set_status(Trial.TERMINATED)
    printer.on_step_begin(4, trials)  # the searcher has not made the next trial yet
    assert lines == []
    trials.append(_trial("opt00003", [], Trial.PENDING))
    printer.on_step_begin(5, trials)
    printer.on_trial_start(6, trials, trials[2])
    trials[2].set_status(Trial.RUNNING)
    assert len(lines) == 1 and "trials: 2 running, 1/4 done" in lines[0]
    # a next trial that does not come (the sweep is ending on a stop rule): the line after all
    printer.on_trial_complete(7, trials, trials[1])
    trials[1].set_status(Trial.TERMINATED)
    printer.on_step_begin(8, trials)
    assert len(lines) == 1
    monkeypatch.setattr(progress, "_REFILL_S", 0.0)
    printer.on_step_begin(9, trials)
    assert len(lines) == 2 and "trials: 1 running, 2/4 done" in lines[1]


def test_rejected_and_non_finite_results_are_never_best() -> None:
    trials = [_trial("big00001", [{"val_loss": 0.0, "epoch": 0, "status": "rejected"}],
                     Trial.TERMINATED),
              _trial("nan00002", [{"val_loss": float("nan"), "epoch": 1, "status": "diverged"}],
                     Trial.TERMINATED)]
    printer = ProgressPrinter(2, "val_loss", "min", echo=lambda s: None)
    printer.on_step_begin(0, [_restored(t) for t in trials])
    assert printer.line().endswith("2/2 done (1 diverged, 1 rejected) | best: -")


# --------------------------------------------------------------------------- integration


def _kill_once(config: dict[str, Any]) -> None:
    """Reports epoch 1 with a checkpoint, SIGKILLs its own worker once, then completes."""
    from ray import tune

    start = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        start = int((Path(checkpoint.path) / "epoch").read_text()) + 1
    for epoch in range(start, 3):
        if epoch == 2 and not os.path.exists(config["marker"]):
            Path(config["marker"]).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "epoch").write_text(str(epoch))
            tune.report({"score": 0.5 * epoch, "epoch": epoch,
                         "status": "completed" if epoch == 2 else "running"},
                        checkpoint=tune.Checkpoint.from_directory(folder))


@pytest.fixture
def ray_log() -> Iterator[list[str]]:
    """Every line Ray's loggers write, as the console handler on the ``ray`` logger sees it."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.extend(self.format(record).splitlines())

    handler = Collect(logging.WARNING)
    logging.getLogger("ray").addHandler(handler)
    yield lines
    logging.getLogger("ray").removeHandler(handler)


@pytest.mark.integration
@pytest.mark.usefixtures("ray_local")
def test_a_killed_worker_is_one_line_not_a_traceback(
        tmp_path: Path, ray_log: list[str], capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import tune
    from ray.tune import FailureConfig, RunConfig

    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    lines: list[str] = []
    quiet_trial_errors()
    tuner = tune.Tuner(
        _kill_once, param_space={"marker": str(tmp_path / "killed")},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=RunConfig(
            name="kill", storage_path=str(tmp_path / "runs"), verbose=0,
            failure_config=FailureConfig(max_failures=1),
            callbacks=[ProgressPrinter(1, "score", "max", echo=lines.append)]))
    [result] = tuner.fit()
    assert result.metrics["status"] == "completed"
    trial_id = result.metrics["trial_id"]
    console = "\n".join(ray_log) + capfd.readouterr().err
    assert "Traceback" not in console and "ActorDiedError" not in console
    assert (f"trial {trial_id} failed (worker died: ActorDiedError); retrying from its "
            "checkpoint (1/1)") in lines
    assert "1/1 done" in lines[-1]
    error_txt = (Path(result.path) / "error.txt").read_text()
    assert "The actor died unexpectedly" in error_txt  # the full error stays where Tune puts it

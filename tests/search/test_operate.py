"""``hpsearch list``, ``status`` and ``stop`` on sweep folders as a driver leaves them (fast: no
Ray): the state each folder means, and the one-line errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hpsearch.search.cli import main
from hpsearch.search.operate import list_sweeps, sweep_state
from hpsearch.search.sweepdir import DRIVER_FILE, META_FILE, STALE_AFTER_S, STOP_FILE
from hpsearch.trainables.vocab import SweepState

NOW = 1_800_000_000.0


def _driver(state: str, beat_age: float = 1.0, **extra: object) -> dict:
    return {"host": "node-a", "pid": 4242, "started": NOW - 600, "state": state,
            "heartbeat": NOW - beat_age, "run_s": 600 - beat_age, "tracking_uri": "sqlite:///m.db",
            "progress": {"done": 3, "total": 8, "trials": 5, "ended": {"completed": 3},
                         "line": "[9:59] trials: 2 running, 3/8 done | best val_top1 0.9100 "
                                 "(trial ab12, epoch 2)",
                         "best": {"metric": "val_top1", "value": 0.91, "trial_id": "ab12",
                                  "epoch": 2},
                         "running": [{"trial_id": "cd34", "epoch": 1},
                                     {"trial_id": "ef56", "epoch": 3}]},
            **extra}


def _sweep(root: Path, name: str, driver: dict | None) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / META_FILE).write_text(json.dumps({"name": name, "tracking_uri": "sqlite:///m.db",
                                                 "created": "2026-01-01T00:00:00+0000"}))
    if driver is not None:
        (run_dir / DRIVER_FILE).write_text(json.dumps(driver))
    return run_dir


@pytest.mark.parametrize(("driver", "record_over", "expected"), [
    (_driver("running", beat_age=2), None, SweepState.RUNNING),
    (_driver("running", beat_age=STALE_AFTER_S + 1), None, SweepState.INTERRUPTED),
    (_driver("finished", beat_age=3600), None, SweepState.FINISHED),
    (_driver("stopped", beat_age=3600), None, SweepState.STOPPED),
    (_driver("interrupted"), None, SweepState.INTERRUPTED),
    (_driver("no-such-state"), None, SweepState.INTERRUPTED),
    (_driver("running", heartbeat="garbage"), None, SweepState.INTERRUPTED),
    (None, True, SweepState.FINISHED),  # a sweep from before the driver file: Tune's record
    (None, False, SweepState.INTERRUPTED),
])
def test_state_from_the_driver_file(driver: dict | None, record_over: bool | None,
                                    expected: SweepState) -> None:
    assert sweep_state(driver, NOW, record_over) == expected


def test_list_shows_state_trials_best_and_where(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    _sweep(tmp_path, "alpha", {**_driver("running"), "heartbeat": now - 1})
    _sweep(tmp_path, "beta", {**_driver("stopped"), "job_id": "hpsearch-beta-1"})
    _sweep(tmp_path, "gamma", {**_driver("running"), "heartbeat": now - STALE_AFTER_S - 5})
    assert main(["list", "--storage", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "TRIALS", "BEST", "STARTED", "WALL", "WHERE"]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert rows["alpha"].split()[1:5] == ["running", "3/8", "val_top1", "0.9100"]
    assert rows["alpha"].endswith("local node-a")
    assert rows["beta"].split()[1] == "stopped"
    assert rows["beta"].endswith("ray job hpsearch-beta-1")
    assert rows["gamma"].split()[1] == "interrupted"

    assert main(["list", "--storage", str(tmp_path), "--json"]) == 0
    data = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert data["beta"]["state"] == "stopped" and data["beta"]["done"] == 3
    assert data["alpha"]["best"]["value"] == 0.91
    assert data["beta"]["wall_s"] == pytest.approx(600 - 1)


def test_status_of_a_running_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(tmp_path, "alpha", {**_driver("running"), "heartbeat": time.time()})
    assert main(["status", "alpha", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep 'alpha': running (local node-a)")
    assert "trials: 2 running, 3/8 done | best val_top1 0.9100" in out
    assert "running: trial cd34 epoch 1, trial ef56 epoch 3" in out
    assert "MLflow: sqlite:///m.db" in out and "resume" not in out


def test_status_of_a_stopped_sweep_says_how_to_continue(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(tmp_path, "beta", _driver("stopped"))
    assert main(["status", "beta", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sweep 'beta': stopped" in out and "3/8 done (3 completed)" in out
    assert "continue it: hpsearch resume beta" in out
    assert "running: trial" not in out


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["status", "stop"])
def test_an_unknown_name_lists_the_known_ones(tmp_path: Path, command: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(tmp_path, "resnet-lr", _driver("finished"))
    _sweep(tmp_path, "vgg", _driver("finished"))
    assert main([command, "resnet-l", "--storage", str(tmp_path)]) == 2
    err = _one_error(capsys)
    assert "no sweep named 'resnet-l'" in err and "(did you mean 'resnet-lr'?)" in err
    assert "known: resnet-lr, vgg" in err


@pytest.mark.parametrize("state", ["finished", "stopped", "interrupted"])
def test_stopping_a_sweep_that_is_not_running(tmp_path: Path, state: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _sweep(tmp_path, "done", _driver(state, beat_age=3600))
    assert main(["stop", "done", "--storage", str(tmp_path)]) == 2
    err = _one_error(capsys)
    assert f"stop done: the sweep is not running (it is {state})" in err
    assert ("hpsearch resume done" in err) == (state != "finished")
    assert not (run_dir / STOP_FILE).exists()


def test_stop_writes_a_request_and_a_second_stop_is_now(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    run_dir = _sweep(tmp_path, "alpha", {**_driver("running"), "heartbeat": time.time()})
    assert main(["stop", "alpha", "--storage", str(tmp_path)]) == 0
    assert json.loads((run_dir / STOP_FILE).read_text())["mode"] == "graceful"
    assert "finish their current epoch" in capsys.readouterr().out
    assert main(["stop", "alpha", "--storage", str(tmp_path)]) == 0
    assert json.loads((run_dir / STOP_FILE).read_text())["mode"] == "now"


@pytest.mark.parametrize("command", [["list"], ["status", "x"], ["stop", "x"]])
def test_a_storage_that_cannot_be_read(tmp_path: Path, command: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert main([*command, "--storage", str(missing)]) == 2
    assert f"storage: {missing} cannot be used" in _one_error(capsys)


def test_list_of_an_empty_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--storage", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no sweeps under {tmp_path}"
    assert list_sweeps(str(tmp_path)) == []


def test_follow_prints_progress_until_the_sweep_ends(tmp_path: Path) -> None:
    import threading

    from hpsearch.search.operate import follow_status

    run_dir = _sweep(tmp_path, "alpha", {**_driver("running"), "heartbeat": time.time()})

    def finish() -> None:
        time.sleep(0.5)
        (run_dir / DRIVER_FILE).write_text(json.dumps(_driver("finished")))

    threading.Thread(target=finish).start()
    lines: list[str] = []
    follow_status("alpha", str(tmp_path), echo=lines.append, every_s=0.1)
    assert lines[0].startswith("sweep 'alpha': running")
    assert "\n[9:59] trials: 2 running, 3/8 done" in lines[0]
    assert len(lines) == 2, "an unchanged progress line is not printed again"
    assert lines[-1].startswith("sweep 'alpha': finished")


def test_operating_files_are_not_among_those_tune_copies_back() -> None:
    """Tune's restore copies a folder's *.json and *.pkl to its staging dir and uploads them
    with every snapshot: a resumed sweep would see a dead driver's state come back."""
    assert not DRIVER_FILE.endswith((".json", ".pkl"))
    assert not STOP_FILE.endswith((".json", ".pkl"))


def _submitted(root: Path, name: str, address: str) -> Path:
    return _sweep(root, name, {**_driver("running"), "heartbeat": time.time(),
                               "job_id": f"hpsearch-{name}-1", "job_address": address})


@pytest.mark.parametrize("command", [["status"], ["status", "--follow"], ["stop"],
                                     ["stop", "--now"]])
def test_an_address_given_is_used_and_must_answer(tmp_path: Path, command: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.mlflow_server import free_port

    recorded, given = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    run_dir = _submitted(tmp_path, "remote", recorded)
    assert main([command[0], "remote", *command[1:], "--storage", str(tmp_path),
                 "--address", given]) == 2
    err = _one_error(capsys)
    assert f"--address {given}: the Ray job API refused or could not be reached" in err
    assert not (run_dir / STOP_FILE).exists(), "nothing is asked of a sweep before the check"


def test_without_an_address_an_unreachable_job_api_is_one_line_of_status(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.mlflow_server import free_port

    recorded = f"http://127.0.0.1:{free_port()}"
    _submitted(tmp_path, "remote", recorded)
    assert main(["status", "remote", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"Ray job API at {recorded} not reachable from here" in out
    assert "another address: --address" in out and out.startswith("sweep 'remote': running")


@pytest.mark.parametrize("command", ["status", "stop"])
def test_an_address_for_a_sweep_that_is_not_a_ray_job(tmp_path: Path, command: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(tmp_path, "alpha", {**_driver("running"), "heartbeat": time.time()})
    assert main([command, "alpha", "--storage", str(tmp_path), "--address",
                 "http://127.0.0.1:8265"]) == 2
    err = _one_error(capsys)
    assert f"{command} alpha --address: the sweep was not submitted as a Ray job " \
           "(where: local node-a)" in err


@pytest.mark.parametrize(("state", "says"), [
    ("interrupted", "no trial results in {run_dir} yet: the sweep is interrupted and Tune had "
                    "saved none there; `hpsearch resume killed` recovers them from the trials' "
                    "checkpoints"),
    ("stopped", "the sweep is stopped and Tune had saved none there; `hpsearch resume killed`"),
    ("running", "report killed: no trials yet in {run_dir}"),
])
def test_report_of_a_sweep_without_saved_results_says_what_to_do(
        tmp_path: Path, cli, state: str, says: str) -> None:
    """A driver killed (or stopped) before Tune copied any trial's ``result.json`` to the
    sweep's folder leaves checkpoints only: the report says to resume, in one line, not that
    the storage cannot be used."""
    run_dir = _sweep(tmp_path / "runs", "killed",
                     _driver(state, beat_age=1 if state == "running" else 3600))
    (run_dir / "trial_ab12" / "checkpoint_000000").mkdir(parents=True)
    if state == "running":  # a live heartbeat
        (run_dir / DRIVER_FILE).write_text(json.dumps(
            {**_driver(state), "heartbeat": time.time()}))
    out = cli("report", "killed", "--storage", str(tmp_path / "runs"), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "cannot be used" not in out.stderr, out.stderr
    assert says.format(run_dir=run_dir) in out.stderr
    assert not (tmp_path / "results").exists()

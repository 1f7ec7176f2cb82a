"""The report compares like with like and says what its numbers are: trials stopped early by ASHA
do not enter the completed trials' means, the Pareto front or the importance study; each table
states its comparison method; the accuracies are defined as :mod:`trainables.vocab` defines
them; the test set's size and an ``eval_limit`` subset are shown; class names label the
confusion matrix; no machine path is printed."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hpsearch.search.report import SweepData, cost_table, factor_tables, from_ray_dir, write_report
from hpsearch.search.report.study import importance_study
from hpsearch.search.spec import parse_spec
from hpsearch.trainables.vocab import SCORE_DEFINITIONS

GOLDEN = Path(__file__).resolve().parent / "golden" / "sweeps"
_SPEC = {"name": "asha", "budget": {"trials": 6, "max_epochs": 3},
         "fixed": {"model": "cnn", "dataset": "mnist", "data_dir": "/somewhere/on/disk"},
         "space": {"optimizer": ["adam", "sgd"]},
         "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}}
# trial -> (optimizer, status, val_top1 per epoch, params)
_TRIALS = {
    "a": ("adam", "completed", [0.50, 0.80, 0.90], 2000),
    "b": ("adam", "completed", [0.40, 0.70, 0.80], 3000),
    "c": ("sgd", "completed", [0.30, 0.60, 0.70], 2000),
    "d": ("sgd", "stopped_early", [0.10], 500),  # stopped at epoch 1: cheap, low score
    "e": ("sgd", "stopped_early", [0.20], 500),
}


def _asha_data(**extra: Any) -> SweepData:
    rows, history = [], []
    for trial_id, (optimizer, status, scores, params) in _TRIALS.items():
        rows.append({"trial_id": trial_id, "status": status, "model": "cnn",
                     "dataset": "mnist", "data_dir": "/somewhere/on/disk",
                     "optimizer": optimizer, "best_val_top1": max(scores),
                     "test_top1": scores[-1] if status == "completed" else math.nan,
                     "params": params, "macs": 10 * params, "epochs_run": len(scores),
                     "stopped_epoch": len(scores) if status == "stopped_early" else None,
                     **extra})
        history += [{"trial_id": trial_id, "epoch": e, "val_top1": v, "train_loss": 1.0,
                     "val_loss": 1.0} for e, v in enumerate(scores, start=1)]
    return SweepData.from_rows("asha", rows, spec=parse_spec(_SPEC),
                               history=pd.DataFrame(history),
                               meta={"max_epochs": 3, "source": "ray",
                                     "run_dir": "/somewhere/on/disk/runs/asha"})


def test_stopped_trials_low_epoch_scores_stay_out_of_the_completed_means() -> None:
    data = _asha_data()
    sgd = factor_tables(data)["optimizer"].set_index("value").loc["sgd"]
    assert (sgd["trials"], sgd["completed"]) == (3, 1)
    assert sgd["mean"] == pytest.approx(0.70) and sgd["best"] == pytest.approx(0.70)  # c only
    # at ASHA's rung (epoch 1) every trial that got there is compared, each at epoch 1
    assert data.rung_epochs == (1,)
    assert sgd["reached_1"] == 3 and sgd["mean_at_1"] == pytest.approx((0.30 + 0.10 + 0.20) / 3)
    adam = factor_tables(data)["optimizer"].set_index("value").loc["adam"]
    assert adam["mean"] == pytest.approx(0.85) and adam["mean_at_1"] == pytest.approx(0.45)


@pytest.mark.parametrize(("grace", "factor", "epochs"), [
    (1, 2, 4), (1, 2, 2), (1, 3, 9), (1, 3, 10), (2, 2, 16), (1, 1.5, 6), (3, 3, 3), (1, 4, 64)])
def test_the_rungs_are_the_milestones_of_rays_asha(grace: int, factor: float,
                                                    epochs: int) -> None:
    """The report's rungs are the epochs at which the scheduler the sweep ran judges a trial."""
    from hpsearch.search.algorithms import build_scheduler

    spec = parse_spec({**_SPEC, "budget": {"trials": 6, "max_epochs": epochs},
                       "scheduler": {"name": "asha", "grace_period": grace,
                                     "reduction_factor": factor}})
    (bracket,) = build_scheduler(spec)._brackets
    judged = {math.ceil(milestone) for milestone, _ in bracket._rungs}
    assert spec.scheduler.rungs(epochs) == tuple(sorted(e for e in judged if e < epochs))
    assert parse_spec({**_SPEC, "scheduler": "none"}).scheduler.rungs(epochs) == ()


@pytest.mark.parametrize(("factor", "epochs"), [(3, 9), (3, 10), (2, 16), (3, 27), (4, 6),
                                                (2, 3), (3, 2)])
def test_the_hyperband_rungs_are_every_brackets_milestones(factor: float, epochs: int) -> None:
    """HyperBand pauses and stops trials at its brackets' milestones only: a trial that ended
    after another epoch was ended by the sweep (target, time limit, a stop)."""
    from hpsearch.search.algorithms import build_scheduler

    spec = parse_spec({**_SPEC, "budget": {"trials": 6, "max_epochs": epochs},
                       "scheduler": {"name": "hyperband", "reduction_factor": factor}})
    ray_hb = build_scheduler(spec)
    judged = set()
    for s in range(ray_hb._s_max_1):
        if ray_hb._get_r0(s) == 0:
            continue  # Ray skips a bracket that small
        bracket = ray_hb._create_bracket(s)
        judged.add(bracket._cumul_r)
        while bracket._halves > 0:  # each halving moves the bracket to its next milestone
            bracket.successive_halving(spec.metric, 1.0)
            judged.add(bracket._cumul_r)
    assert spec.scheduler.rungs(epochs) == tuple(sorted(e for e in judged if e < epochs))


# trial -> (status, val_top1 per epoch): ASHA (grace 1, factor 2, 4 epochs: rungs 1 and 2)
# stopped one trial at each rung; `hpsearch stop` ended one after epoch 3, which is no rung
_RUNGS = {"a": ("completed", [0.5, 0.7, 0.8, 0.9]), "b": ("completed", [0.4, 0.6, 0.7, 0.8]),
          "c": ("stopped_early", [0.3, 0.5]), "d": ("stopped_early", [0.1]),
          "e": ("stopped_early", [0.45, 0.65, 0.75])}


def test_every_rung_that_stopped_a_trial_gets_its_own_columns(tmp_path: Path) -> None:
    spec = parse_spec({**_SPEC, "budget": {"trials": 5, "max_epochs": 4}})
    rows, history = [], []
    for trial_id, (status, scores) in _RUNGS.items():
        rows.append({"trial_id": trial_id, "status": status, "optimizer": "adam",
                     "best_val_top1": max(scores), "epochs_run": len(scores),
                     "stopped_epoch": len(scores) if status == "stopped_early" else None})
        history += [{"trial_id": trial_id, "epoch": e, "val_top1": v}
                    for e, v in enumerate(scores, start=1)]
    rows[-1]["optimizer"] = rows[-2]["optimizer"] = "sgd"
    data = SweepData.from_rows("rungs", rows, spec=spec, history=pd.DataFrame(history),
                               meta={"max_epochs": 4, "rungs": spec.scheduler.rungs(4)})
    assert data.meta["rungs"] == (1, 2) and data.rung_epochs == (1, 2)  # not 3: no rung
    sgd = factor_tables(data)["optimizer"].set_index("value").loc["sgd"]
    assert (sgd["reached_1"], sgd["reached_2"]) == (2, 1)  # d stopped at 1, e went on
    assert sgd["mean_at_1"] == pytest.approx(0.275) and sgd["mean_at_2"] == pytest.approx(0.65)
    assert "reached_3" not in factor_tables(data)["optimizer"].columns
    md = write_report(data, tmp_path)["report.md"].read_text()
    factors = md.split("## Factors")[1].split("## Cost")[0]
    assert "| Optimizer | Trials | Completed | Best val acc (%) | Mean val acc (%) | Reached " \
           "epoch 1 | Mean val acc at epoch 1 (%) | Reached epoch 2 | Mean val acc at epoch 2 " \
           "(%) |" in factors
    assert "| sgd | 2 | 0 | — | — | 2 | 27.50 | 1 | 65.00 |" in factors
    assert "*Optimizer: completed trials compared at 4 epochs; all trials at epochs 1 and 2*" \
        in factors
    assert "for each of epochs 1 and 2, the epochs at which the scheduler stopped trials" \
        in factors
    # where the rungs are not known (no spec), each epoch a trial was stopped at is one
    data.meta.pop("rungs")
    assert data.rung_epochs == (1, 2, 3)


def test_the_cost_front_and_importance_use_completed_trials_only() -> None:
    data = _asha_data()
    # d and e are smaller than every completed trial: on a mixed front they would be on it
    assert list(cost_table(data)["trial_id"]) == ["a"]
    assert list(data.trials["trial_id"]) == ["a", "b", "c", "e", "d"]  # completed first
    many = SweepData.from_rows("many", [
        {"trial_id": f"t{i}", "status": "stopped_early" if i >= 10 else "completed",
         "optimizer": "adam" if i % 2 else "sgd", "lr": 10.0 ** -i, "best_val_top1": i / 20}
        for i in range(14)], meta={"max_epochs": 3})
    found = importance_study(many)
    assert not isinstance(found, str) and len(found[0].trials) == 10  # not the 4 stopped


def test_the_report_states_its_comparison_method_and_definitions(tmp_path: Path) -> None:
    files = write_report(_asha_data(eval_limit=200), tmp_path)
    md = files["report.md"].read_text()
    factors = md.split("## Factors")[1].split("## Cost")[0]
    assert "best and mean are over these only, so every score comes from the same number of " \
           "epochs" in factors
    assert "*Optimizer: completed trials compared at 3 epochs; all trials at epoch 1*" in factors
    assert "| Optimizer | Trials | Completed | Best val acc (%) | Mean val acc (%) | Reached " \
           "epoch 1 | Mean val acc at epoch 1 (%) |" in factors
    assert "| sgd | 3 | 1 | 70.00 | 70.00 | 3 | 20.00 |" in factors
    cost = md.split("## Cost")[1].split("## Compute")[0]
    assert "trials stopped early are left out (their scores are from fewer epochs)" in cost
    assert "completed trials first, best first; then the other scored ones (stopped early" in md
    definitions = md.split("## Definitions")[1].split("## Leaderboard")[0]
    assert f"- Val acc: {SCORE_DEFINITIONS['best_val_top1']}." in definitions
    assert SCORE_DEFINITIONS["test_top1"] in definitions
    assert SCORE_DEFINITIONS["val_top1"] in definitions  # MLflow's runs-table val_top1
    # an eval_limit test set is labelled a subset, in the columns and in words
    assert "Test acc, subset (%)" in md and "the first 200 test images, eval_limit" in md
    assert "Val and test are subsets (eval_limit 200" in md
    # settings that did not vary go to one line; no machine path anywhere
    assert "Fixed settings (the same in every trial): model cnn, dataset mnist" in md
    assert "| Model |" not in md and "/somewhere/on/disk" not in md
    assert "Hyperparameter importance (PED-ANOVA) skipped: 3 completed trial(s)" in md


def test_a_trial_the_sweeps_end_cut_short_is_not_called_stopped_by_the_scheduler(
        tmp_path: Path) -> None:
    """ASHA's rungs here are epochs 1 and 2: a trial that ended at epoch 2 (a rung) was stopped
    by ASHA; one at an epoch that is no rung was still training when the sweep ended."""
    data = _asha_data()
    data.meta["rungs"], data.meta["scheduler"] = (1, 2), "asha"
    data.trials.loc[data.trials["trial_id"] == "e", "stopped_epoch"] = 3
    md = write_report(data, tmp_path)["report.md"].read_text()
    board = md.split("## Leaderboard")[1].split("##")[0]
    assert "| stopped at epoch 1 |" in board and "| ended at epoch 3 |" in board
    assert "the scheduler (ASHA) ended it after epoch N" in md
    # and the counts say so too: the terminal's line and the compute table
    from hpsearch.search.report.tables import compute_summary

    counts = compute_summary(data)["counts"]
    assert counts["ended with the sweep"] == 1
    assert counts["stopped_early"] == int((data.trials["status"] == "stopped_early").sum()) - 1
    assert "| Trials ended with the sweep | 1 |" in md
    assert "Ended at epoch N: still training when the sweep ended" in md


def test_a_trial_the_sweeps_end_cut_before_its_first_epoch_is_defined(tmp_path: Path) -> None:
    data = _asha_data()
    data.meta["rungs"], data.meta["scheduler"] = (1, 2), "asha"
    data.trials.loc[data.trials["trial_id"] == "e", "stopped_epoch"] = 0
    md = write_report(data, tmp_path)["report.md"].read_text()
    assert "| ended before epoch 1 |" in md.split("## Leaderboard")[1].split("##")[0]
    definitions = md.split("## Definitions")[1].split("## Leaderboard")[0]
    assert "Ended before epoch 1: it had started when the sweep ended, and has no scores." \
        in definitions
    assert "Ended at epoch N" not in definitions  # no trial ended so after an epoch
    assert "| Saved by early stopping and the sweep's end |" in md
    # every trial not completed was cut by the sweep's end: early stopping saved nothing
    data.trials.loc[data.trials["status"] == "stopped_early", "stopped_epoch"] = 0
    md = write_report(data, tmp_path)["report.md"].read_text()
    assert "| Saved by the sweep's end |" in md and "Trials stopped early" not in md


@pytest.mark.parametrize(("scheduler", "said", "unsaid"), [
    ("hyperband", "the scheduler (HyperBand) ended it", "ASHA"),
    ("pbt", "copy of another trial's weights (see Lineage); no trial is stopped early",
     "Stopped at epoch N"),
    ("none", "Completed: ran every epoch. Rejected:", "Stopped at epoch N")])
def test_the_status_definitions_name_the_sweeps_scheduler(scheduler: str, said: str,
                                                         unsaid: str) -> None:
    from hpsearch.search.report import notes

    data = _asha_data()
    data.meta["scheduler"] = scheduler
    text = notes.statuses(data)
    assert said in text and unsaid not in text, text


_KEPT_SPEC = """\
# the data: /somewhere/on/disk/mnist
name: asha
fixed: {model: cnn, dataset: mnist, data_dir: /somewhere/on/disk}
storage: "/somewhere/on/disk/runs"
tracking: {uri: "http://ann:s3cret@gpu-box.lab:5000"}
"""


def test_no_file_the_report_writes_names_the_machine(tmp_path: Path) -> None:
    """Neither a table, ``trials.csv``, a trial's error nor the spec shown names a local path
    or a server's host: paths are shortened to ``<local>/`` and their last part."""
    data = _asha_data(error="FileNotFoundError: '/somewhere/on/disk/runs/asha/trial_d/x.pt'")
    data.meta["spec_yaml"] = _KEPT_SPEC
    files = write_report(data, tmp_path)
    texts = {name: path.read_text() for name, path in files.items()
             if path.suffix in (".md", ".html", ".csv", ".tex")}
    assert {"report.md", "report.html", "trials.csv", "leaderboard.tex"} <= set(texts)
    for name, text in texts.items():
        assert "/somewhere" not in text and "gpu-box" not in text, name
        assert "ann:" not in text and "s3cret" not in text, name
    csv = pd.read_csv(files["trials.csv"])
    assert "data_dir" not in csv.columns and "dataset" in csv.columns
    assert set(csv["error"]) == {"FileNotFoundError: '<local>/x.pt'"}
    shown = texts["report.md"].split("The sweep spec")[1]
    assert "fixed: {model: cnn, dataset: mnist, data_dir: <local>/disk}" in shown
    assert 'storage: "<local>/runs"' in shown and "http://<host>:5000" in shown
    assert "# the data: <local>/mnist" in shown  # comments too


def test_class_names_and_split_sizes_come_from_the_trial(tmp_path: Path) -> None:
    """A trial records its dataset's class names with the confusion matrix (``test_classes``);
    the report labels the matrix with them and shows each split's size."""
    sweep = tmp_path / "golden_search"
    shutil.copytree(GOLDEN / "golden_search", sweep)
    data = from_ray_dir(sweep)
    best = data.trials.iloc[0]
    assert best["status"] == "completed" and data.confusion_trial == best["trial_id"]
    assert data.confusion_classes == ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                                      "5 - five", "6 - six", "7 - seven", "8 - eight",
                                      "9 - nine"]  # torchvision's MNIST names
    assert data.meta["split_sizes"] == {"train": 200, "val": 60, "test": 200}
    assert sum(map(sum, data.confusion)) == 200
    md = write_report(data, tmp_path / "out")["report.md"].read_text()
    assert "Data: mnist; images per trial: 200 train, 60 val, 200 test." in md
    assert str(sweep) not in md


def test_a_trial_the_sweep_ended_is_told_from_one_its_scheduler_stopped() -> None:
    """A TPE+HyperBand sweep that reached its target (seen: the study of 2026-12-05): the trial
    that reached it after epoch 4 (no milestone of HyperBand's with 9 epochs and factor 3) and
    one that had not finished an epoch were ended by the sweep, not stopped by HyperBand."""
    from hpsearch.search.report.formats import status_label

    rungs = parse_spec({**_SPEC, "budget": {"trials": 27, "max_epochs": 9},
                        "scheduler": "hyperband"}).scheduler.resolved().rungs(9)
    assert rungs == (1, 3)
    assert status_label("stopped_early", 4, rungs) == "ended at epoch 4"
    assert status_label("stopped_early", 3, rungs) == "stopped at epoch 3"
    assert status_label("stopped_early", 0, None) == "ended before epoch 1"

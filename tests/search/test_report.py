"""The sweep report: pure table logic on hand-built trials, then real sweeps on real Ray read
back from Ray's files and from MLflow (the same numbers either way)."""

from __future__ import annotations

import json
import math
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from hpsearch.search.report import (
    SweepData,
    compute_summary,
    factor_tables,
    format_macs,
    format_params,
    from_mlflow,
    from_ray_dir,
    leaderboard,
    leaderboard_text,
    load_trials,
    ofat_table,
    param_importances,
    pareto_front,
    parse_count,
    write_report,
)
from hpsearch.search.report.notes import share_name
from hpsearch.search.report.saved_spec import spec_from_yaml
from hpsearch.search.report.tables import rank_agreement
from hpsearch.search.spec import parse_spec
from hpsearch.search.sweepdir import FINAL_FILE
from hpsearch.search.yamlio import MAX_BYTES, MAX_VALUES, parse_yaml
from hpsearch.trainables.errors import UserError

GOLDEN = Path(__file__).resolve().parent / "golden" / "sweeps"

# --------------------------------------------------------------------------- pure functions


def test_pareto_front_keeps_the_non_dominated_points() -> None:
    points = pd.DataFrame({"acc": [0.90, 0.95, 0.80, 0.97, 0.85],
                           "params": [100, 300, 50, 1000, 400]},
                          index=["a", "b", "c", "d", "e"])
    front = pareto_front(points, [("acc", "max"), ("params", "min")])
    assert list(front) == ["a", "b", "c", "d"]  # e: b is better and smaller


def test_pareto_front_keeps_ties_and_duplicates_and_drops_missing() -> None:
    points = pd.DataFrame({"acc": [0.9, 0.9, 0.9, 0.8, math.nan],
                           "params": [100, 100, 200, 100, 1]})
    front = pareto_front(points, [("acc", "max"), ("params", "min")])
    assert list(front) == [0, 1]  # equal points do not dominate each other; 2 and 3 lose
    one = pareto_front(points, [("acc", "max")])
    assert list(one) == [0, 1, 2]


def test_pareto_front_minimising_both_and_a_bad_mode() -> None:
    points = pd.DataFrame({"loss": [1.0, 2.0, 0.5], "macs": [10, 5, 20]})
    assert list(pareto_front(points, [("loss", "min"), ("macs", "min")])) == [0, 1, 2]
    assert list(pareto_front(points.iloc[:0], [("loss", "min")])) == []
    with pytest.raises(ValueError, match="'max' or 'min'"):
        pareto_front(points, [("loss", "lowest")])


@pytest.mark.parametrize(("text", "count"), [
    ("1M", 1_000_000), ("1.2M", 1_200_000), ("50K", 50_000), ("50k", 50_000), ("2G", 2 * 10**9),
    ("1e6", 1_000_000), ("1200000", 1_200_000), ("1_000", 1000), (390634, 390634)])
def test_parse_count(text: str | int, count: int) -> None:
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["", "M", "1T", "-1M", "0", "lots", True])
def test_parse_count_rejects_what_is_not_a_count(text: Any) -> None:
    with pytest.raises(ValueError, match="positive count"):
        parse_count(text)


def test_units_read_like_a_lab_report() -> None:
    assert format_params(390634) == "391K" and format_params(1_218_000) == "1.22M"
    assert format_macs(7924000) == "7.92M" and format_macs(2_500_000_000) == "2.5G"
    assert format_params(None) == format_macs(math.nan) == "—"


# --------------------------------------------------------------------------- hand-built trials


def _trial(trial_id: str, optimizer: str, lr: float, score: float | None, *,
           status: str = "completed", params: int = 1000, epochs: int = 3,
           **extra: Any) -> dict[str, Any]:
    return {"trial_id": trial_id, "status": status, "model": "cnn", "optimizer": optimizer,
            "lr": lr, "batch_size": 64, "best_val_top1": math.nan if score is None else score,
            "test_top1": score if status == "completed" else math.nan, "params": params,
            "macs": params * 10, "epochs_run": epochs if score is not None else 0,
            "stopped_epoch": epochs if status == "stopped_early" else None,
            "wall_seconds": 10.0 * epochs if score is not None else 0.0, "started": 100.0,
            "ended": 100.0 + (10 * epochs if score is not None else 0),
            **extra}


_SPEC = {"name": "hand", "budget": {"trials": 6, "max_epochs": 3},
         "space": {"optimizer": ["adam", "sgd"],
                   "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-0}}}


def _hand_data(spec: dict[str, Any] | None = _SPEC) -> SweepData:
    rows = [_trial("a", "adam", 5e-4, 0.90), _trial("b", "adam", 2e-3, 0.80),
            _trial("c", "sgd", 0.5, 0.60, status="stopped_early", epochs=1),
            _trial("d", "sgd", 0.3, 0.70, params=500),
            _trial("e", "sgd", 0.2, None, status="rejected", params=10**6),
            _trial("f", "adam", 3e-4, 0.85, params=5000)]
    parsed = parse_spec(spec) if spec is not None else None
    return SweepData.from_rows("hand", rows, spec=parsed,
                               meta={"max_epochs": 3, "cpu_per_trial": 2.0, "gpu_per_trial": 0})


def _many_data(n: int = 12) -> SweepData:
    """``n`` completed trials and one stopped early: enough for the importance plot."""
    rows = [_trial(f"t{i:02d}", "adam" if i % 2 else "sgd", 10 ** (-3 + 2 * i / n),
                   0.5 + 0.4 * i / n - 0.1 * (i % 2)) for i in range(n)]
    rows.append(_trial("s", "sgd", 0.3, 0.2, status="stopped_early", epochs=1))
    return SweepData.from_rows("many", rows, spec=parse_spec(_SPEC), meta={"max_epochs": 3})


def test_factor_table_aggregates_each_value() -> None:
    tables = factor_tables(_hand_data())
    assert list(tables) == ["optimizer", "lr"]
    opt = tables["optimizer"].set_index("value")
    assert list(opt.index) == ["adam", "sgd"]  # the spec's order
    assert opt.loc["adam", "trials"] == 3 and opt.loc["sgd", "trials"] == 3
    assert opt.loc["sgd", "completed"] == 1  # c stopped early, e rejected
    assert opt.loc["adam", "best"] == pytest.approx(0.90)
    assert opt.loc["adam", "mean"] == pytest.approx((0.90 + 0.80 + 0.85) / 3)
    assert opt.loc["sgd", "mean"] == pytest.approx(0.70)  # c's epoch-1 score is not in it
    assert list(opt.columns) == ["trials", "completed", "best", "mean"]  # no per-epoch
    # history: no rung to compare at


def test_factor_table_bins_a_log_uniform_setting_in_log_space() -> None:
    lr = factor_tables(_hand_data())["lr"]
    assert len(lr) <= 4 and lr["trials"].sum() == 6
    assert list(lr["value"]) == ["0.0001–0.001", "0.001–0.01", "0.1–1"]  # decades; empty bin out
    assert list(lr["trials"]) == [2, 1, 3]
    assert lr.set_index("value").loc["0.0001–0.001", "best"] == pytest.approx(0.90)


def test_factor_tables_without_a_spec_use_the_settings_that_vary() -> None:
    tables = factor_tables(_hand_data(spec=None))
    assert set(tables) == {"optimizer", "lr"}  # model and batch_size do not vary
    assert tables["lr"]["trials"].sum() == 6


def test_leaderboard_ranks_best_first_and_shows_what_varies() -> None:
    data = _hand_data()
    board = leaderboard(data)
    assert list(board["Trial"]) == ["a", "f", "b", "d", "c", "e"]  # unscored last
    assert list(board.columns) == [
        "Trial", "Optimizer", "Learning rate", "Params", "MACs", "Val acc (%)",
        "Test acc (%)", "Epochs run", "Status"]  # model, batch size, activation: never vary
    first = board.iloc[0]
    assert (first["Val acc (%)"], first["Params"], first["MACs"]) == ("90.00", "1K", "10K")
    status = dict(zip(board["Trial"], board["Status"], strict=True))
    assert status["c"] == "stopped at epoch 1" and status["e"] == "rejected"
    assert list(leaderboard(data, top=2)["Trial"]) == ["a", "f"]
    assert list(leaderboard(data, max_params=1000)["Trial"]) == ["a", "b", "d", "c"]
    assert list(leaderboard(data, max_macs=5000)["Trial"]) == ["d"]


def test_leaderboard_adds_a_setting_column_once_it_varies() -> None:
    rows = [_trial("a", "adam", 1e-3, 0.9, activation="relu", augment=("hflip", "rotate")),
            _trial("b", "adam", 1e-3, 0.8, activation="gelu", augment=())]
    board = leaderboard(SweepData.from_rows("x", rows))
    assert list(board["Activation"]) == ["relu", "gelu"]
    assert list(board["Data augmentation"]) == ["hflip+rotate", "none"]


def test_a_setting_the_trial_does_not_use_shows_a_dash() -> None:
    rows = [_trial("a", "adam", 1e-3, 0.9, momentum=0.9),
            _trial("b", "sgd", 1e-2, 0.8, momentum=0.5)]
    data = SweepData.from_rows("x", rows)
    assert list(leaderboard(data)["Momentum"]) == ["—", "0.5"]  # Adam has no momentum
    assert list(factor_tables(data)["momentum"]["value"]) == ["0.5"]


def test_a_loss_objective_ranks_the_lowest_first() -> None:
    rows = [_trial("a", "adam", 1e-3, 0.9, best_val_loss=0.5),
            _trial("b", "adam", 1e-3, 0.8, best_val_loss=0.3)]
    board = leaderboard(SweepData.from_rows("x", rows, objective=("val_loss", "min")))
    assert list(board["Trial"]) == ["b", "a"]
    assert list(board["Best val loss"]) == ["0.3", "0.5"]


def test_compute_summary_counts_asha_savings_and_cpu_hours() -> None:
    s = compute_summary(_hand_data())
    assert s["counts"]["completed"] == 4 and s["counts"]["stopped_early"] == 1
    assert s["counts"]["rejected"] == 1 and s["trials"] == 6
    assert s["trial_epochs"] == 3 * 4 + 1
    assert s["full_budget_epochs"] == 5 * 3  # the rejected trial never trains
    assert s["savings"] == pytest.approx(1 - 13 / 15)
    assert s["wall_seconds"] == pytest.approx(30.0)
    assert s["cpu_hours"] == pytest.approx(2.0 * 10 * 13 / 3600)  # 2 CPUs x 10 s/epoch
    assert s["best"]["trial_id"] == "a"


def test_importance_needs_enough_completed_trials_and_names_its_method() -> None:
    importances, note = param_importances(_many_data())
    assert importances is not None and set(importances) == {"optimizer", "lr"}
    assert sum(importances.values()) == pytest.approx(1.0)
    assert note.startswith("PED-ANOVA (Optuna's default importance evaluator)")
    assert "12 completed trials; rough below 50 trials" in note  # the stopped one left out
    assert param_importances(_hand_data()) == (
        None, "hyperparameter importance (PED-ANOVA) skipped: 4 completed trial(s), at least "
              "10 needed")


def _crossing_data(stopped: bool = False, **meta: Any) -> SweepData:
    """Six completed trials over 3 epochs: epoch 1 ranks them the reverse of epoch 3 (a large
    learning rate leads early and ends worse), epoch 2 as epoch 3 does; ``stopped``: and one
    the scheduler stopped after epoch 1."""
    rows, steps = [], []
    for i in range(6):
        final = 0.80 + 0.02 * i
        rows.append(_trial(f"t{i}", "adam", 10 ** (-1 - i / 2), final))
        steps += [{"trial_id": f"t{i}", "epoch": 1, "val_top1": 0.70 - 0.02 * i},
                  {"trial_id": f"t{i}", "epoch": 2, "val_top1": final - 0.01},
                  {"trial_id": f"t{i}", "epoch": 3, "val_top1": final}]
    if stopped:
        rows.append(_trial("s", "sgd", 0.3, 0.71, status="stopped_early", epochs=1))
        steps.append({"trial_id": "s", "epoch": 1, "val_top1": 0.71})
    return SweepData.from_rows("cross", rows, spec=parse_spec(_SPEC),
                               history=pd.DataFrame(steps), meta={"max_epochs": 3, **meta})


def test_rank_agreement_tells_where_early_epochs_mislead_a_cut(tmp_path: Path) -> None:
    table, last, share = rank_agreement(_crossing_data())
    assert (last, share) == (3, 1 / 3)
    assert table.to_dict("records") == [
        {"epoch": 1, "trials": 6, "spearman": pytest.approx(-1.0), "kept": 0.0},
        {"epoch": 2, "trials": 6, "spearman": pytest.approx(1.0), "kept": 1.0}]
    md = write_report(_crossing_data(), tmp_path / "a")["report.md"].read_text()
    section = md.split("## Early epochs against the last")[1].split("##")[0]
    assert "| 1 | 6 | -1.00 | 0% |" in section and "| 2 | 6 | 1.00 | 100% |" in section
    assert "raise scheduler.grace_period" in section and "survivors" not in section
    # With the scheduler's rungs known, only they are compared, and the trials are survivors
    data = _crossing_data(stopped=True, rungs=[1])
    table, _, _ = rank_agreement(data)
    assert list(table["epoch"]) == [1]
    files = write_report(data, tmp_path / "b")
    assert "the survivors of its cuts" in files["report.md"].read_text()
    assert "rank_agreement.tex" in files
    # Too few completed trials to rank, or PBT (last scores of copied weights): no table
    assert rank_agreement(_hand_data()) is None
    pbt = _crossing_data(scheduler="pbt")  # as the report reads it from the saved spec
    assert rank_agreement(pbt) is None
    assert [share_name(1 / f) for f in (2, 3, 2.5)] == ["half", "third", "1/2.5"]


def test_write_report_from_hand_built_trials(tmp_path: Path) -> None:
    data = _hand_data()
    files = write_report(data, tmp_path / "out", top=3, max_params=1000)
    assert set(files) == {
        "report.md", "report.html", "trials.csv", "history.csv", "leaderboard.tex",
        "leaderboard_budget.tex", "factor_optimizer.tex", "factor_lr.tex", "pareto.tex",
        "compute.tex", "cost.png", "parallel.png"}  # no history: no curves; 4 completed
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in files.values())
    for name in ("cost.png", "parallel.png"):
        assert files[name].read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name
    md = files["report.md"].read_text()
    board = md.split("## Leaderboard")[1].split("##")[0]
    assert [line.split(" | ")[0] for line in board.splitlines() if line.startswith("| ")] == \
        ["| Trial", "| a", "| f", "| b"]  # top 3, best first
    within = md.split("## Best under budget (params <= 1K)")[1].split("##")[0]
    assert "*4 of 6 trials fit params <= 1K; completed trials first" in within  # top 3 shown
    assert "| d | sgd |" in within and "| f |" not in within  # f has 5000 params
    assert "Best trial a: val acc 90.00 %" in md and "| Saved by early stopping | 13.3% |" in md
    assert "Hyperparameter importance (PED-ANOVA) skipped: 4 completed trial(s)" in md
    page = files["report.html"].read_text()
    assert page.count("src='data:image/png;base64,") == 2
    assert files["leaderboard.tex"].read_text().count(r"\\") == 1 + 3  # header and 3 rows
    csv = pd.read_csv(files["trials.csv"])
    assert list(csv["trial_id"]) == ["a", "f", "b", "d", "c", "e"]
    empty = ["best_val_loss", "best_epoch", "test_loss", "test_top3", "test_precision",
             "test_recall", "test_f1"]  # no trial has one: left out
    assert list(csv.columns) == [c for c in data.trials.columns if c not in empty]


def test_the_mlflow_description_holds_the_best_rows_that_fit() -> None:
    from hpsearch.search.tracking.summary import summary_markdown

    small = summary_markdown(_hand_data())
    assert "(best" not in small and small.count("\n| ") == 1 + 6  # header and every trial
    rows = [_trial(f"t{i:04d}", "adam", 1e-3, i / 5000) for i in range(5000)]
    data = SweepData.from_rows("big", rows, spec=parse_spec(_SPEC), meta={"max_epochs": 3})
    text = summary_markdown(data, limit=8000)
    shown = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| t")]
    assert len(text) <= 8000 and f"(best {len(shown)} of 5000 trials)" in text
    assert shown[:2] == ["| t4999", "| t4998"] and len(shown) > 20
    row = next(line for line in text.splitlines() if line.startswith("| t4999"))
    assert len(text) + len(row) + 1 > 8000  # one row more would not fit


def test_the_importance_study_spans_the_spec_distributions() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from hpsearch.search.report.study import importance_study

    found = importance_study(_many_data())
    assert not isinstance(found, str)
    study, keys = found
    assert keys == ["optimizer", "lr"] and len(study.trials) == 12  # completed trials only
    assert study.trials[0].distributions == {
        "optimizer": CategoricalDistribution(["sgd", "adam"]),
        "lr": FloatDistribution(1e-4, 1.0, log=True)}  # the spec's loguniform, not the values'
    assert study.best_trial.params == {"optimizer": "sgd",
                                       "lr": pytest.approx(10 ** (-3 + 20 / 12))}


def test_optuna_plots_leave_no_figure_or_style_behind() -> None:
    import matplotlib
    from matplotlib import pyplot as plt

    from hpsearch.search.report.plots import plot_importances, plot_parallel

    before = dict(matplotlib.rcParams)
    data = _many_data()
    assert plot_parallel(data) is not None and plot_importances(data) is not None
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == before  # Optuna's ggplot style stays in its plot
    few = SweepData.from_rows("few", [_trial("a", "adam", 1e-3, 0.9)])
    assert plot_parallel(few) is None and plot_importances(few) is None


# --------------------------------------------------------------------------- a kept spec

# Nine levels of nine aliases each: ~400 bytes that expand to 9**9 strings.
LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


@pytest.mark.parametrize("text, phrase", [
    (LAUGHS, f"more than {MAX_VALUES:,} values with aliases expanded"),
    ("name: &n [x, *n]\n", f"more than {MAX_VALUES:,} values"),
    ("# padding\n" * (MAX_BYTES // 10 + 1), f"larger than {MAX_BYTES // 1024} KiB"),
    ("name: \x1b[2Jx\n", "not UTF-8 text (byte 0x1b at offset 6)"),
    ("name: [x\n", "exp/spec.yaml:2:1: invalid YAML"),
], ids=["billion-laughs", "self-alias", "too-large", "escape", "syntax"])
def test_a_kept_spec_is_read_within_the_spec_bounds(text: str, phrase: str) -> None:
    began = time.monotonic()
    with pytest.raises(UserError) as info:
        parse_yaml(text, "exp/spec.yaml")
    message = str(info.value)
    assert message.startswith("exp/spec.yaml") and phrase in message, message
    assert "\n" not in message and len(message) < 300, message
    # the report goes on without a spec it cannot read
    assert spec_from_yaml(text, "exp/spec.yaml") is None
    assert time.monotonic() - began < 5


def test_a_kept_spec_within_the_bounds_is_parsed() -> None:
    spec = spec_from_yaml(yaml.safe_dump(_SPEC, sort_keys=False), "exp/spec.yaml")
    assert spec is not None and spec.name == "hand"
    assert spec_from_yaml("", "exp/spec.yaml") is None
    assert spec_from_yaml("- not a mapping\n", "exp/spec.yaml") is None


def test_the_report_shows_the_final_model_apart(tmp_path: Path) -> None:
    golden_search = Path(shutil.copytree(GOLDEN / "golden_search", tmp_path / "golden_search"))
    final = {"trial_id": "4ee850c1", "epochs": 2, "train_samples": 600, "test_samples": 200,
             "dropped": {"train_limit": 200}, "metrics": {"test_top1": 0.975, "test_loss": 0.1},
             "params": 13286, "macs": 97536, "wall_seconds": 2.5,
             "mlflow": {"registered_model": "golden_search", "version": 3}}
    (golden_search / FINAL_FILE).write_text(json.dumps(final))
    data = from_ray_dir(golden_search)
    line = ("Final model (retrained on train+val, 2 epochs): test top-1 97.50 %, params 13.3K, "
            "MACs 97.5K")
    assert leaderboard_text(data).splitlines()[-1] == line
    files = write_report(data, tmp_path / "report")
    md = files["report.md"].read_text()
    assert "## Final model" in md and f"{line}. Trial 4ee850c1" in md
    assert "without train_limit" in md
    assert "| 4ee850c1 | 2 | 600 | 200 | 97.50 | 0.1 | 13.3K | 97.5K |" in md
    assert "golden_search v3" in md
    assert "Final model" in files["report.html"].read_text()
    assert "golden\\_search v3" in files["final.tex"].read_text()
    # the leaderboard and the search's scores are untouched by it
    assert md.index("## Leaderboard") < md.index("## Final model")
    assert "best completed trial is now" not in md
    # a final model of a trial that is no longer the best (the sweep was resumed): said so
    (golden_search / FINAL_FILE).write_text(json.dumps({**final, "trial_id": "061ff3b9"}))
    md = write_report(from_ray_dir(golden_search), tmp_path / "again")["report.md"].read_text()
    assert ("The best completed trial is now 4ee850c1: `hpsearch finalize golden_search` "
            "retrains it.") in md


# --------------------------------------------------------------------------- real sweeps


def _fixed(data_dir: Path, **kw: Any) -> dict[str, Any]:
    return {"dataset": "mnist", "data_dir": str(data_dir), "fc_width": 32, "device": "cpu",
            **kw}


def _run(root: Path, spec: dict[str, Any]) -> Path:
    from hpsearch.search.runner import run_sweep

    spec["storage"] = str(root / "runs")
    # sort_keys=False: MLflow's spec.yaml keeps the space order that hpsearch.json has
    outcome = run_sweep(parse_spec(spec), yaml.safe_dump(spec, sort_keys=False),
                        tracking_uri=f"sqlite:///{root}/mlflow.db", echo=lambda s: None)
    return outcome.run_dir


@pytest.fixture(scope="module")
def ofat_sweep(ray_local: None, tiny_mnist_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Baseline completes; lr 1e-6 stays at chance and ASHA stops it; lr 1e6 diverges;
    batches of one image fail (BatchNorm). One trial at a time, so ASHA's choice is fixed."""
    root = tmp_path_factory.mktemp("ofat")
    return _run(root, {
        "name": "ofat", "design": "ofat",
        "fixed": _fixed(tiny_mnist_dir, model="mlp", batchnorm=True, optimizer="sgd"),
        "baseline": {"lr": 0.05, "batch_size": 32},
        "space": {"lr": [0.05, 1.0e-6, 1.0e6], "batch_size": [32, 1]},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "budget": {"max_epochs": 2},
        "resources": {"cpu": 1, "max_concurrent": 1, "max_failures": 0}})


@pytest.fixture(scope="module")
def grid_sweep(ray_local: None, tiny_mnist_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 optimizers x 2 learning rates x 2 widths; the wide models break max_params."""
    root = tmp_path_factory.mktemp("grid")
    return _run(root, {
        "name": "grid",
        "fixed": _fixed(tiny_mnist_dir, model="cnn", batch_size=32, train_limit=200),
        "space": {"optimizer": ["adam", "sgd"], "lr": [0.001, 0.01],
                  "channels": [[4, 8], [64, 128]]},
        "search": {"algorithm": "grid"}, "scheduler": {"name": "none"},
        "constraints": {"max_params": 20000},
        "budget": {"max_epochs": 1}, "resources": {"cpu": 1}})


def _results(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trial's rows from Tune's own result.json, by trial id (folder ``trial_<id>``)."""
    return {d.name.removeprefix("trial_"): [json.loads(line) for line in
                                            (d / "result.json").read_text().splitlines()]
            for d in sorted(run_dir.glob("trial_*"))}


def _assert_matches_result_files(data: SweepData, run_dir: Path) -> None:
    results = _results(run_dir)
    assert sorted(data.trials["trial_id"]) == sorted(results)
    for _, t in data.trials.iterrows():
        rows = results[t["trial_id"]]
        trained = [r for r in rows if r["epoch"] >= 1]
        assert t["epochs_run"] == (trained[-1]["epoch"] if trained else 0)
        if t["status"] in ("rejected", "failed"):
            assert math.isnan(t["best_val_top1"])
        else:
            assert t["best_val_top1"] == max(r["val_top1"] for r in trained)
            losses = [r["val_loss"] for r in trained if math.isfinite(r["val_loss"])]
            assert t["best_val_loss"] == min(losses) if losses else math.isnan(t["best_val_loss"])
        if rows:
            assert t["params"] == rows[-1]["params"] and t["macs"] == rows[-1]["macs"]
        if t["status"] == "completed":
            assert t["test_top1"] == rows[-1]["test_top1"]
        history = data.history[data.history["trial_id"] == t["trial_id"]]
        assert list(history["epoch"]) == [r["epoch"] for r in trained]
        assert history["val_loss"].tolist() == pytest.approx(
            [r["val_loss"] for r in trained], nan_ok=True)


@pytest.mark.integration
def test_ofat_report_labels_each_variation_with_its_delta(ofat_sweep: Path) -> None:
    data = from_ray_dir(ofat_sweep)
    _assert_matches_result_files(data, ofat_sweep)
    results = _results(ofat_sweep)
    status = {t: s for t, s in zip(data.trials["trial_id"], data.trials["status"], strict=True)}
    table = ofat_table(data)
    assert table is not None
    base_label = "lr=0.05, batch_size=32"
    assert [(r.setting, r.value) for r in table.itertuples()] == [
        ("baseline", base_label), ("lr", "1e-06"), ("lr", "1e+06"), ("batch_size", "1")]
    by = table.set_index("value")
    assert [status[by.loc[v, "trial_id"]] for v in (base_label, "1e-06", "1e+06", "1")] == \
        ["completed", "stopped_early", "diverged", "failed"]
    base = max(r["val_top1"] for r in results[by.loc[base_label, "trial_id"]])
    for value in ("1e-06", "1e+06"):
        best = max(r["val_top1"] for r in results[by.loc[value, "trial_id"]])
        assert by.loc[value, "best"] == best
        assert by.loc[value, "delta"] == pytest.approx(best - base)
    assert by.loc[base_label, "delta"] == 0
    assert math.isnan(by.loc["1", "delta"])
    failed = data.trials.set_index("trial_id").loc[by.loc["1", "trial_id"]]
    assert "Expected more than 1 value per channel" in failed["error"]

    board = leaderboard(data)
    assert len(board) == 4 and list(board["Trial"])[0] == by.loc[base_label, "trial_id"]
    assert sorted(board["Status"]) == ["completed", "diverged", "failed", "stopped at epoch 1"]
    assert list(board["Batch size"]) == ["32", "32", "32", "1"]  # the failed one is last
    s = compute_summary(data)
    assert {k: n for k, n in s["counts"].items() if n} == {
        "completed": 1, "stopped_early": 1, "diverged": 1, "failed": 1}
    assert s["trial_epochs"] == 2 + 1 + 1 + 0 and s["full_budget_epochs"] == 4 * 2


@pytest.mark.integration
def test_grid_report_tables_and_files(grid_sweep: Path, tmp_path: Path) -> None:
    data = from_ray_dir(grid_sweep)
    _assert_matches_result_files(data, grid_sweep)
    results = _results(grid_sweep)
    trials = data.trials.set_index("trial_id")
    wide = trials[trials["channels"] == (64, 128)]
    assert len(trials) == 8 and len(wide) == 4
    assert set(wide["status"]) == {"rejected"} and set(wide["epochs_run"]) == {0}
    assert all(r.startswith("params ") and "> max_params 20,000" in r
               for r in wide["rejected_reason"])
    assert set(trials[trials["channels"] == (4, 8)]["status"]) == {"completed"}

    board = leaderboard(data)
    assert len(board) == 8 and list(board.columns) == [
        "Trial", "Optimizer", "Learning rate", "Channels", "Params", "MACs", "Val acc (%)",
        "Test acc (%)", "Epochs run", "Status"]  # model and batch size are fixed
    assert list(board["Status"][4:]) == ["rejected"] * 4  # unscored last
    for _, row in board.iterrows():
        rows = results[row["Trial"]]
        assert row["Params"] == format_params(rows[-1]["params"])
        if row["Status"] == "completed":
            assert row["Val acc (%)"] == f"{100 * rows[-1]['val_top1']:.2f}"
            assert row["Test acc (%)"] == f"{100 * rows[-1]['test_top1']:.2f}"
    assert list(leaderboard(data, top=3)["Trial"]) == list(board["Trial"][:3])
    assert len(leaderboard(data, max_params=20000)) == 4

    tables = factor_tables(data)
    assert list(tables) == ["optimizer", "lr", "channels"]
    opt = tables["optimizer"].set_index("value")
    adam = [max(r["val_top1"] for r in rows) for rows in results.values()
            if rows[0]["config"]["optimizer"] == "adam" and rows[-1]["status"] == "completed"]
    assert (opt.loc["adam", "trials"], opt.loc["adam", "completed"]) == (4, 2)
    assert opt.loc["adam", "best"] == max(adam)
    assert opt.loc["adam", "mean"] == pytest.approx(sum(adam) / len(adam))
    assert list(tables["channels"]["value"]) == ["[4, 8]", "[64, 128]"]
    assert ofat_table(data) is None

    files = write_report(data, tmp_path / "grid", max_params=20000)
    for name in ("report.md", "report.html", "trials.csv", "history.csv", "leaderboard.tex",
                 "factor_optimizer.tex", "pareto.tex", "compute.tex", "curves.png",
                 "confusion.png", "parallel.png", "cost.png"):
        assert files[name].is_file() and files[name].stat().st_size > 0, name
    page = files["report.html"].read_text()
    assert page.count("src='data:image/png;base64,") >= 4
    assert "src='http" not in page and ".png'" not in page  # nothing outside the file
    assert "\\begin{tabular}" in files["leaderboard.tex"].read_text()
    csv = pd.read_csv(files["trials.csv"])
    assert len(csv) == 8 and {"trial_id", "status", "lr", "best_val_top1"} <= set(csv.columns)
    md = files["report.md"].read_text()
    assert "## Leaderboard" in md and "![" in md and data.meta["git_commit"] in md


@pytest.mark.integration
@pytest.mark.parametrize("sweep", ["ofat_sweep", "grid_sweep"])
def test_mlflow_and_ray_files_give_the_same_tables(sweep: str,
                                                   request: pytest.FixtureRequest) -> None:
    run_dir: Path = request.getfixturevalue(sweep)
    from_ray = from_ray_dir(run_dir)
    uri = f"sqlite:///{run_dir.parent.parent}/mlflow.db"
    from_ml = from_mlflow(run_dir.name, tracking_uri=uri)
    pd.testing.assert_frame_equal(from_ray.trials, from_ml.trials)
    pd.testing.assert_frame_equal(from_ray.history, from_ml.history)
    pd.testing.assert_frame_equal(leaderboard(from_ray), leaderboard(from_ml))
    assert from_ray.confusion == from_ml.confusion is not None
    assert from_ray.confusion_trial == from_ml.confusion_trial
    assert from_ray.meta["split_sizes"] == from_ml.meta["split_sizes"]
    assert from_ray.confusion_classes is not None and len(from_ray.confusion_classes) == 10
    # MLflow holds the names only where confusion.csv's header carries them
    assert from_ml.confusion_classes in (None, from_ray.confusion_classes)
    assert from_ray.spec == from_ml.spec
    # the Reproducibility section's driver host: the driver file's, the parent run's tag
    assert from_ray.meta["sweep_host"] == from_ml.meta["sweep_host"] == socket.gethostname()
    assert from_ml.meta["source"] == "mlflow" and from_ray.meta["source"] == "ray"


@pytest.mark.integration
def test_load_trials_finds_a_sweep_by_name_path_or_experiment(grid_sweep: Path) -> None:
    storage = str(grid_sweep.parent)
    uri = f"sqlite:///{grid_sweep.parent.parent}/mlflow.db"
    by_name = load_trials("grid", storage=storage)
    by_path = load_trials(str(grid_sweep))
    by_experiment = load_trials("grid", storage=str(grid_sweep / "nowhere"), tracking_uri=uri)
    assert by_name.meta["source"] == by_path.meta["source"] == "ray"
    assert by_experiment.meta["source"] == "mlflow"
    text = leaderboard_text(by_name, top=2)
    assert text.splitlines()[0] == "sweep 'grid': 8 trials (4 completed, 4 rejected)"
    assert len(text.splitlines()) == 2 + 2
    with pytest.raises(UserError, match="sweeps there: grid"):
        load_trials("gird", storage=storage, tracking_uri=uri)

"""The report written out: Markdown, a self-contained HTML page, one LaTeX table per table,
CSVs and PNGs, built once from the tables and plots of a :class:`~search.report.data.SweepData`
(the document itself and its formats: :mod:`search.report.markup`)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hpsearch.search.report import notes
from hpsearch.search.report.data import SweepData
from hpsearch.search.report.formats import (
    DASH,
    budget_text,
    fmt_metric,
    fmt_value,
    format_macs,
    format_params,
    is_accuracy,
    metric_name,
    metric_title,
    missing,
    setting_title,
)
from hpsearch.search.report.lineage import LINEAGE_CAPTION, lineage_table
from hpsearch.search.report.machine import HOST, LOCAL, MACHINE_SETTINGS, without_paths
from hpsearch.search.report.markup import Doc, latex_table
from hpsearch.search.report.plots import (
    CURVES,
    curve_metrics,
    plot_confusion,
    plot_cost,
    plot_curves,
    plot_importances,
    plot_parallel,
)
from hpsearch.search.report.study import param_importances
from hpsearch.search.report.tables import (
    compute_summary,
    compute_table,
    cost_table,
    factor_tables,
    final_line,
    final_table,
    fixed_settings,
    heading_test_acc,
    leaderboard,
    ofat_table,
    rank_agreement,
    rung_columns,
    table_rungs,
)
from hpsearch.trainables.vocab import Status

__all__ = ["write_report"]


def _machine() -> dict[str, Any]:
    """The machine this report is made on (usually the sweep's driver)."""
    info: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(),
                            "python": platform.python_version(), "cpus": os.cpu_count()}
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True)
            gpus = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        except (OSError, subprocess.SubprocessError):
            gpus = []
    info["gpus"] = gpus
    return info


def _factor_display(data: SweepData, key: str, table: pd.DataFrame) -> pd.DataFrame:
    metric = data.objective[0]
    title = metric_title(metric).lower()
    out = pd.DataFrame({
        setting_title(key): table["value"], "Trials": table["trials"],
        "Completed": table["completed"],
        f"Best {title}": table["best"].map(lambda v: fmt_metric(metric, v)),
        f"Mean {title}": table["mean"].map(lambda v: fmt_metric(metric, v))})
    unit = " (%)" if is_accuracy(metric) else ""
    for epoch in table_rungs(data, table):
        reached, mean = rung_columns(epoch)
        out[f"Reached epoch {epoch}"] = table[reached]
        out[f"Mean {metric_name(metric).lower()} at epoch {epoch}{unit}"] = \
            table[mean].map(lambda v: fmt_metric(metric, v))
    return out


def _ofat_display(data: SweepData, table: pd.DataFrame) -> pd.DataFrame:
    metric = data.objective[0]
    acc = is_accuracy(metric)

    def delta(v: Any) -> str:
        if missing(v):
            return DASH
        return f"{100 * v:+.2f} pp" if acc else f"{v:+.4g}"

    return _without_empty(data, pd.DataFrame({
        "Setting": table["setting"], "Value": table["value"],
        "Trial": table["trial_id"].map(lambda v: DASH if missing(v) else v),
        metric_title(metric): table["best"].map(lambda v: fmt_metric(metric, v)),
        "Δ vs baseline": table["delta"].map(delta),
        heading_test_acc(data): table["test_top1"].map(lambda v: fmt_metric("test_top1", v)),
        "Status": table["status"]}), {heading_test_acc(data): "test_top1"})


def _cost_display(data: SweepData, table: pd.DataFrame, budgeted: bool) -> pd.DataFrame:
    metric = data.objective[0]
    out = pd.DataFrame({
        "Trial": table["trial_id"], "Params": table["params"].map(format_params),
        "MACs": table["macs"].map(format_macs),
        metric_title(metric): table[data.score_column].map(lambda v: fmt_metric(metric, v)),
        heading_test_acc(data): table["test_top1"].map(lambda v: fmt_metric("test_top1", v))})
    if budgeted:
        out["Within budget"] = table["fits"].map({True: "yes", False: "no"})
    return _without_empty(data, out, {"Params": "params", "MACs": "macs",
                                      heading_test_acc(data): "test_top1"})


def _without_empty(data: SweepData, frame: pd.DataFrame,
                   columns: dict[str, str]) -> pd.DataFrame:
    """``frame`` without those of its metric ``columns`` (title -> trials column) that no
    trial has a value in."""
    return frame.drop(columns=[t for t, c in columns.items() if not data.has_values(c)])


def write_report(data: SweepData, out_dir: Path, *, top: int | None = None,
                 max_params: int | None = None, max_macs: int | None = None,
                 ) -> dict[str, Path]:
    """Write ``report.md``, a self-contained ``report.html``, ``trials.csv``,
    ``history.csv``, one ``.tex`` per table and the plots' PNGs into ``out_dir``.

    Returns:
        File name -> path of everything written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = _build(data, top=top, max_params=max_params, max_macs=max_macs)
    files: dict[str, Path] = {}

    def put(name: str, content: str | bytes) -> None:
        path = out_dir / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        files[name] = path

    put("trials.csv", _trials_csv(data))
    put("history.csv", data.history.to_csv(index=False))
    for name, frame in doc.tables.items():
        put(f"{name}.tex", latex_table(frame))
    for name, png in doc.images.items():
        put(f"{name}.png", png)
    put("report.md", doc.markdown())
    put("report.html", doc.html())
    return files


def _trials_csv(data: SweepData) -> str:
    """``trials.csv``: the trials frame without machine paths (:mod:`.machine`) and without
    the metric columns no trial has a value in (a plugin trainable's: no accuracy, params or
    MACs), lists as JSON (as in MLflow's params)."""
    empty = [c for c in data.metric_columns if not data.has_values(c)]
    trials = data.trials.drop(columns=[c for c in (*MACHINE_SETTINGS, *empty) if c in data.trials])
    for column in trials.columns:
        if trials[column].map(lambda v: isinstance(v, tuple | str)).any():
            trials[column] = trials[column].map(
                lambda v: json.dumps(list(v)) if isinstance(v, tuple) else without_paths(v))
    return trials.to_csv(index=False)


def _final_section(doc: Doc, data: SweepData) -> None:
    """The final model (``hpsearch finalize``), apart from the search's val scores."""
    table, line = final_table(data), final_line(data)
    if table is None or line is None:
        return
    doc.heading("Final model")
    f = data.final or {}
    dropped = f.get("dropped") or {}
    without = f" and without {' and '.join(dropped)}" if dropped else ""
    text = (f"{line}. Trial {f.get('trial_id')}, the best completed trial, trained again with "
            f"its settings and seed on the whole training split (val_fraction 0: train+val)"
            f"{without}, then tested once on the whole test set. The leaderboard's scores are the "
            "search's: trials trained without the val split and picked by it.")
    done = data.completed[data.completed[data.score_column].notna()]
    if len(done) and done["trial_id"].iloc[0] != f.get("trial_id"):
        text += (f" The best completed trial is now {done['trial_id'].iloc[0]}: `hpsearch "
                 f"finalize {data.name}` retrains it.")
    doc.text(text)
    doc.table("final", table, "the final model; MLflow model: its registered name and version")


def _best_line(data: SweepData, best: dict[str, Any]) -> str:
    """The best trial in one sentence: its score, its own metrics, and its test accuracy and
    cost where the trials report them."""
    metric = data.objective[0]
    first = data.trials.iloc[0]
    stopped = "" if first["status"] == Status.COMPLETED else \
        " (no trial completed: this one's score is from fewer epochs)"
    values = [_metric_text(metric, best["score"])]
    values += [_metric_text(m, first[m]) for m in data.own_metrics if m != metric]
    if data.has_values("test_top1"):
        values.append(_metric_text("test_top1", best["test_top1"]))
    if data.has_values("params"):
        values.append(f"{format_params(best['params'])} params")
    if data.has_values("macs"):
        values.append(f"{format_macs(best['macs'])} MACs")
    settings = ", ".join(f"{setting_title(k).lower()} {fmt_value(k, v)}"
                         for k, v in best["config"].items())
    return (f"Best trial {best['trial_id']}{stopped}: {', '.join(values)}"
            f"{' (' + settings + ')' if settings else ''}.")


def _metric_text(metric: str, value: Any) -> str:
    """``val acc 96.67 %``, ``mse 0.0012``."""
    unit = " %" if is_accuracy(metric) else ""
    return f"{metric_name(metric).lower()} {fmt_metric(metric, value)}{unit}"


def _cost_section(doc: Doc, data: SweepData, *, max_params: int | None,
                  max_macs: int | None) -> None:
    """Score against cost: the Pareto front and its plot; nothing where no trial reported a
    cost (a plugin trainable's own training function)."""
    if not (data.has_values("params") or data.has_values("macs")):
        return
    doc.heading("Cost")
    cost = cost_table(data, max_params=max_params, max_macs=max_macs)
    if cost.empty:
        doc.text("No completed trial with a known cost.")
        return
    doc.table("pareto", _cost_display(data, cost, bool(budget_text(max_params, max_macs))),
              "Pareto-optimal completed trials: no other completed trial scores better "
              "with fewer params and MACs; trials stopped early are left out (their scores "
              "are from fewer epochs)")
    doc.image("cost", plot_cost(data, max_params=max_params, max_macs=max_macs),
              "score vs parameters and vs MACs per image, completed trials only; red: "
              "Pareto front")


def _agreement_section(doc: Doc, data: SweepData) -> None:
    """Whether early epochs ranked the trials as the last did: the evidence for a scheduler's
    first cut (its grace period)."""
    found = rank_agreement(data)
    if found is None:
        return
    table, last, share = found
    part = notes.share_name(share)
    doc.heading("Early epochs against the last")
    doc.table("rank_agreement", pd.DataFrame({
        "Epoch": table["epoch"], "Trials": table["trials"],
        f"Rank correlation with epoch {last}": table["spearman"].map(
            lambda v: DASH if missing(v) else f"{v:.2f}"),
        f"Best {part} at epoch {last} also best {part} here": table["kept"].map(
            lambda v: f"{100 * v:.0f}%")}), notes.agreement_caption(data, last, part))


def _curves_text(data: SweepData) -> str:
    """What the learning curves show: ``train vs val loss``, or the trainable's own metrics."""
    names = curve_metrics(data)
    if names == ["train_loss", "val_loss"]:
        return "train vs val loss"
    return " and ".join(metric_name(m).lower() for m in names) + " per epoch"


def _build(data: SweepData, *, top: int | None, max_params: int | None,
           max_macs: int | None) -> Doc:
    spec = data.spec
    s = compute_summary(data)
    doc = Doc(f"Sweep report: {data.name}")
    if spec is not None and spec.description:
        doc.text(spec.description)
    metric, mode = data.objective
    doc.text(f"Objective: {mode}imise {metric}. Read from {notes.source(data)}.")
    if s["best"] is not None:
        doc.text(_best_line(data, s["best"]))
    fixed = fixed_settings(data)
    if fixed:
        doc.text("Fixed settings (the same in every trial): " + ", ".join(
            f"{setting_title(k).lower()} {fmt_value(k, v)}" for k, v in fixed.items()) + ".")
    line = notes.data_line(data)
    if line:
        doc.text(line)
    doc.heading("Definitions")
    doc.bullets(notes.definitions(data))

    doc.heading("Leaderboard")
    board = leaderboard(data, top=top)
    shown = f"top {len(board)} of {len(data.trials)}" if top is not None else \
        f"all {len(board)}"
    order = ("completed trials first, best first; then the other scored ones (stopped early "
             "or unfinished: scores from fewer epochs); then trials without a score")
    doc.table("leaderboard", board, f"{shown} trials: {order}. Only settings that varied "
                                    "are shown.")
    budget = budget_text(max_params, max_macs)
    if budget:
        within = leaderboard(data, max_params=max_params, max_macs=max_macs)
        doc.heading(f"Best under budget ({budget})")
        if within.empty:
            doc.text(f"No trial fits {budget}.")
        else:
            doc.table("leaderboard_budget", within.head(top or len(within)),
                      f"{len(within)} of {len(data.trials)} trials fit {budget}; {order}.")

    lineage = lineage_table(data)
    if lineage is not None:
        doc.heading("Lineage")
        doc.table("lineage", lineage, LINEAGE_CAPTION)
    _final_section(doc, data)
    ofat = ofat_table(data)
    if ofat is not None:
        doc.heading("One factor at a time")
        doc.table("ofat", _ofat_display(data, ofat),
                  "the baseline, then each change on its own; Δ: score minus the baseline's. "
                  "A change stopped early is scored at fewer epochs (its status says when), "
                  "so its Δ compares unequal training")
    factors = factor_tables(data)
    if factors:
        doc.heading("Factors")
        doc.text(notes.factor_caption(data))
        for key, table in factors.items():
            rungs = table_rungs(data, table)
            doc.table(f"factor_{key}", _factor_display(data, key, table),
                      f"{setting_title(key)}: completed trials compared at "
                      f"{notes.fidelity(data)}"
                      + (f"; all trials at {notes.epochs_text(rungs)}" if rungs else ""))

    _agreement_section(doc, data)
    _cost_section(doc, data, max_params=max_params, max_macs=max_macs)

    doc.heading("Compute")
    doc.table("compute", compute_table(s))

    doc.heading("Plots")
    doc.image("curves", plot_curves(data), f"{_curves_text(data)} of the top {CURVES} trials")
    doc.image("confusion", plot_confusion(data),
              f"test confusion matrix of the best completed trial ({data.confusion_trial})")
    doc.image("parallel", plot_parallel(data),
              "parallel coordinates of the varied settings, completed trials only; one line "
              "per trial, coloured by its score (yellow: best)")
    importances, note = param_importances(data)
    if importances is not None:
        doc.image("importance", plot_importances(data), f"hyperparameter importance: {note}")
    else:
        doc.text(note[:1].upper() + note[1:] + ".")

    doc.heading("Reproducibility")
    meta = data.meta
    machine = _machine()
    nodes = data.trials["node"].dropna().value_counts()
    seeds = {k: sorted({fmt_value(k, v) for v in data.trials[k].dropna()})
             for k in ("seed", "split_seed") if k in data.trials.columns}
    search_seed = spec.search.seed if spec is not None else None
    lines = [
        f"git commit: {meta.get('git_commit') or 'unknown'}",
        f"sweep created: {meta.get('created') or 'unknown'}",
        f"search seed: {search_seed}; trial seeds: "
        f"{', '.join(seeds.get('seed', [])) or '0 (default)'}; data split seeds: "
        f"{', '.join(seeds.get('split_seed', [])) or '23 (default)'}",
        f"resources per trial: {meta.get('cpu_per_trial')} CPU, "
        f"{meta.get('gpu_per_trial')} GPU",
        f"sweep driver: {meta.get('sweep_host') or 'not recorded'}; trial nodes: "
        f"{', '.join(f'{n} ({c} trials)' for n, c in nodes.items()) or 'unknown'}",
        f"report machine: {machine['host']}, {machine['platform']}, Python "
        f"{machine['python']}, {machine['cpus']} CPUs, GPUs: "
        f"{', '.join(machine['gpus']) or 'none'}",
        f"MLflow: experiment {meta.get('experiment')}{notes.server(meta.get('tracking_uri'))}",
        f"report written: {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S%z')}",
    ]
    doc.code("\n".join(lines))
    spec_yaml = meta.get("spec_yaml")
    if not spec_yaml and spec is not None:
        import yaml

        spec_yaml = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    if spec_yaml:
        doc.text(f"The sweep spec (local paths as {LOCAL}/ and their last part, server hosts "
                 f"as {HOST}):")
        doc.code(without_paths(spec_yaml))
    return doc

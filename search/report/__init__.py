"""A finished (or running) sweep as a lab report: tables (md/html/csv/tex) and plots.

One sweep is read either from Ray's files (``<storage>/<name>/``: each trial's ``result.json``
and ``params.json``, Tune's experiment state, ``hpsearch.json``) or from MLflow (the sweep's
parent run and its nested trial runs). Both give a :class:`SweepData` with the same columns, so
every table and plot is computed once, from it. What a plugin trainable reports of its own is
read from the results too, so a report needs no plugin code; a table shows only the metric
columns some trial has a value in.

* leaderboard: one row per trial, best first, only the settings that vary (or always matter);
* factor tables: each searched setting's values with trial count, best and mean score; for
  ``design: ofat``, the baseline and each one-factor change with its delta;
* cost: score against params and MACs with the Pareto front, the best model under a budget;
* compute: trial-epochs against a full-budget run (ASHA's savings), wall time, CPU/GPU-hours;
* plots: learning curves, confusion matrix, parallel coordinates, hyperparameter importance.

Rooms: :mod:`.load` (Ray | MLflow -> :class:`SweepData`, defined in :mod:`.data`: Ray's files read
by :mod:`.ray_files`, MLflow's runs by :mod:`.mlflow_runs`, both assembled by :mod:`.assemble`, the
spec the sweep kept read back by :mod:`.saved_spec`), :mod:`.tables`, :mod:`.study` (the trials as
an Optuna study: importances), :mod:`.plots`, :mod:`.render` (md/html/tex/csv files);
:mod:`.formats` writes values as table cells, :mod:`.notes` the words around them (definitions,
comparison method), :mod:`.machine` keeps the sweep's machine out of them (local paths as
``<local>/`` and their last part, hosts as ``<host>``). Metric names, statuses and the accuracies'
definitions are :mod:`trainables.vocab`'s.

Trials are compared at equal fidelity: means, bests, the Pareto front and importance use the
completed trials only (every epoch run); where ASHA stopped trials, factor tables add each
value's mean score at each rung where it stopped one, over every trial that got that far.
"""

from __future__ import annotations

from hpsearch.search.report.data import SweepData
from hpsearch.search.report.formats import format_macs, format_params, parse_count
from hpsearch.search.report.load import from_mlflow, from_ray_dir, load_trials
from hpsearch.search.report.markup import latex_table
from hpsearch.search.report.render import write_report
from hpsearch.search.report.study import param_importances
from hpsearch.search.report.tables import (
    compute_summary,
    cost_table,
    factor_tables,
    leaderboard,
    leaderboard_text,
    ofat_table,
    pareto_front,
)
from hpsearch.trainables.vocab import FINAL_METRICS, HISTORY_METRICS

__all__ = [
    "FINAL_METRICS",
    "HISTORY_METRICS",
    "SweepData",
    "compute_summary",
    "cost_table",
    "factor_tables",
    "format_macs",
    "format_params",
    "from_mlflow",
    "from_ray_dir",
    "latex_table",
    "leaderboard",
    "leaderboard_text",
    "load_trials",
    "ofat_table",
    "param_importances",
    "parse_count",
    "pareto_front",
    "write_report",
]

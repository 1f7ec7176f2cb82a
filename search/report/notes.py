"""What the report says about its numbers, in words: where they were read from, the data and
its split sizes, what each column means (:data:`trainables.vocab.SCORE_DEFINITIONS`) and how
the tables compare trials. (Machine paths are kept out by :mod:`.machine`.)"""

from __future__ import annotations

from hpsearch.search.report.data import SweepData
from hpsearch.search.report.formats import metric_name
from hpsearch.search.report.tables import eval_limit, fixed_settings, heading_test_acc
from hpsearch.search.spec import Scheduler
from hpsearch.trainables.vocab import SCORE_DEFINITIONS, Status, ended_with_sweep

__all__ = ["agreement_caption", "data_line", "definitions", "epochs_text", "factor_caption",
           "fidelity", "server", "share_name", "source"]


def factor_caption(data: SweepData) -> str:
    """How the factor tables compare trials: at one fidelity per column group."""
    epochs = data.meta.get("max_epochs")
    full = f"all {epochs:g} epochs" if epochs else "every epoch"
    text = (f"Trials: how many had this value. Completed: how many of them ran {full}; best "
            f"and mean are over these only, so every score comes from the same number of "
            f"epochs")
    rungs = [e for e in data.rung_epochs if len(data.at_epoch(e))]
    n = str(rungs[0]) if len(rungs) == 1 else "N"
    if rungs:
        text += (f". Reached epoch {n}: trials that trained that far, however they ended, "
                 f"and their mean {metric_name(data.objective[0]).lower()} at epoch {n} ("
                 + ("an epoch" if len(rungs) == 1 else f"for each of {epochs_text(rungs)}, the "
                    "epochs") + " at which the scheduler stopped trials)")
    return text + "."


def share_name(share: float) -> str:
    """``half``, ``third``, ``quarter``, else ``1/N``: the part of the trials a cut keeps."""
    names = {2.0: "half", 3.0: "third", 4.0: "quarter"}
    return names.get(1 / share, f"1/{1 / share:g}") if share > 0 else "none"


def agreement_caption(data: SweepData, last: int, part: str) -> str:
    """How to read the rank agreement table, and what it cannot show."""
    metric = metric_name(data.objective[0]).lower()
    text = (f"Completed trials, each scored by its {metric} after the epoch on the left and "
            f"after epoch {last}. Rank correlation (Spearman): 1 when the earlier epoch ranks "
            f"them exactly as epoch {last} does, 0 when it tells nothing. The last column is "
            f"what a cut there keeping the best {part} would have kept of the trials that end "
            f"best. Low values: the curves cross, so an early cut there loses trials that "
            f"would have ended among the best (raise scheduler.grace_period)")
    if data.rung_epochs:
        text += (". Only the trials the scheduler let through ran every epoch, so these are "
                 "the survivors of its cuts, not a random sample")
    return text + "."


def epochs_text(epochs: list[int]) -> str:
    """``epoch 1``, ``epochs 1 and 3``, ``epochs 1, 3 and 9``."""
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    return f"epochs {', '.join(map(str, epochs[:-1]))} and {epochs[-1]}"


def source(data: SweepData) -> str:
    """Where the results were read from, without machine paths."""
    if data.meta.get("source") == "mlflow":
        return f"MLflow experiment '{data.meta.get('experiment')}'"
    return "Ray's result files"


def data_line(data: SweepData) -> str | None:
    """The dataset and how many images each split had (eval_limit: a subset of val/test)."""
    sizes = data.meta.get("split_sizes") or {}
    names = [f"{sizes[k]:,} {k}" for k in ("train", "val", "test") if k in sizes]
    dataset = fixed_settings(data).get("dataset")
    if not names and dataset is None:
        return None
    text = f"Data: {dataset or 'dataset not recorded'}"
    if names:
        text += f"; images per trial: {', '.join(names)}"
    limit = eval_limit(data)
    if limit is not None:
        text += (f". Val and test are subsets (eval_limit {limit:,}: the first {limit:,} "
                 "images of each), not the whole sets")
    return text + "."


def definitions(data: SweepData) -> list[str]:
    """What each column the tables show means; the accuracies as MLflow shows them too."""
    out = []
    metric, mode = data.objective
    if data.score_column == f"best_{metric}" != "best_val_top1":
        out.append(f"Best {metric_name(metric).lower()}: the "
                   f"{'highest' if mode == 'max' else 'lowest'} {metric} over the epochs the "
                   "trial ran; ranks the trials.")
    own = [m for m in data.own_metrics if m != metric and data.has_values(m)]
    if own:
        out.append(f"{', '.join(own)}: reported by the trainable itself; each after the last "
                   "epoch the trial ran (the value MLflow's runs table shows).")
    val = data.has_values("best_val_top1")
    if val:
        out.append(f"Val acc: {SCORE_DEFINITIONS['best_val_top1']}.")
    if data.has_values("test_top1"):
        out.append(f"{heading_test_acc(data).removesuffix(' (%)')}: {_test_definition(data)}.")
    if val:
        out.append(f"Last-epoch val acc: {SCORE_DEFINITIONS['val_top1']}; not a column here.")
    if data.has_values("params") or data.has_values("macs"):
        out.append("Params: trainable weights. MACs: multiply-accumulates for one image (K = "
                   "thousand, M = million, G = billion).")
    return [*out, statuses(data)]


def statuses(data: SweepData) -> str:
    """What the statuses shown mean, naming the sweep's scheduler (ASHA, when not known)."""
    name = data.meta.get("scheduler", "asha")
    text = "Completed: ran every epoch."
    if name == "pbt":
        text += (" Under population-based training a trial may train its later epochs on a "
                 "copy of another trial's weights (see Lineage); no trial is stopped early.")
    elif name != "none":
        text += (f" Stopped at epoch N: the scheduler ({Scheduler.LABELS.get(name, name)}) "
                 "ended it after epoch N, so its scores come from fewer epochs and are not "
                 "compared with completed trials'.")
    rungs = data.meta.get("rungs")
    stopped = data.trials.loc[data.trials["status"] == Status.STOPPED_EARLY, "stopped_epoch"]
    cut = [int(e) for e in stopped.dropna() if ended_with_sweep(e, rungs)]
    if any(e > 0 for e in cut):
        text += (" Ended at epoch N: still training when the sweep ended (its time limit, "
                 "target or a stop), after epoch N; its scores come from fewer epochs too.")
    if 0 in cut:
        text += (" Ended before epoch 1: it had started when the sweep ended, and has no "
                 "scores.")
    return text + " Rejected: over a cost limit, never trained."


def _test_definition(data: SweepData) -> str:
    test = SCORE_DEFINITIONS["test_top1"]
    limit = eval_limit(data)
    if limit is not None:
        test += f" (here a subset: the first {limit:,} test images, eval_limit)"
    return test


def server(uri: str | None) -> str:
    """`` at http://host:5000`` for a tracking server; nothing for a local file (a path)."""
    return f" at {uri}" if uri and uri.startswith(("http://", "https://")) else ""


def fidelity(data: SweepData) -> str:
    epochs = data.meta.get("max_epochs")
    return f"{epochs:g} epochs" if epochs else "full length"

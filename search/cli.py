"""``hpsearch``: train one config, run/resume/submit sweeps, list/status/stop them, sync to
MLflow, write reports, finalize a sweep's best model.

Heavy imports (torch, Ray, MLflow) happen inside the subcommands, so ``--help`` and input
errors answer at once. User mistakes print one line each and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hpsearch.search.messages import error_lines
from hpsearch.search.names import plain_name
from hpsearch.search.yamlio import load_yaml, parse_overrides, read_source
from hpsearch.trainables.config import BUILTIN_TRAINABLE, parse_trial_config
from hpsearch.trainables.errors import UserError, shown

__all__ = ["main"]


def _cmd_train(args: argparse.Namespace) -> int:
    values: dict[str, Any] = load_yaml(args.config) if args.config else {}
    values.update(parse_overrides(args.set or []))
    from hpsearch.search.spec import load_plugins

    # `plugins:` in the config file or --plugin: imported before the settings are read
    plugins = load_plugins(values.pop("plugins", None), args.config or "config")
    load_plugins(args.plugin or [], "--plugin")
    config = parse_trial_config(values)
    if config.trainable != BUILTIN_TRAINABLE:
        return _train_plugin(config, plugins + list(args.plugin or []))

    import torch  # noqa: F401  (heavy; only now that the config is valid)

    from hpsearch.trainables.fit import console_reporter, fit, pick_device

    device = pick_device(config.device)
    print(f"hpsearch train: {config.dataset} / {config.model} / {config.optimizer} "
          f"lr {config.lr:g} / batch {config.batch_size} / {config.epochs} epoch(s) on {device}")
    result = fit(config, console_reporter(config.epochs))
    m = result.metrics
    print(f"params {m['params']:,}  MACs/image {m['macs']:,}  status {result.status}")
    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(result.model.state_dict(), out / "model.pt")
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        (out / "history.json").write_text(json.dumps(result.history, indent=2))
        print(f"saved weights, config and history to {out}/")
    return 0 if result.status == "completed" else 1


def _train_plugin(config: Any, plugins: list[str]) -> int:
    """``hpsearch train`` of a plugin trainable: its reports, one line per epoch."""
    from hpsearch.trainables.plugins import run_trainable, trainable_metrics

    print(f"hpsearch train: trainable {config.trainable} / {config.epochs} epoch(s)")

    def report(metrics: dict[str, Any], make_state: Any) -> None:
        shown_ = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in metrics.items() if k not in ("epoch", "status"))
        print(f"Epoch [{metrics['epoch']}/{config.epochs}] {shown_}")

    status = run_trainable(config, report, None, list(trainable_metrics(config.trainable)))
    print(f"status {status}")
    return 0 if status == "completed" else 1


def _load_spec(path: str, overrides: list[str] | None) -> tuple[Any, str]:
    from hpsearch.search.spec import load_spec

    return load_spec(path, parse_overrides(overrides or [])), read_source(path)


def _cmd_sweep(args: argparse.Namespace) -> int:
    spec, text = _load_spec(args.spec, args.set)
    if args.check:
        from hpsearch.search.runner import check_sweep

        check_sweep(spec, args.address)
        print(f"{args.spec}: OK ({spec.name}): the spec, storage, data, resources and candidate "
              "configs pass every check a sweep makes before Ray starts")
        return 0
    from hpsearch.search.runner import run_sweep

    outcome = run_sweep(spec, text, address=args.address, tracking_uri=args.tracking_uri)
    return 0 if outcome.counts.get("failed", 0) < outcome.trials else 1


def _sweep_ref(value: str, command: str) -> str:
    """``value`` if it is a URI or the path of an existing folder; otherwise it is a sweep's
    name, joined under the storage root, so it must be a plain name."""
    from hpsearch.search.storage import is_uri

    path_like = "/" in value or "\\" in value
    if is_uri(value) or (path_like and Path(value).expanduser().is_dir()):
        return value
    return plain_name(value, f"{command} NAME")


def _cmd_resume(args: argparse.Namespace) -> int:
    from hpsearch.search.sweepdir import load_meta

    plain_name(args.name, "resume NAME")
    meta = load_meta(args.name, args.storage)  # a missing sweep: one line, before any import
    from hpsearch.search.runner import resume_sweep
    from hpsearch.search.spec import apply_overrides, parse_spec

    spec = _load_spec(args.spec, args.set)[0] if args.spec else parse_spec(
        apply_overrides(meta["spec"], parse_overrides(args.set)),
        source=f"resume {args.name} --set") if args.set else None
    outcome = resume_sweep(args.name, storage=args.storage, spec=spec, address=args.address)
    return 0 if outcome.counts.get("failed", 0) < outcome.trials else 1


def _cmd_submit(args: argparse.Namespace) -> int:
    spec, text = _load_spec(args.spec, args.set)
    if args.set:  # the job runs exactly what was validated here
        import yaml

        from hpsearch.search.spec import apply_overrides

        text = yaml.safe_dump(apply_overrides(load_yaml(args.spec),
                                              parse_overrides(args.set)), sort_keys=False)
    from hpsearch.search.submit import submit_sweep

    submit_sweep(text, spec, args.address, follow=args.follow)
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    from hpsearch.search.sweepdir import find_sweep
    from hpsearch.search.tracking import sync

    run_dir, meta = find_sweep(_sweep_ref(args.name, "sync"), args.storage)
    for key in ("name", "experiment"):  # a copied or edited hpsearch.json is user input too
        if meta.get(key) is not None:
            plain_name(meta[key], f"sync {args.name}: hpsearch.json {key}")
    uri = args.tracking_uri or meta["tracking_uri"]
    try:
        stats = sync(run_dir, meta["name"], tracking_uri=uri, experiment=meta.get("experiment"),
                     spec_yaml=meta.get("spec_yaml", ""))
    except Exception as err:  # noqa: BLE001 - MLflow down again: say so in one line
        raise UserError(f"sync {meta['name']}: MLflow at {uri} failed ({str(err)[:200]}); "
                        "nothing is lost, run sync again when it is up") from None
    print(f"synced '{meta['name']}' to {uri}: {stats.trials} trials, {stats.runs_created} runs "
          f"created, {stats.points_logged} metric points and {stats.artifacts_logged} "
          "artifacts added")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    uri, experiment = args.tracking_uri, None
    if args.name:
        from hpsearch.search.sweepdir import find_sweep

        meta = find_sweep(_sweep_ref(args.name, "ui"), args.storage)[1]
        uri = uri or meta["tracking_uri"]
        experiment = meta.get("experiment") or meta.get("name")
    from hpsearch.search.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(uri)
    if not uri.startswith(("sqlite:", "postgresql", "mysql", "file:")) and "://" in uri:
        from hpsearch.search.ui import experiment_link

        print(f"{uri} is a tracking server: open {experiment_link(uri, uri, experiment)}")
        return 0
    from hpsearch.search.ui import serve

    return serve(uri, host=args.host, port=args.port, experiment=experiment)


def _cmd_report(args: argparse.Namespace) -> int:
    from hpsearch.search.report import leaderboard_text, load_trials, parse_count, write_report

    limits = {}
    for key in ("max_params", "max_macs"):
        raw = getattr(args, key)
        try:
            limits[key] = parse_count(raw) if raw else None
        except ValueError:
            raise UserError(f"--{key.replace('_', '-')}: expected a count such as 1M, 250K or "
                            f"50000, but got {shown(raw)}") from None
    data = load_trials(_sweep_ref(args.name, "report"), storage=args.storage,
                       tracking_uri=args.tracking_uri)
    # the name may come from the sweep's hpsearch.json: it must not lead out of --out
    out = Path(args.out) / plain_name(data.name, f"report {args.name}: the sweep's name")
    files = write_report(data, out, top=args.top, **limits)
    print(leaderboard_text(data, top=args.top, **limits))
    print(f"report: {files['report.html']} (also report.md, trials.csv, *.tex, plots)")
    return 0


def _cmd_finalize(args: argparse.Namespace) -> int:
    from hpsearch.search.finalize import finalize

    record = finalize(_sweep_ref(args.name, "finalize"), storage=args.storage,
                      tracking_uri=args.tracking_uri, epochs=args.epochs,
                      model_name=args.model_name, device=args.device)
    return 0 if record is not None else 1


def _cmd_list(args: argparse.Namespace) -> int:
    from hpsearch.search.operate import list_json, list_sweeps, list_text, storage_root

    views = list_sweeps(args.storage)
    print(list_json(views) if args.json else list_text(views, storage_root(args.storage)))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from hpsearch.search.operate import follow_status, status_text

    name = plain_name(args.name, "status NAME")
    if args.follow:
        follow_status(name, args.storage, address=args.address)
    else:
        print(status_text(name, args.storage, address=args.address))
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from hpsearch.search.operate import stop_sweep

    stop_sweep(plain_name(args.name, "stop NAME"), args.storage, now=args.now,
               address=args.address)
    return 0


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, but got {shown(text)}")
    return value


_STORAGE_HELP = ("where sweeps are: a folder or a URI such as s3://bucket/runs "
                 "(default $HPSEARCH_STORAGE or ./runs)")
_JOB_API_HELP = "the cluster's dashboard / job API, e.g. http://127.0.0.1:8265"
_RECORDED_JOB_API_HELP = (f"{_JOB_API_HELP}, for a submitted sweep (default: the address it was "
                          "submitted to)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hpsearch")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``hpsearch`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="hpsearch",
        description="Hyperparameter search for PyTorch image classifiers "
                    "(Ray Tune + Optuna + ASHA + MLflow).")
    parser.add_argument("--version", action="version", version=f"hpsearch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="run one trial standalone (no Ray), one line per epoch")
    train.add_argument("config", nargs="?", help="trial config YAML (flat settings); "
                       "omitted: the defaults (Fashion-MNIST, default CNN, Adam)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a setting, e.g. --set lr=0.01 (repeatable)")
    train.add_argument("--save", metavar="DIR", help="write weights, config and history here")
    train.add_argument("--plugin", action="append", metavar="MODULE",
                       help="import this plugin module first (repeatable), e.g. my_lab.models; "
                            "or list them under `plugins:` in the config file")
    train.set_defaults(func=_cmd_train)

    sweep = sub.add_parser("sweep", help="run a whole hyperparameter sweep from a YAML spec")
    sweep.add_argument("spec", help="sweep spec YAML, e.g. studies/quickstart.yaml")
    sweep.add_argument("--address", help="an existing Ray cluster (e.g. auto, HOST:6379); "
                       "default: start Ray on this machine")
    sweep.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI"
                       " or sqlite:///mlflow.db)")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a spec value by dotted path, e.g. --set budget.trials=4")
    sweep.add_argument("--check", action="store_true",
                       help="run every check a sweep makes before Ray starts (spec, storage, "
                       "data, resources, candidate configs), then exit")
    sweep.set_defaults(func=_cmd_sweep)

    resume = sub.add_parser("resume", help="continue an interrupted sweep")
    resume.add_argument("name", help="the sweep's name")
    resume.add_argument("--storage", help=_STORAGE_HELP)
    resume.add_argument("--spec", help="the spec again, checked for incompatible changes")
    resume.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="change the saved spec where a running study allows it, e.g. "
                             "--set budget.trials=64 (a larger budget continues the same study)")
    resume.add_argument("--address", help="an existing Ray cluster")
    resume.set_defaults(func=_cmd_resume)

    submit = sub.add_parser("submit", help="send a sweep to a running Ray cluster as a Ray Job")
    submit.add_argument("spec", help="sweep spec YAML")
    submit.add_argument("--address", required=True, help=_JOB_API_HELP)
    submit.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a spec value by dotted path (sent with the job)")
    submit.add_argument("--follow", action="store_true", help="stream the job's logs until done")
    submit.set_defaults(func=_cmd_submit)

    sync = sub.add_parser("sync", help="replay a sweep's results into MLflow (idempotent)")
    sync.add_argument("name", help="the sweep's name, or the path of its folder")
    sync.add_argument("--storage", help=_STORAGE_HELP)
    sync.add_argument("--tracking-uri", help="another MLflow than the one the sweep used")
    sync.set_defaults(func=_cmd_sync)

    rep = sub.add_parser("report", help="write the report tables and plots of a sweep")
    rep.add_argument("name", help="a sweep name, a Ray results folder, or an MLflow experiment")
    rep.add_argument("--storage", help=_STORAGE_HELP)
    rep.add_argument("--tracking-uri", help="read from this MLflow (default: the sweep's)")
    rep.add_argument("--out", default="results", help="reports go to OUT/NAME/ (default results)")
    rep.add_argument("--top", type=int, help="leaderboard rows (default: all)")
    rep.add_argument("--max-params", help="best models under a budget, e.g. 1M")
    rep.add_argument("--max-macs", help="best models under a budget, e.g. 50M")
    rep.set_defaults(func=_cmd_report)

    fin = sub.add_parser("finalize", help="retrain a sweep's best trial on train+val, test it "
                         "once, register the model in MLflow")
    fin.add_argument("name", help="a sweep's name, or the path of its folder")
    fin.add_argument("--storage", help=_STORAGE_HELP)
    fin.add_argument("--tracking-uri", help="another MLflow than the one the sweep used")
    fin.add_argument("--epochs", type=_positive, metavar="N",
                     help="train N epochs (default: the best trial's)")
    fin.add_argument("--model-name", metavar="NAME",
                     help="the registered model's name (default: the sweep's name)")
    fin.add_argument("--device", help="train on auto, cpu, cuda or cuda:N (default: the best "
                     "trial's setting)")
    fin.set_defaults(func=_cmd_finalize)

    lst = sub.add_parser("list", help="the sweeps in a storage: state, trials, best, where")
    lst.add_argument("--storage", help=_STORAGE_HELP)
    lst.add_argument("--json", action="store_true", help="one JSON list, for scripts")
    lst.set_defaults(func=_cmd_list)

    status = sub.add_parser("status", help="a sweep's progress, running trials and links")
    status.add_argument("name", help="the sweep's name")
    status.add_argument("--storage", help=_STORAGE_HELP)
    status.add_argument("--follow", action="store_true",
                        help="keep printing progress until the sweep is no longer running")
    status.add_argument("--address", help=_RECORDED_JOB_API_HELP)
    status.set_defaults(func=_cmd_status)

    stop = sub.add_parser("stop", help="stop a running sweep; `hpsearch resume` continues it")
    stop.add_argument("name", help="the sweep's name")
    stop.add_argument("--storage", help=_STORAGE_HELP)
    stop.add_argument("--now", action="store_true",
                      help="stop at once (epochs in progress are dropped, finished ones kept) "
                      "instead of letting running trials finish their epoch")
    stop.add_argument("--address", help=_RECORDED_JOB_API_HELP + "; stops the job with --now")
    stop.set_defaults(func=_cmd_stop)

    ui = sub.add_parser("ui", help="start the MLflow UI on a sweep's tracking store")
    ui.add_argument("name", nargs="?", help="a sweep's name (default: ./mlflow.db)")
    ui.add_argument("--storage", help=_STORAGE_HELP)
    ui.add_argument("--tracking-uri", help="the store to show")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to serve on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")
    ui.set_defaults(func=_cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hpsearch`` command."""
    from hpsearch.search.console import quiet_start_up_notices

    args = build_parser().parse_args(argv)
    quiet_start_up_notices()
    try:
        return args.func(args)
    except UserError as err:
        for line in error_lines(str(err)):
            print(f"hpsearch: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hpsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

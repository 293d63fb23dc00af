"""`smescore <command>`: the nightly SME rescoring job and everything around it.

Heavy imports (TensorFlow, Beam) happen inside the commands, so `smescore --help` is instant and
TensorFlow's environment (smescore/runtime.py) is in place before it loads. The job commands take
their flags from the jobs' own declarations (beam_jobs/options.py); every command line goes through
smescore/flags.py, which refuses unknown, misspelt and repeated flags, and Beam's own flags
(--runner, --project, --temp_location, ...) pass through to Beam.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import json
import os
import re
import sys

import smescore
from smescore import flags, runtime
from smescore.errors import BadInput, GateBreached, UsageError


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


_progress = runtime.progress


def cmd_generate(args, beam_args) -> int:
    from synth.generate import CHUNK_FIRMS, InvoiceShift, generate
    shift = (InvoiceShift(args.shift_industry, args.shift_drop, args.shift_months)
             if args.shift_industry else None)
    summary = generate(args.out, firms=args.firms, months=args.months, end_date=args.end_date,
                       seed=args.seed, progress=_progress, shift=shift,
                       chunk_firms=args.chunk_firms or CHUNK_FIRMS)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_features(args, beam_args) -> int:
    from beam_jobs import build_features
    cfg = build_features.run(args.job_argv + beam_args, save_main_session=False)
    import pyarrow.parquet as pq
    print(json.dumps({"features": cfg.out, "firms": pq.read_metadata(cfg.out).num_rows,
                      "rejected_records": pq.read_metadata(cfg.rejected_out).num_rows,
                      "rejected_file": cfg.rejected_out}, indent=2))
    return 0


def cmd_train(args, beam_args) -> int:
    runtime.load_tensorflow(args.debug)
    from beam_jobs import train_job
    from models import network
    from models.train import TrainConfig
    try:        # values the network or the design refuse (--focal-alpha 1.5) are usage errors
        hp = network.HParams(loss=args.loss, focal_alpha=args.focal_alpha,
                             focal_gamma=args.focal_gamma, max_epochs=args.max_epochs,
                             patience=args.patience, seed=args.seed)
        cfg = TrainConfig(feeds=args.feeds or "", registry=args.registry, as_of=args.as_of,
                          hparams=hp, background_size=args.background_size,
                          n_shards=args.n_shards, calibration_folds=args.calibration_folds,
                          beam_args=tuple(beam_args))
    except ValueError as e:
        raise UsageError(f"train: {e}") from None
    source = None
    if args.feeds_dataset:             # the feed tables in BigQuery instead of a feeds folder
        from beam_jobs.options import BigQueryConfig
        from smescore import bigquery as bqlib
        if not (args.bq_project and args.risk_dataset):
            raise UsageError("train from BigQuery: --feeds-dataset needs --bq-project and "
                             "--risk-dataset (where the feed queries stage their rows)")
        bq = BigQueryConfig(args.bq_project, args.feeds_dataset, args.risk_dataset,
                            args.bq_location)
        source = train_job.bigquery_source(bq, args.as_of,
                                           bqlib.Connection(args.bq_project, args.bq_location))
    elif not args.feeds:
        raise UsageError("train: --feeds (or --feeds-dataset) is needed")
    if source is not None:
        cfg = dataclasses.replace(cfg, feeds=repr(source))
    version, card = train_job.train(cfg, progress=_progress, source=source)
    m = card["metrics"]
    print(json.dumps({"version": version, "auc": m["test"]["auc"], "ks": m["test"]["ks"],
                      "challenger_auc": m["challenger_logistic_regression"]["auc"],
                      "oracle_auc": card["oracle_auc"], "mean_pd": m["test"]["mean_pd"],
                      "default_rate": m["test"]["default_rate"]}, indent=2))
    return 0


def cmd_score(args, beam_args) -> int:
    runtime.load_tensorflow(args.debug)
    from beam_jobs import score_portfolio
    result = score_portfolio.run(args.job_argv + beam_args, save_main_session=False,
                                 progress=_progress)
    print(json.dumps(result, indent=2, default=str))
    if args.summary and args.warehouse:
        from smescore import report
        print(report.run_summary(args.warehouse, dt.date.fromisoformat(args.as_of)))
    return 0


def _dates(text: str) -> list[dt.date]:
    return [_date(d.strip()) for d in text.split(",") if d.strip()]


def cmd_validate(args, beam_args) -> int:
    from beam_jobs import walk_forward
    from models import validation
    from models.scorecard import ConfigError
    try:
        result = walk_forward.validate(args.registry, args.version, args.feeds, dates=args.dates,
                                       out_dir=args.out_dir, config=args.config,
                                       n_shards=args.n_shards, beam_args=beam_args,
                                       progress=_progress)
    except (validation.ValidationError, ConfigError) as err:
        return _fail("validate", err)
    pooled = result["pooled"]
    print(json.dumps({"version": result["version"], "passed": result["passed"],
                      "failed_checks": validation.failed_checks(result["checks"]),
                      "dates": [d["as_of_date"] for d in result["dates"]],
                      "pooled_auc": pooled.get("auc"), "validation_json": result["validation_json"],
                      "report": result["report"], "timings": result["timings"]}, indent=2))
    return 0


def _bigquery_flags(c, feeds: bool = False) -> None:
    """Risk tables (and feeds) in BigQuery instead of the DuckDB file (and feed folder)."""
    flags.add(c, "bq_project", default=None,
              help="Google Cloud project of the BigQuery datasets (with --risk-dataset)")
    if feeds:
        flags.add(c, "feeds_dataset", default=None,
                  help="BigQuery dataset of the feed tables (instead of --feeds)")
    flags.add(c, "risk_dataset", default=None,
              help="BigQuery dataset of the risk tables (instead of --warehouse)")
    flags.add(c, "bq_location", default="US", help="BigQuery location of the datasets")


def _risk_tables(args):
    """The risk tables of --warehouse, or with --risk-dataset those in BigQuery, opened by
    beam_jobs.risk_sinks.open_risk_tables (None when neither is given)."""
    from beam_jobs.options import BigQueryConfig
    from beam_jobs.risk_sinks import open_risk_tables
    from smescore import bigquery as bqlib
    if not args.risk_dataset:
        return open_risk_tables(args.warehouse)
    if not args.bq_project:
        raise UsageError("--risk-dataset needs --bq-project")
    try:
        return open_risk_tables(BigQueryConfig(args.bq_project, None, args.risk_dataset,
                                               args.bq_location),
                                bqlib.Connection(args.bq_project, args.bq_location))
    except ValueError as err:          # names that cannot be a project and dataset
        raise UsageError(str(err)) from None


def cmd_report(args, beam_args) -> int:
    from smescore.monitoring import run_report
    risk_tables = _risk_tables(args)
    if args.risk_dataset and not args.out:
        raise UsageError("report: with --risk-dataset, say where it goes (--out)")
    out = args.out or run_report.report_path(
        os.path.join(os.path.dirname(os.path.abspath(args.warehouse)), "reports"), args.as_of)
    path = run_report.write_report(risk_tables, args.as_of, out, args.registry)
    print(json.dumps({"report": path}, indent=2))
    return 0


def cmd_backtest(args, beam_args) -> int:
    runtime.load_tensorflow(args.debug)
    from beam_jobs import backtest as backtest_job
    from models import backtest
    feeds, warehouse = args.feeds, args.warehouse
    if args.risk_dataset or args.feeds_dataset:          # BigQuery instead of files / DuckDB
        from beam_jobs.options import BigQueryConfig
        from beam_jobs.risk_sinks import open_risk_tables
        from beam_jobs.sources import BigQueryFeedSource
        from smescore import bigquery as bqlib
        names = [(args.bq_project, bqlib.PROJECT_RE), (args.risk_dataset, bqlib.DATASET_RE),
                 *([(args.feeds_dataset, bqlib.DATASET_RE)] if args.feeds_dataset else [])]
        if any(not name or not re.fullmatch(rx, name) for name, rx in names):
            raise UsageError("backtest on BigQuery: --bq-project and --risk-dataset (and a valid "
                             "--feeds-dataset, or --feeds) are needed")
        bq = BigQueryConfig(args.bq_project, args.feeds_dataset, args.risk_dataset,
                            args.bq_location)
        warehouse = open_risk_tables(bq)
        if args.feeds_dataset:     # the feed queries run through the end of the outcome window
            feeds = BigQueryFeedSource(bq, backtest.outcome_end(args.as_of), warehouse.conn,
                                       purpose="backtest")
    if feeds is None or warehouse is None:
        raise UsageError("backtest: --feeds (or --feeds-dataset) and --warehouse (or "
                         "--risk-dataset) are needed")
    try:
        result = backtest_job.run_backtest(args.as_of, feeds, warehouse, args.registry or None,
                                           n_shards=args.n_shards, beam_args=beam_args,
                                           progress=_progress)
    except backtest.BacktestError as err:
        return _fail("backtest", err)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _fail(command: str, err: Exception) -> int:
    """A lifecycle or backtest refusal: the registry, version or data cannot be used."""
    raise BadInput(f"{command}: {err}") from err


def _print_entry(entry: dict) -> None:
    print(json.dumps(entry, indent=2, ensure_ascii=False))


def cmd_promote(args, beam_args) -> int:
    from models import lifecycle
    try:
        entry = lifecycle.promote(args.registry, args.version, why=args.why, who=args.by,
                                  warehouse=_risk_tables(args), override=args.override)
    except lifecycle.PromotionRefused as err:      # the validation gate: exit 4
        raise GateBreached(f"promote: {err}") from err
    except lifecycle.LifecycleError as err:
        return _fail("promote", err)
    _print_entry(entry)
    return 0


def cmd_rollback(args, beam_args) -> int:
    from models import lifecycle
    try:
        entry = lifecycle.rollback(args.registry, why=args.why, who=args.by,
                                   warehouse=_risk_tables(args))
    except lifecycle.LifecycleError as err:
        return _fail("rollback", err)
    _print_entry(entry)
    return 0


def cmd_challenger(args, beam_args) -> int:
    from models import lifecycle
    from models.registry import Registry
    if args.action == "list":
        print(json.dumps({"champion": lifecycle.current_champion(args.registry),
                          "challengers": Registry(args.registry).challengers()}, indent=2))
        return 0
    if not args.version:
        return _fail(f"challenger {args.action}", ValueError("a VERSION is required"))
    change = lifecycle.add_challenger if args.action == "add" else lifecycle.remove_challenger
    try:
        entry = change(args.registry, args.version, why=args.why, who=args.by)
    except lifecycle.LifecycleError as err:
        return _fail(f"challenger {args.action}", err)
    _print_entry(entry)
    return 0


def cmd_query(args, beam_args) -> int:
    from smescore.warehouse import Warehouse
    table = Warehouse(args.warehouse).query(args.sql)
    import pandas as pd
    with pd.option_context("display.max_rows", args.max_rows, "display.width", 200,
                           "display.max_columns", 30, "display.max_colwidth", 80):
        print(table.to_pandas().to_string(max_rows=args.max_rows))
    return 0


def cmd_retain(args, beam_args) -> int:
    from smescore import retention
    result = retention.apply(args.warehouse, retention.Policy.load(args.config),
                             dry_run=args.dry_run, progress=_progress)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _retain(r) -> None:
    flags.add(r, "warehouse", required=True, help="DuckDB file of the risk tables")
    flags.add(r, "config", default=None,
              help="retention policy file (default: the packaged smescore/config/retention.json)")
    flags.add(r, "dry_run", action="store_true",
              help="say which dates would be compacted and change nothing")


def _generate(g) -> None:
    flags.add(g, "out", required=True, help="feeds folder to write (<out>/<feed>/*.parquet)")
    flags.add(g, "firms", type=_positive, default=10_000, help="firms in the portfolio")
    flags.add(g, "months", type=_positive, default=36, help="months of history per feed")
    flags.add(g, "end_date", type=_date, default=dt.date(2026, 10, 31),
              help="last day the feeds cover, YYYY-MM-DD")
    flags.add(g, "seed", type=int, default=7, help="random seed (same seed, same feeds)")
    flags.add(g, "chunk_firms", type=_positive, default=None,
              help="firms per chunk of the per-firm feeds, default 50,000 (memory only: the "
                   "rows do not change)")
    flags.add(g, "shift_industry", default=None, metavar="SECTION",
              help="inject a data shift: invoices of this industry section (A..T; C is "
                   "manufacturing) drop in the last months")
    flags.add(g, "shift_drop", type=float, default=0.30,
              help="with --shift-industry: the share the invoices drop")
    flags.add(g, "shift_months", type=_positive, default=1,
              help="with --shift-industry: how many of the last months are hit")


def _train(t) -> None:
    flags.add(t, "feeds", default=None,
              help="feeds folder: <feeds>/<feed>/*.parquet|csv (or --feeds-dataset)")
    _bigquery_flags(t, feeds=True)
    flags.add(t, "registry", required=True, help="model registry folder to add the version to")
    flags.add(t, "as_of", type=_date, default=None,
              help="training date (default: the last loan report month in the feeds)")
    flags.add(t, "loss", choices=("focal", "class_weight"), default="focal",
              help="imbalance handling (the exported PD is calibrated either way)")
    flags.add(t, "focal_alpha", type=float, default=0.75, help="focal loss: weight of defaults")
    flags.add(t, "focal_gamma", type=float, default=2.0, help="focal loss: focusing exponent")
    flags.add(t, "max_epochs", type=_positive, default=60, help="epochs at most (early stopping)")
    flags.add(t, "patience", type=_positive, default=10,
              help="epochs without a lower validation loss before training stops")
    flags.add(t, "seed", type=int, default=7, help="random seed of the network's training")
    flags.add(t, "background_size", type=_positive, default=200,
              help="training firms in the SHAP background (the typical firm the points are "
                   "measured from; at least 100)")
    flags.add(t, "n_shards", type=_positive, default=16,
              help="firm shards of the snapshot pipeline (a controller group never straddles two)")
    flags.add(t, "calibration_folds", type=int, default=4,
              help="folds by firm whose out-of-fold logits join the held-out firms in the "
                   "calibration sample (one more network training each; 0: held-out firms only)")


def _score(s) -> None:
    flags.add(s, "summary", action="store_true", help="print grade mix and top drivers")


def _report(r) -> None:
    flags.add(r, "as_of", type=_date, required=True, help="the published as-of date, YYYY-MM-DD")
    flags.add(r, "warehouse", default=os.environ.get("SMESCORE_WAREHOUSE",
                                                     "out/demo/warehouse.duckdb"),
              help="DuckDB file of the risk tables ($SMESCORE_WAREHOUSE)")
    flags.add(r, "registry", default=os.environ.get("SMESCORE_REGISTRY", "out/demo/registry"),
              help="model registry (the model card's training baseline; $SMESCORE_REGISTRY)")
    flags.add(r, "out", default=None,
              help="HTML file, local or gs:// (default: <warehouse folder>/reports/"
                   "run-report-<as-of>.html)")
    _bigquery_flags(r)


def _backtest(b) -> None:
    flags.add(b, "as_of", type=_date, required=True, help="the scored as-of date, YYYY-MM-DD")
    flags.add(b, "feeds", default=None, help="feeds folder (or --feeds-dataset)")
    flags.add(b, "warehouse", default=None, help="DuckDB file of the risk tables (or --risk-dataset)")
    _bigquery_flags(b, feeds=True)
    flags.add(b, "registry", default=os.environ.get("SMESCORE_REGISTRY"),
              help="also backtest the current and previous champion when they did not score "
                   "the date ($SMESCORE_REGISTRY; empty: none)")
    flags.add(b, "n_shards", type=_positive, default=16,
              help="firm shards (a controller group never straddles two)")


def _validate(v) -> None:
    flags.add(v, "version", required=True, help="the model version to validate")
    flags.add(v, "registry", default=os.environ.get("SMESCORE_REGISTRY"),
              required="SMESCORE_REGISTRY" not in os.environ,
              help="model registry folder ($SMESCORE_REGISTRY)")
    flags.add(v, "feeds", required=True, help="feeds folder (with _ground_truth/ when generated)")
    flags.add(v, "dates", type=_dates, default=None,
              help="as-of dates D1,D2,.. (default: every month-end after the version's last "
                   "training snapshot that the feeds cover)")
    flags.add(v, "out_dir", default=None,
              help="folder of the HTML report (default: the version folder)")
    flags.add(v, "config", default=None,
              help="thresholds JSON (default: packaged smescore/config/validation.json)")
    flags.add(v, "n_shards", type=_positive, default=16,
              help="firm shards (a controller group never straddles two)")

def _lifecycle(c, warehouse=True) -> None:
    flags.add(c, "registry", default=os.environ.get("SMESCORE_REGISTRY"),
              required="SMESCORE_REGISTRY" not in os.environ,
              help="model registry folder ($SMESCORE_REGISTRY)")
    flags.add(c, "why", default="", help="the reason, kept in the audit log")
    flags.add(c, "by", default=None, help="who (default: $USER)")
    if warehouse:
        flags.add(c, "warehouse", default=None,
                  help="DuckDB file: record the versions' latest backtests too")
        _bigquery_flags(c)


def _promote(pr) -> None:
    pr.add_argument("version", help="the model version to make champion")
    _lifecycle(pr)
    flags.add(pr, "override", default=None,
              help="promote although the version's validation failed or is missing: the "
                   "reason (kept in the audit log with the failed checks)")


def _challenger(ch) -> None:
    ch.add_argument("action", choices=("add", "remove", "list"), help="what to do")
    ch.add_argument("version", nargs="?", help="the model version (add, remove)")
    _lifecycle(ch, warehouse=False)


def _query(q) -> None:
    q.add_argument("sql", help="one SQL statement")
    flags.add(q, "warehouse", default=os.environ.get("SMESCORE_WAREHOUSE",
                                                     "out/demo/warehouse.duckdb"),
              help="DuckDB file of the risk tables ($SMESCORE_WAREHOUSE)")
    flags.add(q, "max_rows", type=_positive, default=50, help="rows printed at most")


def _serve_flags(c) -> None:
    from service import commands
    commands.serve_flags(c)
    _bigquery_flags(c, feeds=True)       # the feeds and the risk tables in BigQuery


def _cmd_serve(args, beam_args) -> int:
    from service import commands
    return commands.cmd_serve(args, beam_args)


def _explain_flags(c) -> None:
    from service import commands
    commands.explain_flags(c)
    _bigquery_flags(c, feeds=True)


def _cmd_explain(args, beam_args) -> int:
    from service import commands
    return commands.cmd_explain(args, beam_args)


# name: (what it does, its own flags, the Beam job whose flags it takes, Beam flags too?, run)
COMMANDS = {
    "generate": ("write synthetic feeds with a known ground truth", _generate, None, False,
                 cmd_generate),
    "features": ("per-firm feature table as of a date (Beam job)", None, "build_features", True,
                 cmd_features),
    "train": ("train, calibrate, export and register a model version", _train, None, True,
              cmd_train),
    "score": ("the nightly job: score the portfolio as of a date (Beam)", _score,
              "score_portfolio", True, cmd_score),
    "report": ("HTML run report of a published as-of date (offline plots)", _report, None, False,
               cmd_report),
    "backtest": ("outcome backtest of the scores of a date, once 12 months of loan outcomes are "
                 "in (performance, backtest_roc)", _backtest, None, True, cmd_backtest),
    "validate": ("walk-forward validation of a model version: validation.json and an HTML "
                 "report (promote reads the verdict)", _validate, None, True, cmd_validate),
    "promote": ("make a model version the champion (audited)", _promote, None, False,
                cmd_promote),
    "rollback": ("make the previous champion the champion again (audited)", _lifecycle, None,
                 False, cmd_rollback),
    "challenger": ("add, remove or list the challengers (audited)", _challenger, None, False,
                   cmd_challenger),
    "retain": ("apply the retention policy: compact the attributions of dates it no longer keeps "
               "in full (idempotent)", _retain, None, False, cmd_retain),
    "serve": ("the scoring service: one firm (or many) on demand over HTTP, the nightly "
              "job's scores", _serve_flags, None, False, _cmd_serve),
    "explain": ("one firm's score explained: a waterfall of points, reasons, values beside the "
                "typical firm's (HTML or PNG)", _explain_flags, None, False, _cmd_explain),
    "query": ("run SQL on the warehouse (views: latest_scores, grade_distribution, "
              "top_risk_drivers, grade_migration, run_history)", _query, None, False, cmd_query),
}

EXIT_CODES = """exit codes:
  0 ok · 1 internal error (a bug: --debug shows the traceback) · 2 usage (a flag refused)
  3 bad input (feed, file, config, model card, registry entry) · 4 a gate refused to publish
  5 a service or location unavailable"""


def parser() -> flags.Parser:
    """`smescore --help`: the commands; each command's own flags: `smescore COMMAND --help`."""
    commands = "\n".join(f"  {name:<11} {what}" for name, (what, *_) in COMMANDS.items())
    p = flags.Parser(prog="smescore", description=__doc__.splitlines()[0],
                     epilog=f"commands (`smescore COMMAND --help` for its flags):\n{commands}\n\n"
                            f"{flags.ENVIRONMENT}\n\n{EXIT_CODES}")
    p.add_argument("--version", action="version", version=f"smescore {smescore.__version__}",
                   help="print the package version and exit")
    p.add_argument("--debug", action="store_true",
                   help="tracebacks and every library's logs (also after the command)")
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND",
                   help="one of the commands below")
    return p


def command_parser(name: str) -> flags.Parser:
    what, own, job, beam, _ = COMMANDS[name]
    epilog = (f"{flags.BEAM_FLAGS}\n\n" if beam else "") + f"{flags.ENVIRONMENT}\n\n{EXIT_CODES}"
    if job:
        from beam_jobs import entry
        c = entry.parser(job, f"smescore {name}", what)
        c.epilog = epilog
    else:
        c = flags.Parser(prog=f"smescore {name}", description=what, epilog=epilog)
    if own:
        own(c)
    return c


def parse(argv) -> tuple[argparse.Namespace, list[str]]:
    """(the command's arguments, the Beam flags), or UsageError."""
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        raise UsageError(f"{argv[0]}: the command comes first: smescore COMMAND [flags] "
                         f"(commands: {', '.join(COMMANDS)})")
    name = next((a for a in argv if not a.startswith("-")), None)
    if name is None:
        parser().parse_args(argv)       # --help, --version; else it names what is missing
        raise UsageError("a command is needed: " + ", ".join(COMMANDS))
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        raise UsageError(f"unknown command {name!r}"
                         + (f" (did you mean {close[0]}?)" if close else "")
                         + f"; commands: {', '.join(COMMANDS)}")
    rest = argv[argv.index(name) + 1:]
    c = command_parser(name)
    beam = flags.beam_specs() if COMMANDS[name][3] else None
    mine, beam_args = flags.split(rest, flags.specs_of(c, dashes=True), beam, where=name)
    # intermixed: an optional positional (`challenger add --registry R VERSION`) may follow the
    # flags; plain parse_args fills it with nothing at `add` and then refuses VERSION
    args = c.parse_intermixed_args(mine)
    job = COMMANDS[name][2]
    if job:    # the job's own flags, as given, go to the job (it checks them again)
        from beam_jobs.options import job_flags
        names = {flags.canonical(a.option_strings[0]) for a in job_flags(job)}
        args.job_argv = [t for t in mine if flags.canonical(t.partition("=")[0]) in names]
    args.func = COMMANDS[name][4]
    return args, beam_args


def main(argv=None) -> int:
    """`smescore [--debug] COMMAND [flags]`: errors as one line `smescore: ...` with the exit
    code of their kind (smescore/errors.py); the traceback with --debug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    runtime.tf_environment()
    with runtime.logging_for_command(debug):
        try:
            args, beam_args = parse(argv)
            args.debug = debug
            return args.func(args, beam_args)
        except Exception as err:  # noqa: BLE001 - one line for the operator; traceback on --debug
            return runtime.report_error(err, debug)


if __name__ == "__main__":
    sys.exit(main())

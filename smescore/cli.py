"""`smescore <command>`: the nightly SME rescoring job and everything around it.

Heavy imports (TensorFlow, Beam) happen inside the commands, so `smescore --help` is instant and
TensorFlow's environment settings below are in place before it loads.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys

from smescore.errors import SmescoreError


def _tf_environment() -> None:
    # Legacy (tf_keras) SavedModels; deterministic CPU kernels; quiet logs.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_generate(args, beam_args) -> int:
    from smescore.generate import InvoiceShift, generate
    shift = (InvoiceShift(args.shift_industry, args.shift_drop, args.shift_months)
             if args.shift_industry else None)
    summary = generate(args.out, firms=args.firms, months=args.months, end_date=args.end_date,
                       seed=args.seed, progress=_progress, shift=shift)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_features(args, beam_args) -> int:
    from beam_jobs import build_features
    argv = [f"--feeds={args.feeds}", f"--as_of={args.as_of}", f"--out={args.out}",
            f"--n_shards={args.n_shards}", *beam_args]
    cfg = build_features.run(argv, save_main_session=False)
    import pyarrow.parquet as pq
    print(json.dumps({"features": cfg.out, "firms": pq.read_metadata(cfg.out).num_rows,
                      "rejected_records": pq.read_metadata(cfg.rejected_out).num_rows,
                      "rejected_file": cfg.rejected_out}, indent=2))
    return 0


def cmd_train(args, beam_args) -> int:
    from models import network
    from models.train import Trainer, TrainConfig
    hp = network.HParams(loss=args.loss, focal_alpha=args.focal_alpha, focal_gamma=args.focal_gamma,
                         max_epochs=args.max_epochs, seed=args.seed)
    cfg = TrainConfig(feeds=args.feeds, registry=args.registry, as_of=args.as_of, hparams=hp,
                      beam_args=tuple(beam_args))
    version, card = Trainer(cfg, progress=_progress).run()
    m = card["metrics"]
    print(json.dumps({"version": version, "auc": m["test"]["auc"], "ks": m["test"]["ks"],
                      "challenger_auc": m["challenger_logistic_regression"]["auc"],
                      "oracle_auc": card["oracle_auc"], "mean_pd": m["test"]["mean_pd"],
                      "default_rate": m["test"]["default_rate"]}, indent=2))
    return 0


def cmd_score(args, beam_args) -> int:
    from beam_jobs import score_portfolio
    argv = [f"--as_of={args.as_of}", f"--registry={args.registry}",
            *([f"--feeds={args.feeds}"] if args.feeds else []),
            *([f"--warehouse={args.warehouse}"] if args.warehouse else []),
            f"--min_history_months={args.min_history_months}",
            f"--max_rejected_share={args.max_rejected_share}", f"--n_shards={args.n_shards}",
            f"--canary_share={args.canary_share}",
            f"--max_auc_drop={args.max_auc_drop}",
            *([f"--model_version={args.model_version}"] if args.model_version else []),
            *([f"--drift_config={args.drift_config}"] if args.drift_config else []),
            *([f"--pushgateway={args.pushgateway}"] if args.pushgateway else []),
            *([f"--report_dir={args.report_dir}"] if args.report_dir else []),
            *([f"--gates_config={args.gates_config}"] if args.gates_config else []),
            *([f"--override_gate={args.override_gate}"] if args.override_gate else []),
            *([f"--override_reason={args.override_reason}"] if args.override_reason else []),
            f"--lock_timeout={args.lock_timeout}",
            *(["--create_warehouse"] if args.create_warehouse else []),
            *beam_args]
    result = score_portfolio.run(argv, save_main_session=False, progress=_progress)
    print(json.dumps(result, indent=2, default=str))
    if args.summary and args.warehouse:
        from smescore import report
        print(report.run_summary(args.warehouse, args.as_of))
    return 0


def _bigquery_flags(c, feeds: bool = False) -> None:
    """Risk tables (and feeds) in BigQuery instead of the DuckDB file (and feed folder)."""
    c.add_argument("--bq-project", default=None, help="with --risk-dataset: BigQuery's project")
    if feeds:
        c.add_argument("--feeds-dataset", default=None, help="BigQuery dataset of the feed tables")
    c.add_argument("--risk-dataset", default=None,
                   help="BigQuery dataset of the risk tables (instead of --warehouse)")
    c.add_argument("--bq-location", default="US")


def _risk_tables(args):
    """The --warehouse file, or with --risk-dataset the risk tables in BigQuery (a reader)."""
    if not args.risk_dataset:
        return args.warehouse
    from smescore import bigquery as bqlib
    if not args.bq_project:
        raise SystemExit("--risk-dataset needs --bq-project")
    try:
        return bqlib.RiskTables(bqlib.Connection(args.bq_project, args.bq_location),
                                args.risk_dataset)
    except ValueError as err:          # names that cannot be a project and dataset
        raise SystemExit(f"smescore: {err}") from None


def cmd_report(args, beam_args) -> int:
    from smescore.monitoring import run_report
    risk_tables = _risk_tables(args)
    if args.risk_dataset and not args.out:
        raise SystemExit("report: with --risk-dataset, say where it goes (--out)")
    out = args.out or run_report.report_path(
        os.path.join(os.path.dirname(os.path.abspath(args.warehouse)), "reports"), args.as_of)
    path = run_report.write_report(risk_tables, args.as_of, out, args.registry)
    print(json.dumps({"report": path}, indent=2))
    return 0


def cmd_backtest(args, beam_args) -> int:
    from models import backtest
    feeds, warehouse = args.feeds, args.warehouse
    if args.risk_dataset or args.feeds_dataset:          # BigQuery instead of files / DuckDB
        from beam_jobs.options import BigQueryConfig
        from beam_jobs.risk_sinks import BigQueryRiskSink
        from beam_jobs.sources import BigQueryFeedSource
        from smescore import bigquery as bqlib
        names = [(args.bq_project, bqlib.PROJECT_RE), (args.risk_dataset, bqlib.DATASET_RE),
                 *([(args.feeds_dataset, bqlib.DATASET_RE)] if args.feeds_dataset else [])]
        if any(not name or not re.fullmatch(rx, name) for name, rx in names):
            raise SystemExit("BigQuery backtest: --bq-project and --risk-dataset (and a valid "
                             "--feeds-dataset, or --feeds) are needed")
        bq = BigQueryConfig(args.bq_project, args.feeds_dataset, args.risk_dataset,
                            args.bq_location, None)
        warehouse = BigQueryRiskSink(bq)
        if args.feeds_dataset:     # the feed queries run through the end of the outcome window
            feeds = BigQueryFeedSource(bq, backtest.outcome_end(args.as_of), warehouse.conn,
                                       purpose="backtest")
    if feeds is None or warehouse is None:
        raise SystemExit("backtest: --feeds (or --feeds-dataset) and --warehouse (or "
                         "--risk-dataset) are needed")
    try:
        result = backtest.run_backtest(args.as_of, feeds, warehouse, args.registry or None,
                                       n_shards=args.n_shards, beam_args=beam_args,
                                       progress=_progress)
    except backtest.BacktestError as err:
        return _fail("backtest", err)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _fail(command: str, err: Exception) -> int:
    print(f"smescore {command}: {err}", file=sys.stderr)
    return 1


def _print_entry(entry: dict) -> None:
    print(json.dumps(entry, indent=2, ensure_ascii=False))


def cmd_promote(args, beam_args) -> int:
    from models import lifecycle
    try:
        entry = lifecycle.promote(args.registry, args.version, why=args.why, who=args.by,
                                  warehouse=_risk_tables(args))
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smescore", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write synthetic feeds with a known ground truth")
    g.add_argument("--out", required=True)
    g.add_argument("--firms", type=_positive, default=10_000)
    g.add_argument("--months", type=_positive, default=36)
    g.add_argument("--end-date", type=_date, default=dt.date(2026, 10, 31))
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--shift-industry", default=None, metavar="SECTION",
                   help="inject a data shift: invoices of this industry section (A..T; C is "
                        "manufacturing) drop in the last months")
    g.add_argument("--shift-drop", type=float, default=0.30, help="the drop (default 0.30)")
    g.add_argument("--shift-months", type=_positive, default=1, help="months hit (default 1)")
    g.set_defaults(func=cmd_generate)

    f = sub.add_parser("features", help="per-firm feature table as of a date (Beam job)")
    f.add_argument("--feeds", required=True)
    f.add_argument("--as-of", type=_date, required=True)
    f.add_argument("--out", required=True, help="output .parquet")
    f.add_argument("--n-shards", type=_positive, default=32)
    f.set_defaults(func=cmd_features)

    t = sub.add_parser("train", help="train, calibrate, export and register a model version")
    t.add_argument("--feeds", required=True)
    t.add_argument("--registry", required=True)
    t.add_argument("--as-of", type=_date, default=None,
                   help="training date (default: the last loan report month in the feeds)")
    t.add_argument("--loss", choices=("focal", "class_weight"), default="focal")
    t.add_argument("--focal-alpha", type=float, default=0.75)
    t.add_argument("--focal-gamma", type=float, default=2.0)
    t.add_argument("--max-epochs", type=_positive, default=60)
    t.add_argument("--seed", type=int, default=7)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="the nightly job: score the portfolio as of a date (Beam)")
    s.add_argument("--feeds", default=None,
                   help="feeds folder (or --source=bigquery with the BigQuery flags)")
    s.add_argument("--as-of", type=_date, required=True)
    s.add_argument("--registry", required=True)
    s.add_argument("--warehouse", default=None,
                   help="DuckDB file (or --sink=bigquery with the BigQuery flags)")
    s.add_argument("--model-version", default=None, help="default: the registry's champion")
    s.add_argument("--min-history-months", type=int, default=6)
    s.add_argument("--max-rejected-share", type=float, default=0.05)
    s.add_argument("--n-shards", type=_positive, default=32)
    s.add_argument("--canary-share", type=float, default=0.10,
                   help="share of model-scored firms officially scored by the first challenger")
    s.add_argument("--drift-config", default=None, help="drift thresholds JSON (default: packaged)")
    s.add_argument("--max-auc-drop", type=float, default=0.05,
                   help="automatic rollback when the champion's backtest AUC falls this far "
                        "below its model card's and the previous champion did better")
    s.add_argument("--summary", action="store_true", help="print grade mix and top drivers")
    s.add_argument("--pushgateway", default="", metavar="HOST:PORT",
                   help="push the run's metrics to this Prometheus Pushgateway (default: off)")
    s.add_argument("--report-dir", default="",
                   help="write the HTML run report into this folder (default: off)")
    s.add_argument("--gates-config", default=None,
                   help="publication gates JSON (default: packaged smescore/config/gates.json)")
    s.add_argument("--override-gate", default=None, metavar="GATE",
                   help="publish although this gate is breached, this run only (needs "
                        "--override-reason; recorded in runs)")
    s.add_argument("--override-reason", default=None,
                   help="why the overridden gate may be breached tonight (recorded in runs)")
    s.add_argument("--lock-timeout", type=float, default=60.0,
                   help="seconds to wait while another writer holds the warehouse (default: 60)")
    s.add_argument("--create-warehouse", action="store_true",
                   help="create the --warehouse folder if missing (default: refuse)")
    s.set_defaults(func=cmd_score)

    r = sub.add_parser("report", help="HTML run report of a published as-of date (offline plots)")
    r.add_argument("--as-of", type=_date, required=True)
    r.add_argument("--warehouse",
                   default=os.environ.get("SMESCORE_WAREHOUSE", "out/demo/warehouse.duckdb"))
    r.add_argument("--registry", default=os.environ.get("SMESCORE_REGISTRY", "out/demo/registry"),
                   help="model registry (the model card's training baseline)")
    r.add_argument("--out", default=None,
                   help="HTML file, local or gs:// (default: <warehouse folder>/reports/"
                        "run-report-<as-of>.html)")
    _bigquery_flags(r)
    r.set_defaults(func=cmd_report)
    b = sub.add_parser("backtest", help="outcome backtest of the scores of a date, once 12 "
                       "months of loan outcomes are in (performance, backtest_roc)")
    b.add_argument("--as-of", type=_date, required=True)
    b.add_argument("--feeds", default=None, help="feeds folder (or --feeds-dataset)")
    b.add_argument("--warehouse", default=None, help="DuckDB file (or --risk-dataset)")
    _bigquery_flags(b, feeds=True)
    b.add_argument("--registry", default=os.environ.get("SMESCORE_REGISTRY"),
                   help="also backtest the current and previous champion when they did not "
                        "score the date")
    b.add_argument("--n-shards", type=_positive, default=16)
    b.set_defaults(func=cmd_backtest)

    def lifecycle_flags(c, warehouse=True):
        c.add_argument("--registry", default=os.environ.get("SMESCORE_REGISTRY"),
                       required="SMESCORE_REGISTRY" not in os.environ)
        c.add_argument("--why", default="", help="the reason, kept in the audit log")
        c.add_argument("--by", default=None, help="who (default: $USER)")
        if warehouse:
            c.add_argument("--warehouse", default=None,
                           help="DuckDB file: record the versions' latest backtests too")
            _bigquery_flags(c)

    pr = sub.add_parser("promote", help="make a model version the champion (audited)")
    pr.add_argument("version")
    lifecycle_flags(pr)
    pr.set_defaults(func=cmd_promote)

    rb = sub.add_parser("rollback", help="make the previous champion the champion again (audited)")
    lifecycle_flags(rb)
    rb.set_defaults(func=cmd_rollback)

    ch = sub.add_parser("challenger", help="add, remove or list the challengers (audited)")
    ch.add_argument("action", choices=("add", "remove", "list"))
    ch.add_argument("version", nargs="?")
    lifecycle_flags(ch, warehouse=False)
    ch.set_defaults(func=cmd_challenger)

    q = sub.add_parser("query", help="run SQL on the warehouse (views: latest_scores, "
                       "grade_distribution, top_risk_drivers, grade_migration, run_history)")
    q.add_argument("sql")
    q.add_argument("--warehouse", default=os.environ.get("SMESCORE_WAREHOUSE", "out/demo/warehouse.duckdb"))
    q.add_argument("--max-rows", type=_positive, default=50)
    q.set_defaults(func=cmd_query)
    return p


def main(argv=None) -> int:
    """Unknown `--flags` after the command's own are passed on to Beam (--runner, ...)."""
    _tf_environment()
    args, beam_args = parser().parse_known_args(argv)
    stray = [a for a in beam_args if not a.startswith("--")]
    if stray:
        parser().error(f"unrecognised arguments: {' '.join(stray)}")
    try:
        return args.func(args, beam_args)
    except SmescoreError as err:      # one line and the documented exit code (README)
        print(f"smescore: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())

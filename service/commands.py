"""`smescore serve` and `smescore explain`: their flags and what they run (smescore/cli.py lists
them with the other commands)."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import tempfile

from smescore import flags, runtime
from smescore.errors import BadInput, UsageError


def _date(text: str) -> dt.date:
    import argparse
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _registry_flags(c) -> None:
    flags.add(c, "registry", default=os.environ.get("SMESCORE_REGISTRY", "out/demo/registry"),
              help="model registry: its champion scores, its challengers in shadow "
                   "($SMESCORE_REGISTRY)")
    flags.add(c, "canary_share", type=float, default=0.10,
              help="share of model-scored firms officially scored by the first challenger (the "
                   "nightly job's --canary_share: the same firms)")
    flags.add(c, "min_history_months", type=int, default=6,
              help="below this many months of history the cold-start rules score")
    flags.add(c, "scorecard_config", default=None, help="score scale and master scale JSON")
    flags.add(c, "rules_config", default=None, help="cold-start rules JSON")


def serve_flags(c) -> None:
    _registry_flags(c)
    flags.add(c, "feeds", default=None,
              help="feeds folder: GET /v1/firms/{id}/score and /explain read firms from it "
                   "(or the feed tables in BigQuery: --feeds-dataset)")
    flags.add(c, "warehouse", default=None,
              help="DuckDB file of the nightly risk tables: GET /v1/firms/{id}/nightly, "
                   "/explain?source=nightly and /parity read them (or BigQuery: --risk-dataset)")
    flags.add(c, "host", default="127.0.0.1", help="address to listen on")
    flags.add(c, "port", type=int, default=8080, help="port to listen on")
    flags.add(c, "api_key_file", default=None,
              help="file of API keys, one a line (or $SMESCORE_API_KEYS, comma-separated); "
                   "sent as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'")
    flags.add(c, "no_auth", action="store_true",
              help="serve without keys (a local demo only: anyone who reaches the port scores)")
    flags.add(c, "max_body_bytes", type=int, default=4 * 1024 * 1024,
              help="requests with a longer body get 413")
    flags.add(c, "max_batch_rows", type=int, default=256, help="firms per model call at most")
    flags.add(c, "max_wait_ms", type=float, default=2.0,
              help="how long an idle batch waits for company before the model call")


def cmd_serve(args, beam_args) -> int:
    runtime.load_tensorflow(args.debug)
    import uvicorn

    from service.app import ServiceConfig, create_app
    from service.security import load_keys
    try:
        keys = None if args.no_auth else load_keys(args.api_key_file)
        cfg = ServiceConfig(args.registry, args.feeds, args.warehouse, bigquery_config(args),
                            keys, args.max_body_bytes, args.canary_share,
                            args.min_history_months, args.scorecard_config, args.rules_config,
                            args.max_batch_rows, args.max_wait_ms)
    except (OSError, ValueError) as err:
        raise UsageError(f"serve: {err}") from None
    runtime.progress(f"[serve] http://{args.host}:{args.port}/docs (registry {args.registry}"
                     f"{', feeds ' + (args.feeds or args.feeds_dataset) if args.feeds or args.feeds_dataset else ''}"
                     f"{', risk tables ' + (args.warehouse or args.risk_dataset) if args.warehouse or args.risk_dataset else ''})")
    uvicorn.run(create_app(cfg), host=args.host, port=args.port, log_level="info",
                access_log=False)     # the request log could carry firm ids in query strings
    return 0


def bigquery_config(args):
    """The BigQuery flags (smescore/cli.py `_bigquery_flags`, as `score`, `train` and `backtest`
    take them) as the nightly job's BigQueryConfig; None without --feeds-dataset or
    --risk-dataset. The feed queries stage their rows in the risk dataset, so BigQuery feeds need
    it too."""
    from beam_jobs.options import BigQueryConfig
    from smescore import bigquery as bqlib
    if not (args.feeds_dataset or args.risk_dataset):
        return None
    if not (args.bq_project and args.risk_dataset):
        raise UsageError("BigQuery: --bq-project and --risk-dataset are needed (the feed queries "
                         "stage their rows in the risk dataset)")
    for flag, value, pattern in (("--bq-project", args.bq_project, bqlib.PROJECT_RE),
                                 ("--risk-dataset", args.risk_dataset, bqlib.DATASET_RE),
                                 ("--feeds-dataset", args.feeds_dataset, bqlib.DATASET_RE),
                                 ("--bq-location", args.bq_location, bqlib.LOCATION_RE)):
        if value is not None and not re.fullmatch(pattern, value):
            raise UsageError(f"{flag} {value!r} is not a valid name (expected {pattern})")
    return BigQueryConfig(args.bq_project, args.feeds_dataset, args.risk_dataset,
                          args.bq_location)


def explain_flags(c) -> None:
    flags.add(c, "firm", required=True, help="enterprise_id of the firm")
    flags.add(c, "as_of", type=_date, default=None,
              help="as-of date, YYYY-MM-DD (needed with the feeds; from the risk tables, "
                   "default: the firm's last night)")
    flags.add(c, "feeds", default=None,
              help="feeds folder holding the firm's records: the firm scored now, as the "
                   "service scores it (or BigQuery: --feeds-dataset)")
    flags.add(c, "warehouse", default=None,
              help="DuckDB file of the nightly risk tables: the page of the firm's published "
                   "row, as that night scored it (or BigQuery: --risk-dataset)")
    _registry_flags(c)
    flags.add(c, "lang", choices=("zh", "en"), default="zh", help="page language")
    flags.add(c, "out", default=None,
              help="FILE.html (default: explain-<firm>-<as-of>.html) or FILE.png (a screenshot "
                   "by headless Chromium)")


def explain_html(registry: str, feeds_dir: str | None, firm: str, as_of: dt.date | None,
                 lang: str, canary_share: float = 0.10, min_history_months: int = 6,
                 scorecard_config=None, rules_config=None, warehouse: str | None = None,
                 bigquery=None) -> str:
    """The page the service's /v1/firms/{id}/explain answers, without a service: from the feeds
    (a folder, or BigQuery's feed dataset) the firm scored now; else from the risk tables (a
    DuckDB file, or BigQuery's risk dataset) as a night published it."""
    from beam_jobs.risk_sinks import open_risk_tables
    from beam_jobs.sources import BigQueryFeedSource
    from service import core, explain_page
    from service.app import firm_score
    from service.feed_store import FeedStore
    from service.nightly import NightlyTables
    models = core.load_model_set(registry, canary_share, min_history_months, scorecard_config,
                                 rules_config)
    scale, typical = models.scoring.scale, models.scoring.typical_firms
    if feeds_dir or (bigquery and bigquery.feeds_dataset):
        if as_of is None:
            raise UsageError("explain: --as-of is needed to score the firm from the feeds")
        store = (FeedStore(feeds_dir) if feeds_dir else
                 FeedStore.from_bigquery(BigQueryFeedSource(bigquery, as_of, purpose="explain")))
        tables = store.group_of(firm)
        if tables is None:
            raise BadInput(f"explain: no firm {firm!r} in the feeds {feeds_dir or bigquery}")
        features, _ = core.features_from_records(tables, as_of, store.book_medians(as_of),
                                                 strict=False)
        ids = features.column("enterprise_id").to_pylist()
        if firm not in ids:
            raise BadInput(f"explain: firm {firm!r} was not established on {as_of}")
        scored = core.score_table(models, features.slice(ids.index(firm), 1))[0]
        answer, values = firm_score(scored), scored.values
    elif warehouse or (bigquery and bigquery.risk_dataset):
        if warehouse and not os.path.exists(warehouse):
            raise BadInput(f"explain: no warehouse file {warehouse}")
        found = NightlyTables(open_risk_tables(warehouse or bigquery)).firm(firm, as_of)
        if found is None:
            raise BadInput(f"explain: no night scored {firm!r}"
                           + (f" on {as_of}" if as_of else "") + f" in {warehouse or bigquery}")
        answer, values = found
    else:
        raise UsageError("explain: --feeds (or --feeds-dataset) or --warehouse (or "
                         "--risk-dataset) is needed")
    return explain_page.render(answer, values, typical.get(answer["model_version"]), lang, scale)


def screenshot(html_path: str, png_path: str, lang: str = "en") -> None:
    """Headless Chromium's picture of a local page (no network: host resolution is off)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise BadInput("explain --out FILE.png needs chromium on PATH; write FILE.html instead")
    if lang == "zh" and not has_chinese_font():
        raise BadInput("explain --lang zh --out FILE.png needs a Chinese font (e.g. the Debian "
                       "package fonts-wqy-microhei): without one every character is drawn as a "
                       "box; write FILE.html instead")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
             f"--screenshot={os.path.abspath(png_path)}", "--window-size=900,1400",
             "file://" + os.path.abspath(html_path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not os.path.exists(png_path):
        raise BadInput(f"chromium could not take the screenshot ({done.returncode}): "
                       f"{done.stderr[-500:]}")


def has_chinese_font() -> bool:
    """fontconfig knows a font for Chinese (True where fc-list is missing: nothing to ask)."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return True
    done = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True,
                          timeout=60)
    return bool(done.stdout.strip())


def cmd_explain(args, beam_args) -> int:
    runtime.load_tensorflow(args.debug)
    page = explain_html(args.registry, args.feeds, args.firm, args.as_of, args.lang,
                        args.canary_share, args.min_history_months, args.scorecard_config,
                        args.rules_config, args.warehouse, bigquery_config(args))
    out = args.out or f"explain-{args.firm}-{args.as_of or 'last-night'}.html"
    if out.endswith(".png"):
        with tempfile.TemporaryDirectory() as tmp:
            html_path = os.path.join(tmp, "page.html")
            with open(html_path, "w", encoding="utf-8") as fh:
                fh.write(page)
            screenshot(html_path, out, args.lang)
    elif out.endswith(".html"):
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(page)
    else:
        raise UsageError(f"explain: --out must end in .html or .png, got {out!r}")
    print(json.dumps({"explanation": out}, indent=2))
    return 0

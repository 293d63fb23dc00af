"""A real nightly run with --pushgateway and --report_dir: the metrics read back from a real
Pushgateway equal the warehouse's figures, a failed run pushes status 0 without losing the last
success, and the HTML report renders its plots in headless Chromium with nothing fetched.

The run scores the session's book with one industry's e-invoices gone for 3 months (real drift
alerts) and a real challenger in shadow (comparison rows); backtests come from their own job, so
the fixture seeds one earlier cohort's. Every assertion compares with what the warehouse holds.
"""
import datetime as dt
import json
import logging
import os
import re
import shutil
from importlib import resources

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import drift, score_portfolio
from beam_jobs.options import ScoreConfig
from smescore import cli, tables
from synth.generate import InvoiceShift, generate
from smescore.monitoring import metrics, report_data, run_report
from smescore.warehouse import Warehouse, conform
from tests import monitoring_services as services
from tests.conftest import END_DATE, FIRMS, MONTHS, SEED
from transforms import catalog

AS_OF = dt.date(2026, 10, 31)
COHORT = dt.date(2025, 10, 31)           # a backtested cohort, 12 months before
BACKTEST_AUC, BACKTEST_KS = 0.6812, 0.3141
SHIFTED_INDUSTRY = "C"
AFFECTED = {f.name for f in catalog.FEATURES if f.feed == "invoices"} | {"tax_inv_gap_3m"}
BAD_ROWS = {  # two invoices and one tax filing the validation rejects
    "invoices": [
        {"invoice_id": "M1", "enterprise_id": "E0000001", "invoice_date": "2026-09-01",
         "direction": "sales", "amount": "-10", "counterparty_id": "K", "status": "normal"},
        {"invoice_id": "M2", "enterprise_id": "NOPE", "invoice_date": "2026-09-01",
         "direction": "sales", "amount": "10", "counterparty_id": "K", "status": "normal"}],
    "tax_filings": [
        {"enterprise_id": "E0000001", "period_month": "2026-08-01", "filed_date": "yesterday",
         "taxable_sales": "1", "vat_paid": "1", "filed_late": "false", "si_headcount": "3"}],
}


def _argv(feeds, registry, warehouse, *extra):
    return [f"--feeds={feeds}", f"--as_of={AS_OF}", f"--registry={registry}",
            f"--warehouse={warehouse}", "--n_shards=4", *extra]


def _query(warehouse, sql, params=()):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def _insert(warehouse, name, rows):
    table = conform(name, pa.Table.from_pylist(rows, schema=tables.arrow_schema(name)))
    with duckdb.connect(str(warehouse)) as con:
        con.register("incoming", table)
        con.execute(f"INSERT INTO {tables.quote(name)} SELECT * FROM incoming")


def seed_backtest_rows(warehouse, version):
    """A backtest of an earlier cohort (the nightly run writes drift and challenger rows itself)."""
    Warehouse(warehouse).ensure_schema()
    perf = {"as_of_date": COHORT, "model_version": version, "outcome_months": 12, "brier": 0.031,
            "binomial_p_value": 0.4, "calibration_status": "ok",
            "backtested_at": dt.datetime(2026, 11, 1, 2, 0)}
    _insert(warehouse, "performance", [
        {**perf, "segment_type": "all", "segment": "all", "n_firms": 980, "n_defaults": 33,
         "auc": BACKTEST_AUC, "ks": BACKTEST_KS, "gini": 2 * BACKTEST_AUC - 1,
         "predicted_default_rate": 0.031, "observed_default_rate": 33 / 980},
        *[{**perf, "segment_type": "grade", "segment": g, "n_firms": n, "n_defaults": d,
           "auc": None, "ks": None, "gini": None, "predicted_default_rate": p,
           "observed_default_rate": d / n}
          for g, n, d, p in (("3", 200, 2, 0.008), ("4", 400, 8, 0.015), ("5", 380, 23, 0.03))]])
    _insert(warehouse, "backtest_roc", [
        {"as_of_date": COHORT, "model_version": version, "false_positive_rate": f,
         "true_positive_rate": t, "pd_cut": c}
        for f, t, c in ((0, 0, 1), (0.1, 0.35, 0.08), (0.3, 0.62, 0.04), (0.6, 0.86, 0.02),
                        (1, 1, 0))])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with services.pushgateway(str(tmp_path_factory.mktemp("pgw") / "pushgateway.log")) as address:
        yield address


@pytest.fixture(scope="module")
def nightly(registry_with_challenger, trained, gateway, tmp_path_factory):
    """One real run, with a few malformed feed records, pushing and writing its report."""
    registry, version, challenger = registry_with_challenger
    card = trained[2]
    root = tmp_path_factory.mktemp("monitoring")
    feeds, warehouse, reports = root / "feeds", root / "risk.duckdb", root / "reports"
    # the session's book with manufacturing's e-invoices gone for 3 months: real drift alerts
    generate(str(feeds), firms=FIRMS, months=MONTHS, end_date=END_DATE, seed=SEED,
             shift=InvoiceShift(SHIFTED_INDUSTRY, drop=1.0, months=3))
    for feed, rows in BAD_ROWS.items():
        pacsv.write_csv(pa.Table.from_pylist(rows), str(feeds / feed / "malformed.csv"))
    drift_config = root / "drift.json"
    drift_config.write_text(json.dumps({**json.loads(resources.files("smescore.config").joinpath(
        "drift.json").read_text()), "min_segment_firms": 100}))
    argv = _argv(feeds, registry, warehouse, f"--drift_config={drift_config}")
    seed_backtest_rows(warehouse, version)
    result = score_portfolio.run(argv + [f"--pushgateway={gateway}", f"--report_dir={reports}"],
                                 save_main_session=False, progress=lambda m: None)
    scraped = services.scrape(gateway, metrics.JOB, metrics.instance_of(str(warehouse)))
    return {"feeds": feeds, "warehouse": warehouse, "reports": reports, "result": result,
            "version": version, "card": card, "registry": registry, "scraped": scraped,
            "challenger": challenger,
            "root": root}


def _one(scraped, name, **labels):
    key = tuple(sorted(labels.items()))
    return scraped[name][key]


def _by(scraped, name, label):
    """{label value: sample value} of one metric."""
    return {dict(k)[label]: val for k, val in scraped[name].items()}


# ----------------------------------------------------------------------------- metrics

def test_the_run_pushes_status_and_row_counts(nightly, gateway):
    m, result, wh = nightly["scraped"], nightly["result"], nightly["warehouse"]
    v = nightly["version"]
    assert result["metrics_pushed"] is True
    assert _one(m, "smescore_run_success", model_version=v) == 1
    assert _one(m, "smescore_run_duration_seconds", model_version=v) > 0
    assert _one(m, "smescore_last_success_timestamp_seconds", model_version=v) == \
        _one(m, "smescore_run_finished_timestamp_seconds", model_version=v)
    assert _one(m, "smescore_run_as_of_timestamp_seconds", model_version=v) == \
        dt.datetime(2026, 10, 31, tzinfo=dt.timezone.utc).timestamp()
    rows_in = _by(m, "smescore_feed_rows_in", "feed")
    assert rows_in == result["rows_in"] and rows_in["invoices"] > 100_000
    rejected = _by(m, "smescore_feed_rows_rejected", "feed")
    assert {f: n for f, n in rejected.items() if n} == {"invoices": 2, "tax_filings": 1}
    assert dict(_query(wh, "SELECT feed, COUNT(*) FROM rejected_records GROUP BY feed")) == \
        {"invoices": 2, "tax_filings": 1}
    rows_out = _by(m, "smescore_feed_rows_out", "feed")
    assert rows_out == {f: n - rejected[f] for f, n in rows_in.items()}
    written = _by(m, "smescore_table_rows_written", "table")
    assert written["scores"] == result["firms"]
    assert written["attributions"] == result["firms_scored_model"] * len(catalog.NAMES)
    assert written["rejected_records"] == 3
    # One group per deployment: job and instance, no date in the grouping key.
    ours = [g for g in services.groups(gateway) if g.get("job") == metrics.JOB]
    assert ours == [{"job": "smescore", "instance": os.path.abspath(wh)}]


def test_firms_per_grade_and_source_equal_the_warehouse(nightly):
    m, wh, v = nightly["scraped"], nightly["warehouse"], nightly["version"]
    by_grade = dict(_query(wh, "SELECT grade, COUNT(*) FROM scores WHERE as_of_date = ? "
                               "GROUP BY grade", [AS_OF]))
    pushed = _by(m, "smescore_firms_by_grade", "grade")
    assert pushed == {g: by_grade.get(g, 0) for g in tables.GRADES}
    assert sum(pushed.values()) == nightly["result"]["firms"] == 1200 - _unborn(nightly)
    by_source = _by(m, "smescore_firms_by_score_source", "score_source")
    assert by_source == {"model": nightly["result"]["firms_scored_model"],
                         "rules": nightly["result"]["firms_scored_rules"],
                         "in_default": nightly["result"]["firms_in_default"]}
    assert all(dict(k)["model_version"] == v for k in m["smescore_firms_by_grade"])


def _unborn(nightly):
    """Generated firms established after the as-of date (not scored)."""
    import pyarrow.parquet as pq
    firms = pq.read_table(os.path.join(nightly["feeds"], "enterprises")).to_pandas()
    return int((firms["established_date"] > AS_OF).sum())


def test_drift_and_backtest_metrics_equal_the_warehouse_and_the_card(nightly):
    m, wh, v, card = nightly["scraped"], nightly["warehouse"], nightly["version"], nightly["card"]
    for metric, feature_gauge, score_gauge in (
            ("psi", "smescore_feature_psi", "smescore_score_psi"),
            ("psi_training_sample", "smescore_feature_psi_training_sample",
             "smescore_score_psi_training_sample")):
        psi = dict(_query(wh, "SELECT feature, value FROM drift WHERE as_of_date = ? "
                              "AND metric = ? AND segment = 'all'", [AS_OF, metric]))
        assert len(psi) == len(catalog.NAMES) + 1
        score_psi = psi.pop(tables.SCORE_FEATURE)
        assert _one(m, score_gauge, model_version=v) == pytest.approx(score_psi)
        assert _by(m, feature_gauge, "feature") == pytest.approx(psi)
    outside = dict(_query(wh, "SELECT feature, value FROM drift WHERE as_of_date = ? "
                              "AND metric = 'out_of_range'", [AS_OF]))
    # every numeric input the network reads (with spread in training: the TFT graph zeroes others)
    assert sorted(outside) == sorted(drift.Reference.from_card(card).ranges)
    assert _by(m, "smescore_feature_out_of_range_share", "feature") == pytest.approx(outside)
    assert max(outside.values()) > 0
    (auc, ks), = _query(wh, "SELECT auc, ks FROM performance WHERE segment_type = 'all' "
                            "AND model_version = ? ORDER BY as_of_date DESC LIMIT 1", [v])
    assert _one(m, "smescore_backtest_auc", model_version=v) == pytest.approx(auc)
    assert _one(m, "smescore_backtest_ks", model_version=v) == pytest.approx(ks)
    assert _one(m, "smescore_model_card_auc", model_version=v) == card["metrics"]["test"]["auc"]
    assert _one(m, "smescore_model_card_ks", model_version=v) == card["metrics"]["test"]["ks"]


def test_every_defined_metric_was_pushed(nightly):
    assert set(nightly["scraped"]) == set(metrics.METRICS)


def test_a_failed_run_pushes_status_0_and_keeps_the_last_success(nightly, gateway, trained,
                                                                 tmp_path):
    """A corrupt feed file fails the run: status 0, new finish time; the last success time and the
    published run's portfolio metrics stay in the group."""
    registry, version, _ = trained
    before = nightly["scraped"]
    feeds = tmp_path / "feeds"
    shutil.copytree(nightly["feeds"], feeds)
    (feeds / "invoices" / "part-corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(Exception, match="Parquet magic bytes not found"):
        score_portfolio.run(
            _argv(feeds, registry, nightly["warehouse"], f"--pushgateway={gateway}"),
            save_main_session=False, progress=lambda m: None)
    after = services.scrape(gateway, metrics.JOB, metrics.instance_of(str(nightly["warehouse"])))
    assert _one(after, "smescore_run_success", model_version=version) == 0
    assert _one(after, "smescore_run_finished_timestamp_seconds", model_version=version) > \
        _one(before, "smescore_run_finished_timestamp_seconds", model_version=version)
    for kept in ("smescore_last_success_timestamp_seconds", "smescore_firms_by_grade",
                 "smescore_feature_psi", "smescore_backtest_auc"):
        assert after[kept] == before[kept]
    status = _query(nightly["warehouse"], "SELECT status FROM runs ORDER BY finished_at")
    assert [s for s, in status] == ["succeeded", "failed"]


def test_without_drift_or_backtest_rows_those_metrics_are_left_out(nightly, tmp_path):
    """Nothing to report is not zero: no PSI or backtest sample rather than a misleading 0."""
    wh = tmp_path / "bare.duckdb"
    shutil.copy(nightly["warehouse"], wh)
    with duckdb.connect(str(wh)) as con:
        for t in ("drift", "performance"):
            con.execute(f"DELETE FROM {t}")
    samples = metrics.published_samples(str(wh), nightly["result"], nightly["card"],
                                        dt.datetime(2026, 11, 1))
    names = {s.metric for s in samples}
    assert not names & {"smescore_score_psi", "smescore_feature_psi",
                        "smescore_score_psi_training_sample",
                        "smescore_feature_psi_training_sample",
                        "smescore_feature_out_of_range_share", "smescore_backtest_auc",
                        "smescore_backtest_ks", "smescore_backtest_as_of_timestamp_seconds"}
    assert {"smescore_firms_by_grade", "smescore_model_card_auc"} <= names
    grades = {s.labels["grade"]: s.value for s in samples if s.metric == "smescore_firms_by_grade"}
    assert grades == _by(nightly["scraped"], "smescore_firms_by_grade", "grade")


def test_an_unreachable_pushgateway_is_logged_and_does_not_raise(caplog):
    samples = metrics.run_samples("v1", True, dt.datetime(2026, 11, 1),
                                  dt.datetime(2026, 11, 1, 0, 5))
    lines = []
    with caplog.at_level(logging.ERROR, logger=metrics.__name__):
        assert metrics.push("127.0.0.1:1", "/srv/risk.duckdb", samples, replace=True,
                            progress=lines.append) is False
    assert "METRICS PUSH FAILED: 3 samples to Pushgateway 127.0.0.1:1" in caplog.text
    assert lines and "METRICS PUSH FAILED" in lines[0]


def test_a_malformed_pushgateway_address_is_refused():
    with pytest.raises(ValueError, match="--pushgateway must be host:port"):
        ScoreConfig.from_options(PipelineOptions(
            _argv("f", "r", "w.duckdb", "--pushgateway=nohost")))


# ----------------------------------------------------------------------------- report

FIGURE = re.compile(r'<div id="(fig-[a-z0-9-]+)"')


def _figures(dom: str) -> dict[str, str]:
    """{figure id: its rendered DOM}."""
    starts = [(m.group(1), m.start()) for m in FIGURE.finditer(dom)]
    ends = [s for _, s in starts[1:]] + [len(dom)]
    return {fid: dom[s:e] for (fid, s), e in zip(starts, ends)}


def _expected_figures(wh) -> set[str]:
    has = {t: _query(wh, f"SELECT COUNT(*) FROM {t}")[0][0] > 0
           for t in ("drift", "challenger_comparison", "performance", "backtest_roc")}
    return ({"fig-score", "fig-grades", "fig-drivers", "fig-sources"}
            | ({"fig-psi", "fig-psi-training-sample", "fig-out-of-range"} if has["drift"]
               else set())
            | ({"fig-migration-0"} if has["challenger_comparison"] else set())
            | ({"fig-roc"} if has["backtest_roc"] else set())
            | ({"fig-calibration"} if has["performance"] else set()))


def _no_remote_resources(page: str) -> None:
    assert re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//",
                     page, re.IGNORECASE) is None
    # plotly.js inline, then one script per plot
    assert page.count("<script") == len(FIGURE.findall(page)) + 1


def test_the_nightly_report_renders_every_plot_offline(nightly, tmp_path):
    path = run_report.report_path(str(nightly["reports"]), AS_OF)
    assert nightly["result"]["report"] == path and os.path.getsize(path) > 3_000_000
    page = open(path, encoding="utf-8").read()
    _no_remote_resources(page)
    dom, fetched = services.render(path, str(tmp_path))
    assert fetched == []
    figures = _figures(dom)
    assert set(figures) == _expected_figures(nightly["warehouse"]) == {
        "fig-score", "fig-grades", "fig-psi", "fig-psi-training-sample", "fig-out-of-range",
        "fig-drivers", "fig-sources", "fig-migration-0", "fig-roc", "fig-calibration"}
    for fid, chunk in figures.items():
        assert 'class="main-svg"' in chunk, fid               # plotly drew it
    bars = {fid: chunk.count('class="point"') for fid, chunk in figures.items()}
    assert bars["fig-score"] == 3 * 11       # 11 score bands: training date, training sample, now
    assert bars["fig-grades"] == len(tables.GRADES)           # no earlier run: one trace
    assert bars["fig-sources"] == 3
    assert bars["fig-psi"] == bars["fig-psi-training-sample"] == len(catalog.NAMES)
    n_outside = _query(nightly["warehouse"], "SELECT count(*) FROM drift WHERE metric = 'out_of_range'")
    assert bars["fig-out-of-range"] == n_outside[0][0] > 0
    assert bars["fig-drivers"] == 10
    assert bars["fig-calibration"] == 2 * 3                   # predicted and observed, 3 grades
    assert 'class="hm"' in figures["fig-migration-0"]
    assert figures["fig-roc"].count('class="trace scatter ') == 2   # the diagonal and the curve


def test_the_report_states_the_figures_of_the_warehouse(nightly):
    page = open(nightly["result"]["report"], encoding="utf-8").read()
    result = nightly["result"]
    assert f"{result['firms_scored_rules'] / result['firms']:.2%}</b> " \
           f"({result['firms_scored_rules']:,} of {result['firms']:,} firms)" in page
    assert f"Run <code>{result['run_id']}</code>" in page
    (feature, value), = _query(nightly["warehouse"], "SELECT feature, value FROM drift "
                               "WHERE metric = 'psi' AND status = 'alert' AND segment = 'all' "
                               "ORDER BY value DESC LIMIT 1")
    assert feature in AFFECTED
    assert re.search(rf"<td>{feature}</td>\s*<td>all</td>\s*<td>psi</td>\s*<td>{value:.4f}</td>",
                     page)
    assert f"{BACKTEST_AUC:.4f}" in page and "Model card (out-of-time test) AUC" in page
    score = dict(_query(nightly["warehouse"], "SELECT metric, value FROM drift WHERE "
                        "feature = '__score__' AND segment = 'all'"))
    assert (f"Score PSI against the book as of the training date: <b>{score['psi']:.4f}</b>"
            in page)
    assert f"against the training sample: <b>{score['psi_training_sample']:.4f}</b>" in page
    # the inputs with firms outside the training range, with the range from the model card
    (feature, share), = _query(nightly["warehouse"], "SELECT feature, value FROM drift WHERE "
                               "metric = 'out_of_range' ORDER BY value DESC, feature LIMIT 1")
    low, high = (nightly["card"]["training_distribution"][feature][k] for k in ("min", "max"))
    assert re.search(rf"<td>{feature}</td>\s*<td>{share:.4f}</td>\s*<td>{low:.4f}</td>\s*"
                     rf"<td>{high:.4f}</td>", page)
    assert "No backtest yet" not in page and "No drift measured" not in page


def test_smescore_report_writes_the_same_bytes_as_the_nightly_job(nightly, tmp_path, capsys):
    out = tmp_path / "again.html"
    assert cli.main(["report", "--as-of", str(AS_OF), "--warehouse", str(nightly["warehouse"]),
                     "--registry", nightly["registry"], "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_bytes() == open(nightly["result"]["report"], "rb").read()


def test_a_report_without_drift_challenger_or_backtest_says_so_and_still_renders(nightly, tmp_path):
    wh = tmp_path / "bare.duckdb"
    shutil.copy(nightly["warehouse"], wh)
    with duckdb.connect(str(wh)) as con:
        for t in ("drift", "challenger_comparison", "performance", "backtest_roc"):
            con.execute(f"DELETE FROM {t}")
    out = run_report.write_report(str(wh), AS_OF, str(tmp_path / "bare.html"), registry=None)
    page = open(out, encoding="utf-8").read()
    for text in ("No backtest yet", "No drift measured for this run", "No challenger scored",
                 "No model registry given", "No score PSI for this run"):
        assert text in page
    _no_remote_resources(page)
    dom, fetched = services.render(out, str(tmp_path))
    assert fetched == []
    figures = _figures(dom)
    assert set(figures) == {"fig-score", "fig-grades", "fig-drivers", "fig-sources"}
    assert figures["fig-score"].count('class="point"') == 11   # no baseline trace without a card


def test_a_date_without_a_published_run_is_a_clear_error(nightly, tmp_path):
    with pytest.raises(report_data.NoPublishedRun, match="no successful run as of 2026-09-30"):
        run_report.write_report(str(nightly["warehouse"]), dt.date(2026, 9, 30),
                                str(tmp_path / "x.html"))
    assert not (tmp_path / "x.html").exists()


def test_the_render_check_sees_a_page_that_fetches(tmp_path):
    """The detector itself: a page with remote resources is caught by both checks."""
    page = tmp_path / "net.html"
    page.write_text('<html><body><script src="https://example.com/x.js"></script>'
                    '<img src="http://example.org/a.png"></body></html>')
    _, fetched = services.render(str(page), str(tmp_path))
    assert fetched == ["https://example.com/x.js", "http://example.org/a.png"]
    with pytest.raises(AssertionError):
        _no_remote_resources(page.read_text())

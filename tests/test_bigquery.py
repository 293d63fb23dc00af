"""BigQuery end to end against a real BigQuery API: the `bqemulator` package started by the
session fixture, the official google-cloud-bigquery client, Parquet load jobs (from the driver and
from the nightly pipeline's workers on DirectRunner).

What the emulator cannot do is said where it matters: ReadFromBigQuery has no endpoint to point at
it (the feed source reads its staged rows with the client there), CREATE TABLE loses column
descriptions and clustering and cannot parse NOT NULL inside a STRUCT (the contract's tables are
created through the API, which keeps all of it).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import publish, risk_sinks, stages
from beam_jobs.options import BigQueryConfig, ScoreConfig
from beam_jobs.risk_sinks import BigQueryRiskSink, open_risk_tables, write_load_file
from beam_jobs.sources import BigQueryFeedSource, LocalFilesSource, feed_source
from models import lifecycle
from smescore import bigquery as bqlib
from smescore import cli
from smescore import sqlfiles, sqlgen
from smescore import tables
from smescore.monitoring import metrics, report_data
from smescore.warehouse import PublishError, StagedTable, Warehouse, run_record_table
from tests import monitoring_services as services
from tests import test_warehouse as tw
from tests.bq_emulator import (LOCATION, PROJECT, bq_conn, bq_emulator,  # noqa: F401
                               quick_load_job_polls, risk_dataset)
from tests.conftest import END_DATE
from transforms import catalog, feeds

D1, D2, D3 = tw.D1, tw.D2, tw.D3
INDUSTRY = {"E1": "C", "E2": "C", "E3": "F", "E4": "F", "E5": "C"}


# ----------------------------------------------------------------------------- data

def segments(as_of, rows, run_id) -> pa.Table:
    return pa.Table.from_pylist(
        [{"as_of_date": as_of, "enterprise_id": r[0], "industry": INDUSTRY[r[0]],
          "region": "Jiangsu" if r[0] == "E3" else "Zhejiang", "run_id": run_id} for r in rows],
        schema=tables.arrow_schema("firm_segments"))


def drift(as_of, run_id, psi: dict) -> pa.Table:
    rows = [{"as_of_date": as_of, "model_version": tw.V, "feature": f, "segment": "all",
             "metric": "psi", "value": v, "warn_threshold": 0.10, "threshold": 0.25,
             "run_id": run_id, "status": "ok" if v < 0.10 else "warn" if v <= 0.25 else "alert"}
            for f, v in psi.items()]
    rows.append({**rows[0], "segment": "industry=C", "value": psi["__score__"] + 0.01})
    rows.append({"as_of_date": as_of, "model_version": tw.V, "feature": "late_vat",
                 "segment": "all", "metric": "missing_rate_change", "value": 0.01,
                 "warn_threshold": 0.05, "threshold": 0.10, "status": "ok", "run_id": run_id})
    rows.append({**rows[-1], "metric": "out_of_range", "value": 0.02, "warn_threshold": 0.01,
                 "threshold": 0.05, "status": "warn"})
    return pa.Table.from_pylist(rows, schema=tables.arrow_schema("drift"))


def performance(as_of, auc_all: float, defaults: int) -> pa.Table:
    at = dt.datetime.combine(as_of + dt.timedelta(days=400), dt.time(3, 30, 15, 250000))
    rows = []
    for seg_type, seg, n, n_def, auc in (("all", "all", 400, defaults, auc_all),
                                         ("industry", "C", 150, defaults // 2, auc_all - 0.03),
                                         ("industry", "F", 30, 0, None)):
        rows.append({"as_of_date": as_of, "model_version": tw.V, "segment_type": seg_type,
                     "segment": seg, "outcome_months": 12, "n_firms": n, "n_defaults": n_def,
                     "auc": auc, "ks": None if auc is None else auc - 0.4,
                     "gini": None if auc is None else 2 * auc - 1, "brier": 0.031,
                     "predicted_default_rate": 0.03, "observed_default_rate": n_def / n,
                     "binomial_p_value": 0.2, "calibration_status": "ok", "backtested_at": at})
    return pa.Table.from_pylist(rows, schema=tables.arrow_schema("performance"))


def date_tables(as_of, rows, run_id, psi, auc=None, defaults=0, attributions=()) -> dict:
    out = {"scores": tw.scores(as_of, rows, run_id),
           "attributions": tw.attributions(as_of, list(attributions)),
           "portfolio_summary": tw.summary(as_of, len(rows)),
           "rejected_records": tw.rejected(as_of, run_id, 1),
           "firm_segments": segments(as_of, rows, run_id),
           "drift": drift(as_of, run_id, psi)}
    if auc is not None:
        out["performance"] = performance(as_of, auc, defaults)
    return out


PUBLISHES = [
    (D1, tw.D1_SCORES, "run-d1", {"__score__": 0.02, "sales_trend": 0.08}, 0.78, 12, tw.D1_ATTR),
    (D3, tw.D3_SCORES, "run-d3", {"__score__": 0.30, "sales_trend": 0.21}, None, 0, ()),
    (D2, tw.D2_SCORES, "run-d2", {"__score__": 0.12, "sales_trend": 0.26}, 0.74, 10, ()),
]


def publish_all(sink) -> None:
    for as_of, rows, run_id, psi, auc, defaults, attr in PUBLISHES:
        sink.publish(as_of, date_tables(as_of, rows, run_id, psi, auc, defaults, attr),
                     tw.run_record(as_of, run_id))
    sink.record_failed_run(tw.run_record(D3, "run-d3-retry", status="failed",
                                         message="OSError: disk full", started_hour=5))


def bq_config(dataset, feeds_dataset=None) -> BigQueryConfig:
    return BigQueryConfig(PROJECT, feeds_dataset, dataset, LOCATION)


def bq_rows(conn, dataset, sql_from: str, params=None) -> list[dict]:
    return conn.rows(f"SELECT * FROM {conn.ref(dataset, sql_from)}", params)


# ----------------------------------------------------------------------------- config

BQ = ["--bq_project=my-risk-project", "--feeds_dataset=sme_feeds", "--risk_dataset=sme_risk"]


@pytest.mark.parametrize("argv, message", [
    (["--sink=bigquery", "--feeds=f"], "missing required flags: --bq_project, --risk_dataset"),
    (["--source=bigquery", "--warehouse=w.duckdb", "--bq_project=my-risk-project",
      "--risk_dataset=r"], "missing required flags: --feeds_dataset"),
    (["--sink=bigquery", "--source=bigquery"], "missing required flags: --bq_project"),
    (["--sink=bigquery", "--feeds=f", "--bq_project=my-risk-project",
      "--risk_dataset=risk` WHERE TRUE; DROP TABLE x; --"], "--risk_dataset .* is not a valid name"),
    (["--sink=bigquery", "--feeds=f", "--bq_project=p", "--risk_dataset=r"],
     "--bq_project 'p' is not a valid name"),
    (["--feeds=f"], "missing required flags: --warehouse"),
    (["--source=bigquery", "--sink=bigquery", *BQ, "--bq_location=eu west"],
     "--bq_location 'eu west' is not a valid name"),
])
def test_config_refuses_incomplete_or_unsafe_bigquery_flags(argv, message):
    with pytest.raises(ValueError, match=message):
        ScoreConfig.from_options(PipelineOptions(["--as_of=2026-10-31", "--registry=r", *argv]))


def test_config_for_bigquery_needs_no_files():
    cfg = ScoreConfig.from_options(PipelineOptions([
        "--as_of=2026-10-31", "--registry=r", "--source=bigquery", "--sink=bigquery", *BQ,
        "--bq_location=europe-west3", "--temp_location=gs://risk-bucket/tmp"]))
    assert (cfg.feeds, cfg.warehouse, cfg.source, cfg.sink) == (None, None, "bigquery", "bigquery")
    assert cfg.bigquery == BigQueryConfig("my-risk-project", "sme_feeds", "sme_risk",
                                          "europe-west3")
    assert isinstance(feed_source(cfg), BigQueryFeedSource)
    assert repr(open_risk_tables(cfg)) == "BigQuery(my-risk-project.sme_risk)"
    files = ScoreConfig.from_options(PipelineOptions([
        "--as_of=2026-10-31", "--registry=r", "--feeds=f", "--warehouse=w.duckdb"]))
    assert files.bigquery is None and isinstance(feed_source(files), LocalFilesSource)
    assert isinstance(open_risk_tables(files), Warehouse)


# ----------------------------------------------------------------------------- DDL and schema

def emulator_ddl(ddl: str) -> str:
    """The one change the emulator needs: it cannot parse NOT NULL inside STRUCT<...>."""
    head, _, rest = ddl.partition("ARRAY<STRUCT<")
    if not rest:
        return ddl
    inner, _, tail = rest.partition(">>")
    return head + "ARRAY<STRUCT<" + inner.replace(" NOT NULL", "") + ">>" + emulator_ddl(tail)


def test_committed_ddl_applies_on_the_emulator(bq_conn, risk_dataset):
    for name in tables.TABLES:
        ddl = sqlfiles.sql_path("bigquery", "tables", f"{name}.sql").read_text(encoding="utf-8")
        bq_conn.query(emulator_ddl(sqlgen.qualify(ddl, PROJECT, risk_dataset)))
        got = bq_conn.client.get_table(bq_conn.table_id(risk_dataset, name))
        expected = tables.bigquery_schema(name)
        assert [(f.name, f.field_type, f.mode) for f in got.schema] == [
            (f["name"], f["type"], f["mode"]) for f in expected]
        assert got.description == tables.table(name).description
        t = tables.table(name)
        assert (got.time_partitioning.field if got.time_partitioning else None) == t.partition_by
    # Applying it again is a no-op (IF NOT EXISTS), and keeps rows.
    bq_conn.client.insert_rows_json(bq_conn.table_id(risk_dataset, "backtest_roc"), [
        {"as_of_date": "2026-08-31", "model_version": "v1", "false_positive_rate": 0.1,
         "true_positive_rate": 0.5, "pd_cut": 0.04}], timeout=bq_conn.timeout)
    ddl = sqlfiles.sql_path("bigquery", "tables", "backtest_roc.sql").read_text()
    bq_conn.query(sqlgen.qualify(ddl, PROJECT, risk_dataset))
    assert bq_rows(bq_conn, risk_dataset, "backtest_roc")[0]["pd_cut"] == 0.04


def test_ensure_schema_creates_the_contract_tables_and_views(bq_conn, risk_dataset, monkeypatch,
                                                           capsys):
    monkeypatch.setenv(bqlib.EMULATOR_ENV, bq_conn.emulator)
    assert bqlib.main(["--bq-project", PROJECT, "--risk-dataset", risk_dataset]) == 0   # the setup command
    assert capsys.readouterr().out == (f"{PROJECT}.{risk_dataset}: {len(tables.TABLES)} tables, "
                                       f"{len(sqlfiles.read_folder('views'))} views\n")
    BigQueryRiskSink(bq_config(risk_dataset), bq_conn).ensure_schema()    # idempotent
    for name in tables.TABLES:
        got = bq_conn.client.get_table(bq_conn.table_id(risk_dataset, name))
        assert [f.to_api_repr() for f in got.schema] == [
            f.to_api_repr() for f in bqlib.schema_fields(name)]      # modes, descriptions, nesting
        assert got.clustering_fields == list(tables.table(name).cluster_by)
    listed = {t.table_id: t.table_type for t in bq_conn.client.list_tables(
        f"{PROJECT}.{risk_dataset}")}
    views = sorted(sqlfiles.read_folder("views"))
    assert listed == {**{n: "TABLE" for n in tables.TABLES}, **{v: "VIEW" for v in views}}


def test_ensure_schema_refuses_a_table_that_drifted_from_the_contract(bq_conn, risk_dataset):
    from google.cloud import bigquery
    bq_conn.client.create_table(bigquery.Table(bq_conn.table_id(risk_dataset, "scores"), schema=[
        bigquery.SchemaField("as_of_date", "DATE", mode="REQUIRED"),
        bigquery.SchemaField("enterprise_id", "STRING", mode="REQUIRED")]))
    with pytest.raises(RuntimeError, match=r"scores does not match the contract .*migration"):
        BigQueryRiskSink(bq_config(risk_dataset), bq_conn).ensure_schema()


# ----------------------------------------------------------------------------- WriteToBigQuery

def test_a_parquet_load_lands_rows_in_a_table_of_the_declared_schema(bq_conn, risk_dataset,
                                                                     tmp_path):
    """A risk table's rows, conformed into a Parquet load file (streamed from a staged file, as the
    workers do), loaded with one PARQUET load job: the contract's schema, REPEATED reasons and
    every value intact, NaN as NULL."""
    rows = [r if r[0] != "E4" else (*r[:5], float("nan"), r[6]) for r in tw.D1_SCORES]
    scores = tw.scores(D1, rows, "run-d1")
    pq.write_table(scores, tmp_path / "staged.parquet", row_group_size=2)
    runs = run_record_table(tw.run_record(D1, "run-d1"))
    for name, rows_ in (("scores", StagedTable.of(tmp_path / "staged.parquet")), ("runs", runs)):
        bqlib.create_staging_table(bq_conn, bqlib.table_resource(bq_conn, risk_dataset, name,
                                                                 f"landed_{name}"))
        path = str(tmp_path / f"{name}.load.parquet")
        assert write_load_file(rows_, name, path) == os.path.getsize(path) > 0
        assert pq.read_schema(path).equals(tables.arrow_schema(name))
        assert bqlib.load_parquet(bq_conn, risk_dataset, f"landed_{name}", path) == (
            4 if name == "scores" else 1)
        got = bq_conn.client.get_table(bq_conn.table_id(risk_dataset, f"landed_{name}"))
        assert [f.to_api_repr() for f in got.schema] == [
            f.to_api_repr() for f in bqlib.schema_fields(name)]
    expected = {"scores": scores.to_pylist(), "runs": runs.to_pylist()}
    expected["scores"][3]["base_points"] = None                  # NaN -> NULL
    for name, key in (("scores", "enterprise_id"), ("runs", "run_id")):
        got = sorted((normal(r) for r in bq_rows(bq_conn, risk_dataset, f"landed_{name}")),
                     key=lambda r: r[key])
        assert got == sorted((normal(r) for r in expected[name]), key=lambda r: r[key])
    assert [len(r["reasons"]) for r in sorted(bq_rows(bq_conn, risk_dataset, "landed_scores"),
                                              key=lambda r: r["enterprise_id"])] == [2, 1, 2, 0]


def normal(row: dict) -> dict:
    """Timestamps as naive UTC: BigQuery hands them back with the zone attached."""
    return {k: v.astimezone(dt.timezone.utc).replace(tzinfo=None)
            if isinstance(v, dt.datetime) and v.tzinfo else v for k, v in row.items()}


# ----------------------------------------------------------------------------- publish

def counts(conn, dataset, where=None) -> dict:
    return bqlib.count_rows(conn, dataset, {n: n for n in tables.TABLES}, where)


def test_publish_replaces_a_date_atomically_and_rerunning_leaves_no_duplicates(
        bq_conn, risk_dataset):
    sink = BigQueryRiskSink(bq_config(risk_dataset), bq_conn)
    sink.ensure_schema()
    d1 = date_tables(D1, tw.D1_SCORES, "run-d1", {"__score__": 0.02}, attributions=tw.D1_ATTR)
    d2 = date_tables(D2, tw.D2_SCORES, "run-d2", {"__score__": 0.12})
    written = sink.publish(D1, d1, tw.run_record(D1, "run-d1"))
    assert written == {"scores": 4, "attributions": 4, "portfolio_summary": 1, "drift": 4,
                       "rejected_records": 1, "firm_segments": 4, "runs": 1}
    sink.publish(D2, d2, tw.run_record(D2, "run-d2"))
    before = counts(bq_conn, risk_dataset)
    sink.publish(D1, d1, tw.run_record(D1, "run-d1"))           # the same run again
    assert counts(bq_conn, risk_dataset) == before
    assert before["scores"] == 8 and before["runs"] == 2
    # A new run of D1 with fewer firms replaces D1 in every table it publishes; D2 stays.
    smaller = date_tables(D1, tw.D1_SCORES[:2], "run-d1b", {"__score__": 0.05})
    sink.publish(D1, smaller, tw.run_record(D1, "run-d1b"))
    assert counts(bq_conn, risk_dataset, {"as_of_date": D1}) == {
        **{n: 0 for n in tables.TABLES}, "scores": 2, "portfolio_summary": 1, "drift": 4,
        "rejected_records": 1, "firm_segments": 2, "runs": 2}        # runs are kept per run_id
    assert counts(bq_conn, risk_dataset, {"as_of_date": D2})["scores"] == 4
    runs = bq_conn.rows(f"SELECT attempt_id, serving FROM {bq_conn.ref(risk_dataset, 'runs')} "
                        f"ORDER BY attempt_id")
    assert [(r["attempt_id"], r["serving"]) for r in runs] == [
        ("run-d1-1", False), ("run-d1b-1", True), ("run-d2-1", True)]   # one serving per date
    got = bq_conn.rows(f"SELECT enterprise_id, run_id, reasons FROM "
                       f"{bq_conn.ref(risk_dataset, 'scores')} WHERE as_of_date = @d "
                       f"ORDER BY enterprise_id", {"d": D1})
    assert [(r["enterprise_id"], r["run_id"], len(r["reasons"])) for r in got] == [
        ("E1", "run-d1b", 2), ("E2", "run-d1b", 1)]
    assert [t.table_id for t in bq_conn.client.list_tables(f"{PROJECT}.{risk_dataset}")
            if t.table_id.startswith("staging__")] == []


def _stage_attributions(sink, pieces, as_of, run_id, staging) -> dict:
    """The nightly job's staging of the attributions alone, on BigQuery: Arrow pieces -> the
    sorted staged file -> the workers' Parquet load into the run's staging table; returns what
    prestaged.parquet says they loaded."""
    os.makedirs(staging, exist_ok=True)
    with beam.Pipeline() as p:
        _ = ({"attributions": p | beam.Create(pieces).with_output_types(pa.Table)}
             | stages.StageRiskTables(str(staging), loader=sink.loader(as_of, run_id, [tw.V])))
    return {r["table"]: r for r in pq.read_table(staging / "prestaged.parquet").to_pylist()}


def test_attributions_loaded_by_the_pipeline_publish_in_the_same_transaction(
        bq_conn, risk_dataset, tmp_path):
    """Per-firm tables never reach the driver on BigQuery: the pipeline's workers load them into
    the run's staging table with a Parquet load job, checked against the contract; publish checks
    their count and moves them in the same transaction as the rest."""
    sink = BigQueryRiskSink(bq_config(risk_dataset), bq_conn)
    sink.ensure_schema()
    run_id = "run-pre1"
    pieces = [tw.attributions(D1, tw.D1_ATTR[:1]), tw.attributions(D1, tw.D1_ATTR[1:])]
    sink.create_staging(run_id, ["attributions"])
    loaded = _stage_attributions(sink, pieces, D1, run_id, tmp_path / "a")
    assert loaded["attributions"]["rows"] == 4
    assert loaded["attributions"]["load_bytes"] > 0
    d1 = date_tables(D1, tw.D1_SCORES, run_id, {"__score__": 0.02})
    del d1["attributions"]
    with pytest.raises(PublishError, match="expected"):          # a count that does not match
        sink.publish(D1, d1, tw.run_record(D1, run_id), prestaged={"attributions": 5})
    assert counts(bq_conn, risk_dataset, {"as_of_date": D1})["scores"] == 0
    sink.create_staging(run_id, ["attributions"])
    _stage_attributions(sink, pieces, D1, run_id, tmp_path / "b")
    written = sink.publish(D1, d1, tw.run_record(D1, run_id), prestaged={"attributions": 4})
    assert written["attributions"] == 4 and written["scores"] == 4
    got = bq_conn.rows(f"SELECT enterprise_id, feature, phi, value FROM "
                       f"{bq_conn.ref(risk_dataset, 'attributions')} WHERE as_of_date = @d "
                       f"ORDER BY enterprise_id, feature", {"d": D1})
    assert [(r["enterprise_id"], r["feature"], r["phi"], r["value"]) for r in got] == sorted(
        (a[0], a[1], a[3], a[2]) for a in tw.D1_ATTR)
    assert staging_tables(bq_conn, risk_dataset) == []
    # A piece of another date breaks the contract: the job fails, nothing is published.
    sink.create_staging("run-pre2", ["attributions"])
    with pytest.raises(Exception, match="as_of_date"):
        _stage_attributions(sink, [tw.attributions(D2, tw.D1_ATTR)], D1, "run-pre2",
                            tmp_path / "c")
    assert counts(bq_conn, risk_dataset, {"as_of_date": D2})["attributions"] == 0
    bqlib.drop_tables(bq_conn, risk_dataset, [bqlib.staging_name("run-pre2", "attributions")])


def test_a_failing_transaction_leaves_the_previous_rows(bq_conn, risk_dataset):
    sink = BigQueryRiskSink(bq_config(risk_dataset), bq_conn)
    sink.ensure_schema()
    sink.publish(D1, date_tables(D1, tw.D1_SCORES, "run-d1", {"__score__": 0.02}),
                 tw.run_record(D1, "run-d1"))
    before = counts(bq_conn, risk_dataset)
    # The last table the transaction writes is gone: the deletes and inserts before it that
    # already ran must be rolled back.
    bqlib.drop_tables(bq_conn, risk_dataset, ["firm_segments"])
    with pytest.raises(PublishError, match="(?s)failed at 'transaction'.*firm_segments.*still "
                                           "holds the previous rows"):
        sink.publish(D1, date_tables(D1, tw.D1_SCORES[:1], "run-d1c", {"__score__": 0.09}),
                     tw.run_record(D1, "run-d1c"))
    after = bqlib.count_rows(bq_conn, risk_dataset,
                             {n: n for n in tables.TABLES if n != "firm_segments"})
    assert after == {n: v for n, v in before.items() if n != "firm_segments"}


def test_bad_tables_are_refused_before_anything_is_touched(bq_conn, risk_dataset):
    sink = BigQueryRiskSink(bq_config(risk_dataset), bq_conn)
    bad = date_tables(D1, tw.D1_SCORES, "run-d1", {"__score__": 0.02})
    bad["scores"] = bad["scores"].set_column(
        bad["scores"].schema.get_field_index("grade"), "grade", pa.array(["3", "3", "X", "D"]))
    with pytest.raises(ValueError, match=r"column 'grade'.*\['X'\]"):
        sink.publish(D1, bad, tw.run_record(D1, "run-d1"))
    assert list(bq_conn.client.list_tables(f"{PROJECT}.{risk_dataset}")) == []


def test_a_failed_attempt_is_upserted_by_attempt_id(bq_conn, risk_dataset):
    sink = BigQueryRiskSink(bq_config(risk_dataset), bq_conn)
    sink.ensure_schema()
    first = {**tw.run_record(D2, "run-x", status="failed", message="first"), "rows_in": []}
    sink.record_failed_run(first)
    gates = [{"gate": "feed_freshness", "subject": "invoices", "status": "breached",
              "value": 61.0, "threshold": 7.0, "note": "latest 2026-08-31"},
             {"gate": "score_psi", "subject": "all", "status": "overridden", "value": None,
              "threshold": None, "note": None}]
    again = {**tw.run_record(D2, "run-x", status="failed",
                             message="it's \"quoted\"; DROP TABLE runs; --"), "gates": gates}
    sink.record_failed_run(again)                       # the same attempt: replaced
    sink.record_failed_run({**again, "attempt_id": "run-x-2"})     # the next one: added
    rows = sorted((normal(r) for r in bq_rows(bq_conn, risk_dataset, "runs")),
                  key=lambda r: r["attempt_id"])
    assert rows == [normal(r) for r in (run_record_table(again).to_pylist()
                                        + run_record_table({**again, "attempt_id": "run-x-2"})
                                        .to_pylist())]
    assert [r["serving"] for r in rows] == [False, False]
    with pytest.raises(ValueError, match="takes status 'failed'"):
        sink.record_failed_run(tw.run_record(D2, "run-y"))


# ----------------------------------------------------------------------------- views

def _sort_key(row: tuple):
    return tuple((0, round(v, 6)) if isinstance(v, float) else (1, "") if v is None
                 else (2, repr(v)) for v in row)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def assert_same_rows(duck: pa.Table, bq_result) -> int:
    names = [f.name for f in bq_result.schema]
    assert names == duck.column_names
    bq = sorted((tuple(normal(dict(r.items())).values()) for r in bq_result), key=_sort_key)
    dk = sorted((tuple(r.values()) for r in duck.to_pylist()), key=_sort_key)
    assert len(bq) == len(dk)
    for x, y in zip(dk, bq):
        assert all(_same(a, b) for a, b in zip(x, y)), (x, y)
    return len(bq)


@pytest.fixture(scope="module")
def both_engines(bq_emulator, tmp_path_factory):
    """The same three dates (and a failed retry) published to a DuckDB warehouse and, through the
    BigQuery sink, to the emulator."""
    conn = bqlib.Connection(PROJECT, LOCATION, emulator=bq_emulator)
    dataset = "risk_views"
    wh = Warehouse(tmp_path_factory.mktemp("views") / "risk.duckdb")
    wh.ensure_schema()
    sink = BigQueryRiskSink(bq_config(dataset), conn)
    sink.ensure_schema()
    publish_all(wh)
    publish_all(sink)
    return wh, conn, dataset


@pytest.mark.parametrize("view", sorted(p.stem for p in sqlfiles.sql_path("views").glob("*.sql")))
def test_every_view_gives_the_same_rows_on_both_engines(both_engines, view):
    wh, conn, dataset = both_engines
    n = assert_same_rows(wh.query(f"SELECT * FROM {view}"),
                         conn.query(f"SELECT * FROM {conn.ref(dataset, view)}"))
    assert n >= (1 if view == "latest_scores" else 3)


def test_the_views_hold_what_the_data_says(both_engines):
    wh, conn, dataset = both_engines
    ref = conn.ref(dataset, "top_risk_drivers_by_industry")
    got = conn.rows(f"SELECT industry, feature, n_firms, share_of_industry_firms, rank FROM {ref} "
                    f"WHERE as_of_date = @d ORDER BY industry, rank, feature", {"d": D1})
    # D1: industry C = E1 (sales_trend, late_vat), E2 (sales_trend); F = E3 (late_vat,
    # power_drop), E4 (no reasons).
    assert [tuple(r.values()) for r in got] == [
        ("C", "sales_trend", 2, 1.0, 1), ("C", "late_vat", 1, 0.5, 2),
        ("F", "late_vat", 1, 0.5, 1), ("F", "power_drop", 1, 0.5, 2)]
    got = conn.rows(f"SELECT as_of_date, value, previous_value, status, previous_status FROM "
                    f"{conn.ref(dataset, 'drift_history')} WHERE feature = '__score__' "
                    f"AND segment = 'all' ORDER BY as_of_date")
    assert [tuple(r.values()) for r in got] == [
        (D1, 0.02, None, "ok", None), (D2, 0.12, 0.02, "warn", "ok"),
        (D3, 0.30, 0.12, "alert", "warn")]
    got = conn.rows(f"SELECT as_of_date, segment, gini, gini_change FROM "
                    f"{conn.ref(dataset, 'backtest_history')} WHERE segment_type = 'all' "
                    f"ORDER BY as_of_date")
    assert [(r["as_of_date"], r["segment"]) for r in got] == [(D1, "all"), (D2, "all")]
    assert got[0]["gini_change"] is None and got[1]["gini_change"] == pytest.approx(-0.08)


@pytest.mark.parametrize("dates", [(D1, D3), (D1, D2), (D3, D1)])
def test_grade_migration_between_two_dates_is_the_same_on_both_engines(both_engines, dates):
    wh, conn, dataset = both_engines
    params = {"from_date": dates[0], "to_date": dates[1]}
    duck_sql = sqlfiles.read_folder("queries")["grade_migration_between"]
    bq_sql = sqlgen.qualify(sqlfiles.read_folder("bigquery", "queries")["grade_migration_between"],
                            PROJECT, dataset)
    duck = wh.query(duck_sql, params)
    assert assert_same_rows(duck, conn.query(bq_sql, params)) >= 2
    if dates == (D1, D3):   # E1 3 -> 4; E2, E3, E4 exit
        assert sorted(tuple(r.values())[:3] for r in duck.to_pylist()) == [
            ("3", "4", 1), ("3", "exited", 1), ("6", "exited", 1), ("D", "exited", 1)]


def test_metrics_backtests_and_the_report_read_the_same_from_both_engines(both_engines):
    """What the monitoring reads back after a run (DuckDB SQL with ? values), from the DuckDB
    warehouse and, translated by sqlglot, from the emulator: the same numbers."""
    wh, conn, dataset = both_engines
    bq = bqlib.RiskTables(conn, dataset)
    assert metrics.instance_of(bq) == f"bigquery:{PROJECT}.{dataset}"
    card = {"metrics": {"test": {"auc": 0.81, "ks": 0.47}}}
    for as_of, rows, run_id, psi, *_ in PUBLISHES:
        result = {"model_version": tw.V, "as_of_date": as_of, "run_id": run_id,
                  "rows_in": {"invoices": 40, "tax_filings": 12}}
        at = dt.datetime(2026, 11, 1, 3, 15)
        duck = metrics.published_samples(wh, result, card, at)
        got = metrics.published_samples(bq, result, card, at)
        assert sorted(map(_sample, got)) == sorted(map(_sample, duck))
        by_name = {(s.metric, tuple(s.labels.items())): s.value for s in got}
        assert by_name[("smescore_score_psi", (("model_version", tw.V),))] == psi["__score__"]
        assert by_name[("smescore_feature_out_of_range_share",
                        (("model_version", tw.V), ("feature", "late_vat")))] == 0.02
    assert lifecycle.latest_backtest(bq, tw.V) == lifecycle.latest_backtest(wh, tw.V)
    assert lifecycle.latest_backtest(bq, tw.V)["auc"] == pytest.approx(0.74)    # D2, the latest
    assert lifecycle.latest_backtest(bq, tw.V, D1)["auc"] == pytest.approx(0.78)
    assert lifecycle.latest_backtest(bq, "v-unknown") is None
    assert not bqlib.RiskTables(conn, "no_such_dataset").has_table("performance")

    duck, got = report_data.load(wh, D1), report_data.load(bq, D1)
    assert got.run["run_id"] == duck.run["run_id"] == "run-d1"
    assert (got.previous_as_of, got.backtest_as_of) == (duck.previous_as_of, duck.backtest_as_of)
    for frame in ("score_counts", "grades", "sources", "drift", "drivers", "challenger",
                  "performance", "roc"):
        a, b = getattr(duck, frame), getattr(got, frame)
        assert list(a.columns) == list(b.columns), frame
        assert _frame_rows(a) == _frame_rows(b), frame
    assert list(got.drivers.feature)[:2] == ["sales_trend", "late_vat"]
    with pytest.raises(ValueError, match="not a BigQuery project and dataset"):
        bqlib.RiskTables(conn, "risk`; DROP TABLE scores; --")


def test_the_report_command_reads_bigquery(both_engines, monkeypatch, tmp_path, capsys):
    wh, conn, dataset = both_engines
    monkeypatch.setenv(bqlib.EMULATOR_ENV, conn.emulator)
    out = tmp_path / "report.html"
    assert cli.main(["report", f"--as-of={D2}", f"--bq-project={PROJECT}",
                     f"--risk-dataset={dataset}", f"--bq-location={LOCATION}", f"--out={out}",
                     "--registry="]) == 0
    page = out.read_text(encoding="utf-8")
    assert "run-d2" in page and "run-d1" not in page
    capsys.readouterr()
    assert cli.main(["report", f"--as-of={D2}", f"--bq-project={PROJECT}",
                     "--risk-dataset=risk; DROP TABLE scores", f"--out={out}"]) == 2
    err = capsys.readouterr().err
    assert "not a BigQuery project and dataset" in err and len(err.splitlines()) == 1


def _frame_rows(frame) -> list[tuple]:
    """A report frame's rows, sorted, floats rounded, timestamps naive UTC, NaN/NaT as None."""
    rows = []
    for row in frame.astype(object).where(frame.notna(), None).to_dict("records"):
        row = normal({k: v.to_pydatetime() if hasattr(v, "to_pydatetime") else v
                      for k, v in row.items()})
        rows.append(tuple(round(v, 9) if isinstance(v, float) else v for v in row.values()))
    return sorted(rows, key=_sort_key)


def _sample(s) -> tuple:
    return s.metric, tuple(sorted(s.labels.items())), round(float(s.value), 9)


# ----------------------------------------------------------------------------- feeds

@pytest.fixture(scope="module")
def portfolio(tmp_path_factory) -> str:
    """A small generated portfolio (the emulator's REST reads run at ~10k rows/s)."""
    from synth.generate import generate
    out = str(tmp_path_factory.mktemp("bq-portfolio"))
    generate(out, firms=150, months=30, end_date=END_DATE, seed=5)
    return out


@pytest.fixture(scope="module")
def bq_feeds(bq_emulator, portfolio) -> str:
    """The portfolio's feeds, loaded into a BigQuery dataset as they are."""
    return load_feeds(bqlib.Connection(PROJECT, LOCATION, emulator=bq_emulator), "feeds",
                      portfolio)


def load_feeds(conn, dataset: str, folder: str) -> str:
    """A feeds folder's tables loaded into a BigQuery dataset as they are."""
    from google.cloud import bigquery
    from beam_jobs.sources import feed_schema_fields
    bqlib.ensure_dataset(conn, dataset)
    for feed in feeds.FEEDS:
        table = pq.read_table(os.path.join(folder, feed)).cast(feeds.FEEDS[feed].schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        config = bigquery.LoadJobConfig(source_format="PARQUET",
                                        schema=bqlib.schema_fields(feed_schema_fields(feed)))
        conn.client.load_table_from_file(
            pa.BufferReader(sink.getvalue()), conn.table_id(dataset, feed), job_config=config,
            timeout=conn.timeout).result(timeout=120)
    return dataset


def known_on(portfolio, feed, as_of) -> pa.Table:
    """A feed's files filtered as its query filters them (date on or before as_of, or null)."""
    table = pq.read_table(os.path.join(portfolio, feed)).cast(feeds.FEEDS[feed].schema)
    if feed == "enterprises":
        return table
    date = table.column(feeds.FEEDS[feed].date_column)
    return table.filter(pc.or_kleene(pc.less_equal(date, pa.scalar(as_of, pa.date32())),
                                     pc.is_null(date)))


AS_OF = dt.date(2026, 8, 31)       # two months before the feeds end: the filter has work to do


def staging_tables(conn, dataset) -> list[str]:
    return [t.table_id for t in conn.client.list_tables(f"{PROJECT}.{dataset}")
            if t.table_id.startswith("staging__")]


def test_feed_source_stages_the_parameterised_queries_and_feeds_the_same_features(
        bq_conn, bq_feeds, risk_dataset, portfolio):
    from transforms.beam_features import ComputeFeatures
    source = BigQueryFeedSource(bq_config(risk_dataset, bq_feeds), AS_OF, bq_conn)
    source.check()
    staged = source.stage()
    assert staged == {f: known_on(portfolio, f, AS_OF).num_rows for f in feeds.FEEDS}
    assert staged["invoices"] < pq.read_table(os.path.join(portfolio, "invoices")).num_rows
    fp = source.fingerprint()
    assert fp == BigQueryFeedSource(bq_config(risk_dataset, bq_feeds), AS_OF, bq_conn).fingerprint()
    later = BigQueryFeedSource(bq_config(risk_dataset, bq_feeds), END_DATE, bq_conn)
    assert later.fingerprint() != fp
    later.cleanup()

    def same_features(actual):
        [by_source] = actual
        got, want = (pa.concat_tables(by_source[k]).sort_by("enterprise_id")
                     for k in ("bigquery", "files"))
        assert got.num_rows == want.num_rows > 100
        assert got.equals(want), "features from BigQuery differ from features from files"

    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        tagged = []
        for tag, src in (("bigquery", source), ("files", LocalFilesSource(portfolio))):
            features, _ = src.read(p) | f"Features[{tag}]" >> ComputeFeatures([AS_OF], 4)
            tagged.append(features | f"List[{tag}]" >> beam.combiners.ToList()
                          | f"Tag[{tag}]" >> beam.Map(lambda t, tag=tag: (tag, t)))
        assert_that(tagged | beam.Flatten() | beam.combiners.ToDict(), same_features)
    source.cleanup()
    assert staging_tables(bq_conn, risk_dataset) == []


def test_training_reads_its_feeds_from_bigquery_and_makes_the_same_model_as_from_files(
        bq_conn, small_feeds, trained, risk_dataset, monkeypatch, tmp_path, capsys):
    """`smescore train --feeds-dataset`: training reads the feeds through the nightly job's feed
    source (beam_jobs/train_job.py), so from BigQuery it learns from the same snapshots as the
    session's model learnt from the files, with the same design, and registers the same model
    version with the same test figures (the session's book: the 150-firm portfolio leaves test
    dates without a default)."""
    monkeypatch.setenv(bqlib.EMULATOR_ENV, bq_conn.emulator)
    _, version, card = trained
    hp, design = card["hyperparameters"], card["design"]
    feeds_dataset = load_feeds(bq_conn, f"{risk_dataset}_feeds", small_feeds)
    registry = str(tmp_path / "bigquery")
    assert cli.main(["train", f"--registry={registry}", f"--bq-project={PROJECT}",
                     f"--feeds-dataset={feeds_dataset}", f"--risk-dataset={risk_dataset}",
                     f"--bq-location={LOCATION}", f"--max-epochs={hp['max_epochs']}",
                     f"--patience={hp['patience']}", f"--seed={hp['seed']}",
                     f"--background-size={design['background_size']}",
                     f"--n-shards={design['n_shards']}"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == version
    with open(os.path.join(registry, "versions", version, "model_card.json")) as fh:
        from_bigquery = json.load(fh)
    # the snapshots are the same bytes; the TFT graph's saved_model.pb is not byte-stable from
    # one run to the next (its fingerprint differs between two runs on the same files too)
    assert (from_bigquery["fingerprints"]["training_data"]
            == card["fingerprints"]["training_data"])
    assert from_bigquery["rows"] == card["rows"]
    assert from_bigquery["metrics"]["test"] == card["metrics"]["test"]
    assert card["oracle_auc"] is not None and from_bigquery["oracle_auc"] is None
    assert staging_tables(bq_conn, risk_dataset) == []


def test_feed_source_refuses_missing_feed_tables(bq_conn, risk_dataset):
    bqlib.ensure_dataset(bq_conn, "no_feeds_here")
    source = BigQueryFeedSource(bq_config(risk_dataset, "no_feeds_here"), AS_OF, bq_conn)
    with pytest.raises(FileNotFoundError, match=r"no feed table\(s\) \['enterprises', .*'loans'\]"):
        source.check()


def test_the_production_read_is_read_from_bigquery_on_the_staged_tables():
    """Without an emulator the pipeline reads each staged table with ReadFromBigQuery (Storage
    Read API); building the graph needs no network."""
    conn = bqlib.Connection("my-risk-project", "EU", emulator=None)
    source = BigQueryFeedSource(BigQueryConfig("my-risk-project", "sme_feeds", "sme_risk", "EU"),
                                AS_OF, conn)
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    out = source.read(p)
    assert set(out) == set(feeds.FEEDS)
    reads = {t.full_label: t.transform for t in p.transforms_stack[0].parts
             if t.full_label.startswith("ReadFromBigQuery[")}
    assert sorted(reads) == sorted(f"ReadFromBigQuery[{f}]" for f in feeds.FEEDS)
    read = reads["ReadFromBigQuery[invoices]"]
    assert read.method == beam.io.ReadFromBigQuery.Method.DIRECT_READ
    assert read._kwargs["table"] == "my-risk-project:sme_risk.staging__feed_invoices__20260831"


def test_rows_as_bigquery_returns_them_become_the_feed_schema():
    from beam_jobs.sources import rows_to_table
    rows = [{"enterprise_id": "E1", "period_month": dt.date(2026, 8, 1),
             "filed_date": dt.date(2026, 9, 14), "taxable_sales": 1200.5, "vat_paid": 156.0,
             "filed_late": False, "si_headcount": 7},
            {"enterprise_id": "E2", "period_month": dt.date(2026, 8, 1), "filed_date": None,
             "taxable_sales": None, "vat_paid": 0.0, "filed_late": None, "si_headcount": None}]
    table = rows_to_table(rows, "tax_filings")
    assert table.schema == feeds.FEEDS["tax_filings"].schema
    assert table.to_pylist() == rows


# ----------------------------------------------------------------------------- the nightly job

def test_the_nightly_job_reads_feeds_from_and_publishes_to_bigquery(
        bq_conn, bq_feeds, risk_dataset, portfolio, trained, monkeypatch, tmp_path):
    """`--source=bigquery --sink=bigquery` end to end: parameterised feed queries, the trained
    SavedModel on DirectRunner, WriteToBigQuery, the replace transaction, then the metrics on a
    real Pushgateway and the run report, read back from BigQuery; the emulator stands in for
    BigQuery through the environment variable the client honours."""
    from beam_jobs import score_portfolio
    registry, version, _ = trained
    monkeypatch.setenv(bqlib.EMULATOR_ENV, bq_conn.emulator)
    loaded_by_driver, load_files, driver_reads = [], [], []
    load = BigQueryRiskSink._load
    monkeypatch.setattr(BigQueryRiskSink, "_load", lambda self, staged, tables_, work: (
        loaded_by_driver.extend(tables_), load(self, staged, tables_, work))[1])
    load_parquet = bqlib.load_parquet

    def recorded_load(conn, dataset, table, path):
        with open(path, "rb") as fh:
            load_files.append((table.split("__")[1], fh.read(4)))
        return load_parquet(conn, dataset, table, path)
    monkeypatch.setattr(bqlib, "load_parquet", recorded_load)
    read_table, driver_publish = publish.pq.read_table, publish.RunContext._publish
    in_driver = []

    def recorded_read(path, *args, **kwargs):
        if in_driver:
            driver_reads.append(os.path.basename(str(path)))
        return read_table(path, *args, **kwargs)

    def driver_side(self, *args):
        in_driver.append(True)
        try:
            return driver_publish(self, *args)
        finally:
            in_driver.clear()
    monkeypatch.setattr(publish.pq, "read_table", recorded_read)
    monkeypatch.setattr(publish.RunContext, "_publish", driver_side)
    argv = [f"--as_of={AS_OF}", f"--registry={registry}", "--source=bigquery", "--sink=bigquery",
            f"--bq_project={PROJECT}", f"--feeds_dataset={bq_feeds}",
            f"--risk_dataset={risk_dataset}", "--n_shards=4", f"--report_dir={tmp_path}"]
    with services.pushgateway(str(tmp_path / "pushgateway.log")) as gateway:
        result = score_portfolio.run(argv + [f"--pushgateway={gateway}"],
                                     save_main_session=False, progress=lambda m: None)
        scraped = services.scrape(gateway, metrics.JOB, f"bigquery:{PROJECT}.{risk_dataset}")

    firms = known_on(portfolio, "enterprises", AS_OF)
    established = pc.sum(pc.less_equal(firms.column("established_date"),
                                       pa.scalar(AS_OF, pa.date32()))).as_py()
    n = counts(bq_conn, risk_dataset, {"as_of_date": AS_OF})
    assert n["scores"] == result["firms"] == established > 100
    assert n["firm_segments"] == established and n["runs"] == 1
    assert n["drift"] > len(catalog.NAMES)             # the score's and every feature's PSI
    assert n["attributions"] == result["firms_scored_model"] * len(catalog.NAMES) > 0
    # No per-firm rows through the driver: the workers loaded the per-firm tables and the
    # summary; the driver loaded and read only small tables; every load file is Parquet.
    assert sorted(loaded_by_driver) == ["challenger_comparison", "drift", "rejected_records",
                                        "runs"]
    assert sorted(driver_reads) == ["challenger_comparison.parquet", "drift.parquet",
                                    "prestaged.parquet", "rejected.parquet", "rows_in.parquet",
                                    "score_counts.parquet"]
    assert sorted(t for t, _ in load_files) == sorted(
        ["challenger_comparison", "drift", "rejected_records", "runs", *risk_sinks.WORKER_LOADED])
    assert {magic for _, magic in load_files} == {b"PAR1"}
    assert set(result["load_bytes"]) == set(risk_sinks.WORKER_LOADED)
    assert all(b > 0 for b in result["load_bytes"].values())
    text = bq_conn.rows(f"SELECT feature, COUNT(*) AS n, COUNT(value_text) AS n_text, "
                        f"COUNT(value) AS n_value FROM {bq_conn.ref(risk_dataset, 'attributions')} "
                        f"WHERE as_of_date = @d AND feature IN (@f1, @f2) GROUP BY feature",
                        {"d": AS_OF, "f1": "ent_province", "f2": "hc_last"})
    by = {r["feature"]: (r["n"], r["n_text"], r["n_value"]) for r in text}
    n_model = result["firms_scored_model"]
    assert by["ent_province"] == (n_model, n_model, 0)          # a category is text, not a number
    assert by["hc_last"][:2] == (n_model, 0)
    assert result["rows_in"] == {f: known_on(portfolio, f, AS_OF).num_rows for f in feeds.FEEDS}
    run = bq_rows(bq_conn, risk_dataset, "runs")[0]
    assert (run["run_id"], run["status"], run["model_version"]) == (
        result["run_id"], "succeeded", version)
    grades = bq_conn.rows(f"SELECT SUM(n_firms) AS n, SUM(share) AS share FROM "
                          f"{bq_conn.ref(risk_dataset, 'grade_distribution')} "
                          f"WHERE as_of_date = @d", {"d": AS_OF})
    assert grades[0]["n"] == established and grades[0]["share"] == pytest.approx(1.0)
    assert staging_tables(bq_conn, risk_dataset) == []
    assert result["metrics_pushed"] and result["report"] == str(tmp_path / f"run-report-{AS_OF}.html")
    v = (("model_version", version),)
    assert scraped["smescore_run_success"][v] == 1.0
    by_grade = {dict(k)["grade"]: n for k, n in scraped["smescore_firms_by_grade"].items()}
    assert sum(by_grade.values()) == established
    assert scraped["smescore_score_psi"][v] == pytest.approx(next(
        r["value"] for r in bq_rows(bq_conn, risk_dataset, "drift") if r["metric"] == "psi"
        and r["feature"] == "__score__" and r["segment"] == "all"))
    with open(result["report"], encoding="utf-8") as fh:
        assert result["run_id"] in fh.read()


BACKTEST_AS_OF = dt.date(2025, 10, 31)     # the portfolio's loans report through 2026-10


def test_a_backtest_on_bigquery_writes_what_it_writes_from_files_to_duckdb(
        bq_conn, bq_feeds, risk_dataset, portfolio, trained, monkeypatch, tmp_path, capsys):
    """The nightly job of a date and the backtest of that date, once with the feeds and risk
    tables in BigQuery (`smescore backtest --feeds-dataset --risk-dataset`), once with the same
    feeds as files and a DuckDB warehouse: the same performance rows; the automatic rollback reads
    them from BigQuery."""
    from beam_jobs import score_portfolio
    from beam_jobs import backtest
    registry, version, _ = trained
    monkeypatch.setenv(bqlib.EMULATOR_ENV, bq_conn.emulator)
    # A year before the model's baseline date, with a drift config that alerts on any score PSI:
    # the operator publishes anyway, recorded as an override (the gates' records through BigQuery).
    sensitive = tmp_path / "drift.json"
    sensitive.write_text(json.dumps({"psi": {"warn": 0.0, "alert": 1e-6},
                                     "missing_rate_change": {"warn": 0.05, "alert": 0.10},
                                     "attribution_drift": {"warn": 0.25, "alert": 0.50},
                                     "out_of_range": {"warn": 0.01, "alert": 0.05}}))
    common = [f"--as_of={BACKTEST_AS_OF}", f"--registry={registry}", "--n_shards=4",
              f"--drift_config={sensitive}",
              "--override_gate=score_psi", "--override_reason=backtest cohort, a year back"]
    score_portfolio.run(common + ["--source=bigquery", "--sink=bigquery", f"--bq_project={PROJECT}",
                                  f"--feeds_dataset={bq_feeds}", f"--risk_dataset={risk_dataset}"],
                        save_main_session=False, progress=lambda m: None)
    wh = str(tmp_path / "risk.duckdb")
    score_portfolio.run(common + [f"--feeds={portfolio}", f"--warehouse={wh}"],
                        save_main_session=False, progress=lambda m: None)
    overridden = [(g["gate"], g["status"], g["note"].endswith("overridden: backtest cohort, a "
                                                              "year back"))
                  for r in bq_rows(bq_conn, risk_dataset, "runs") for g in r["gates"]
                  if g["status"] != "passed"]
    assert overridden == [("score_psi", "overridden", True)]
    capsys.readouterr()
    assert cli.main(["backtest", f"--as-of={BACKTEST_AS_OF}", f"--bq-project={PROJECT}",
                     f"--feeds-dataset={bq_feeds}", f"--risk-dataset={risk_dataset}",
                     f"--bq-location={LOCATION}", "--n-shards=4", "--registry="]) == 0
    result = json.loads(capsys.readouterr().out)
    local = backtest.run_backtest(BACKTEST_AS_OF, portfolio, wh, None, n_shards=4,
                                  progress=lambda m: None)
    assert result["versions"] == local["versions"] and result["rows"] == local["rows"]
    assert result["cohort_defaults"] == local["cohort_defaults"] > 0
    sql = ("SELECT * EXCLUDE (backtested_at) FROM performance WHERE as_of_date = ? "
           "ORDER BY model_version, segment_type, segment")
    duck = Warehouse(wh).query(sql, [BACKTEST_AS_OF]).to_pylist()
    big = bqlib.RiskTables(bq_conn, risk_dataset).query(sql, [BACKTEST_AS_OF]).to_pylist()
    assert len(big) == len(duck) > 1
    for a, b in zip(duck, big):
        assert a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a), (a, b)
    seen = lifecycle.latest_backtest(bqlib.RiskTables(bq_conn, risk_dataset), version)
    assert seen["auc"] == pytest.approx(local["versions"][version]["auc"])
    # What `smescore promote/rollback --risk-dataset` records in the audit log.
    args, _ = cli.parse(["promote", version, f"--registry={registry}",
                         f"--bq-project={PROJECT}", f"--risk-dataset={risk_dataset}",
                         f"--bq-location={LOCATION}"])
    evidence = lifecycle.version_metrics(registry, version, cli._risk_tables(args))
    assert evidence["backtest"] == lifecycle.latest_backtest(wh, version)
    assert staging_tables(bq_conn, risk_dataset) == []


# ----------------------------------------------------------------------------- the scoring service

def test_the_service_reads_a_firms_night_the_same_from_either_engine(both_engines):
    """`smescore serve --risk-dataset` (service/nightly.py) against `--warehouse`: the same
    answer, points, reasons and values of every firm on every night, and its last night."""
    from service.nightly import NightlyTables
    wh, conn, dataset = both_engines
    duck = NightlyTables(wh)
    bq = NightlyTables(BigQueryRiskSink(bq_config(dataset), conn))
    seen = 0
    for firm in ("E1", "E2", "E3", "E4", "E5", "E404"):
        for as_of in (D1, D2, D3, None):
            a, b = duck.firm(firm, as_of), bq.firm(firm, as_of)
            assert a == b, (firm, as_of)
            seen += a is not None
    assert seen >= 12
    answer, values = duck.firm("E1", D1)
    assert answer["points"] == {"sales_trend": -30.0, "late_vat": -10.0}
    assert values == {"sales_trend": -0.4, "late_vat": None}
    assert [r["feature"] for r in answer["reasons"]] == ["sales_trend", "late_vat"]
    assert duck.firm("E1")[0]["as_of_date"] == max(D1, D2, D3)


def test_the_service_holds_the_same_feeds_from_bigquery_as_from_files(
        bq_conn, bq_feeds, risk_dataset, portfolio):
    """`smescore serve --feeds-dataset`: the feed queries staged and read back into the service's
    feed store (then the staging tables dropped) give every firm the features the folder gives."""
    from service import core
    from service.feed_store import FeedStore
    source = BigQueryFeedSource(bq_config(risk_dataset, bq_feeds), END_DATE, bq_conn,
                                purpose="serve")
    from_bq, from_files = FeedStore.from_bigquery(source), FeedStore(portfolio)
    assert staging_tables(bq_conn, risk_dataset) == []
    assert sorted(from_bq.controller) == sorted(from_files.controller)
    for feed in feeds.FEEDS:
        assert from_bq.tables[feed].num_rows == known_on(portfolio, feed, END_DATE).num_rows
    firms = sorted(from_files.controller)[::15]
    for firm in firms:
        got, _ = core.features_from_records(from_bq.group_of(firm), AS_OF,
                                            from_bq.book_medians(AS_OF), strict=False)
        want, _ = core.features_from_records(from_files.group_of(firm), AS_OF,
                                             from_files.book_medians(AS_OF), strict=False)
        assert got.equals(want), firm
    assert len(firms) >= 10

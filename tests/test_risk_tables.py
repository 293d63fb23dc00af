"""One contract for the risk tables, run against both engines: the DuckDB warehouse and a BigQuery
dataset (the emulator of tests/bq_emulator.py), each opened by beam_jobs.risk_sinks.open_risk_tables.
Every test reads back through the same interface (smescore.warehouse.RiskTableStore)."""
from __future__ import annotations

import pytest

from beam_jobs.options import BigQueryConfig
from beam_jobs.risk_sinks import BigQueryRiskSink, open_risk_tables
from smescore import bigquery as bqlib
from smescore import tables
from smescore.warehouse import Warehouse
from tests import test_warehouse as tw
from tests.bq_emulator import LOCATION, PROJECT, bq_conn, bq_emulator  # noqa: F401
from tests.test_bigquery import date_tables, performance

D1, D2 = tw.D1, tw.D2


@pytest.fixture(params=["duckdb", "bigquery"])
def store(request, tmp_path):
    """Fresh, empty risk tables on each engine."""
    if request.param == "duckdb":
        opened = open_risk_tables(str(tmp_path / "risk.duckdb"))
        assert isinstance(opened, Warehouse)
    else:
        conn = request.getfixturevalue("bq_conn")
        dataset = f"contract_{request.node.name.split('[')[0][-20:]}_{id(tmp_path) % 10_000}"
        bqlib.ensure_dataset(conn, dataset)
        opened = open_risk_tables(BigQueryConfig(PROJECT, None, dataset, LOCATION), conn)
        assert isinstance(opened, BigQueryRiskSink)
    opened.ensure_schema()
    return opened


def count(store, table, as_of) -> int:
    return store.query(f"SELECT COUNT(*) AS n FROM {table} WHERE as_of_date = ?",
                       [as_of]).column("n")[0].as_py()


def test_ensure_schema_makes_every_contract_table_and_is_idempotent(store):
    store.ensure_schema()
    assert all(store.has_table(name) for name in tables.TABLES)
    assert not store.has_table("no_such_table")
    assert store.instance


def test_publish_replaces_a_date_atomically_and_keeps_other_dates(store):
    first = store.publish(D1, date_tables(D1, tw.D1_SCORES, "run-d1", {"__score__": 0.02}),
                          tw.run_record(D1, "run-d1"))
    assert first["scores"] == 4 and first["runs"] == 1
    store.publish(D2, date_tables(D2, tw.D2_SCORES, "run-d2", {"__score__": 0.1}),
                  tw.run_record(D2, "run-d2"))
    # D1 again with one firm: the date is replaced, never duplicated; D2 untouched
    store.publish(D1, date_tables(D1, tw.D3_SCORES, "run-d1b", {"__score__": 0.03}),
                  tw.run_record(D1, "run-d1b"))
    assert (count(store, "scores", D1), count(store, "scores", D2)) == (1, 4)
    got = store.query("SELECT enterprise_id, score, grade, run_id FROM scores WHERE as_of_date = ?",
                      [D1]).to_pylist()
    assert got == [{"enterprise_id": "E1", "score": 640, "grade": "4", "run_id": "run-d1b"}]
    reasons = store.query("SELECT reasons FROM scores WHERE as_of_date = ?", [D1]).to_pylist()
    assert [r["feature"] for r in reasons[0]["reasons"]] == ["late_vat"]


def test_a_bad_table_is_refused_and_nothing_is_touched(store):
    store.publish(D1, date_tables(D1, tw.D1_SCORES, "run-d1", {"__score__": 0.02}),
                  tw.run_record(D1, "run-d1"))
    bad = date_tables(D1, tw.D3_SCORES, "run-d1c", {"__score__": 0.03})
    bad["scores"] = bad["scores"].drop(["grade"])
    with pytest.raises(ValueError, match="grade"):
        store.publish(D1, bad, tw.run_record(D1, "run-d1c"))
    assert count(store, "scores", D1) == 4


def test_a_failed_run_is_recorded_without_touching_data(store):
    store.publish(D1, date_tables(D1, tw.D1_SCORES, "run-d1", {"__score__": 0.02}),
                  tw.run_record(D1, "run-d1"))
    failed = {**tw.run_record(D1, "run-d1x", status="failed", message="OSError: disk full",
                              started_hour=5), "attempt_id": "run-d1x-1"}
    store.record_failed_run(failed)
    store.record_failed_run({**failed, "message": "OSError: disk full again"})   # an upsert
    runs = store.query("SELECT run_id, status, message FROM runs ORDER BY run_id").to_pylist()
    assert runs == [{"run_id": "run-d1", "status": "succeeded", "message": ""},
                    {"run_id": "run-d1x", "status": "failed",
                     "message": "OSError: disk full again"}]
    assert count(store, "scores", D1) == 4


def test_replace_partitions_swaps_a_backtest_date(store):
    assert store.replace_partitions(D1, {"performance": performance(D1, 0.78, 12)}) == {
        "performance": 3}
    store.replace_partitions(D1, {"performance": performance(D1, 0.71, 9)})
    got = store.query("SELECT segment, auc FROM performance WHERE as_of_date = ? "
                      "AND segment_type = 'all'", [D1]).to_pylist()
    assert got == [{"segment": "all", "auc": 0.71}]

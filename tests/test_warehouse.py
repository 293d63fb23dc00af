"""The risk-table contract and the DuckDB warehouse: DDL, atomic publish, validation, views, query.

Real DuckDB files under tmp_path, a handful of rows worked out by hand.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import pathlib
import threading

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from smescore import tables
from smescore import warehouse as wh_module
from smescore.warehouse import PublishError, StagedTable, Warehouse

D1, D2, D3 = dt.date(2026, 8, 31), dt.date(2026, 9, 30), dt.date(2026, 10, 31)
V = "2026.10.01-abc"
PARTITIONED = ("scores", "attributions", "portfolio_summary", "rejected_records")


# ----------------------------------------------------------------------------- builders

def reason(feature: str, points: float) -> dict:
    return {"code": f"R_{feature.upper()}", "feature": feature, "points": points,
            "text_zh": f"{feature} 偏弱", "text_en": f"{feature} is weak"}


def scores(as_of, rows, run_id, version=V) -> pa.Table:
    """rows: (enterprise_id, score_source, pd, score, grade, base_points, reasons)."""
    keys = ("enterprise_id", "score_source", "pd", "score", "grade", "base_points", "reasons")
    return pa.Table.from_pylist(
        [{"as_of_date": as_of, "model_version": version, "run_id": run_id,
          "model_role": "champion", **dict(zip(keys, r))}
         for r in rows], schema=tables.arrow_schema("scores"))


def attributions(as_of, rows, version=V) -> pa.Table:
    """rows: (enterprise_id, feature, value, phi, points)."""
    keys = ("enterprise_id", "feature", "value", "phi", "points")
    return pa.Table.from_pylist(
        [{"as_of_date": as_of, "model_version": version, **dict(zip(keys, r))} for r in rows],
        schema=tables.arrow_schema("attributions"))


def summary(as_of, n_firms, version=V) -> pa.Table:
    return pa.Table.from_pylist([{
        "as_of_date": as_of, "model_version": version, "segment_type": "all", "segment": "all",
        "n_firms": n_firms, "mean_pd": 0.05, "expected_defaults": 0.05 * n_firms,
        "score_p10": 500.0, "score_p50": 600.0, "score_p90": 700.0, "share_of_firms": 1.0}],
        schema=tables.arrow_schema("portfolio_summary"))


def rejected(as_of, run_id, n) -> pa.Table:
    return pa.Table.from_pylist([{"run_id": run_id, "as_of_date": as_of, "feed": "invoices",
                                  "record_json": json.dumps({"invoice_id": f"X{i}"}),
                                  "reason": "negative amount"} for i in range(n)],
                                schema=tables.arrow_schema("rejected_records"))


def run_record(as_of, run_id, version=V, status="succeeded", message="", started_hour=1) -> dict:
    started = dt.datetime.combine(as_of, dt.time(started_hour))
    return {"run_id": run_id, "as_of_date": as_of, "model_version": version,
            "started_at": started, "finished_at": started + dt.timedelta(minutes=7),
            "status": status, "rows_in": [{"feed": "enterprises", "rows": 4},
                                          {"feed": "invoices", "rows": 120}],
            "rows_rejected": 2, "firms_scored_model": 2, "firms_scored_rules": 1,
            "message": message, "config_fingerprint": "cfg-1"}


# Four firms on D1: two model-scored, one cold-start, one in default (grade D, no reasons).
D1_SCORES = [
    ("E1", "model", 0.010, 650, "3", 600.0,
     [reason("sales_trend", -30.0), reason("late_vat", -10.0)]),
    ("E2", "model", 0.010, 660, "3", 600.0, [reason("sales_trend", -20.0)]),
    ("E3", "rules", 0.040, 560, "6", 580.0, [reason("late_vat", -5.0), reason("power_drop", -1.0)]),
    ("E4", "in_default", 1.0, 300, "D", None, []),
]
D1_ATTR = [("E1", "sales_trend", -0.4, 0.3466, -30.0), ("E1", "late_vat", None, 0.1155, -10.0),
           ("E2", "sales_trend", -0.3, 0.2311, -20.0), ("E2", "late_vat", 0.0, -0.05, 4.33)]
# D2: E1 stays in 3, E2 moves to 4, E3 exits, E5 is new in grade 2, E4 stays in D.
D2_SCORES = [
    ("E1", "model", 0.010, 652, "3", 600.0, [reason("sales_trend", -28.0)]),
    ("E2", "model", 0.015, 630, "4", 600.0,
     [reason("sales_trend", -35.0), reason("late_vat", -3.0)]),
    ("E5", "model", 0.004, 700, "2", 600.0, []),
    ("E4", "in_default", 1.0, 300, "D", None, []),
]
# D3: only E1 is left, now in grade 4.
D3_SCORES = [("E1", "model", 0.012, 640, "4", 600.0, [reason("late_vat", -12.0)])]


def d1_tables(run_id="run-d1", rows=D1_SCORES) -> dict:
    return {"scores": scores(D1, rows, run_id), "attributions": attributions(D1, D1_ATTR),
            "portfolio_summary": summary(D1, len(rows)),
            "rejected_records": rejected(D1, run_id, 2)}


def simple_tables(as_of, rows, run_id) -> dict:
    return {"scores": scores(as_of, rows, run_id), "attributions": attributions(as_of, []),
            "portfolio_summary": summary(as_of, len(rows)),
            "rejected_records": rejected(as_of, run_id, 0)}


@pytest.fixture()
def wh(tmp_path) -> Warehouse:
    w = Warehouse(tmp_path / "risk.duckdb")
    w.ensure_schema()
    return w


def dump(w: Warehouse) -> dict:
    """Every row of every table, in a fixed order."""
    return {name: w.query(f"SELECT * FROM {name} ORDER BY ALL").to_pylist()
            for name in tables.TABLES}


def rows_of(w: Warehouse, sql: str, params=None) -> list[tuple]:
    t = w.query(sql, params)
    return [tuple(r.values()) for r in t.to_pylist()]


# ----------------------------------------------------------------------------- contract

def test_contract_has_the_issue_tables_and_columns_in_order():
    assert {n: list(t.names) for n, t in tables.TABLES.items()} == {
        "scores": ["as_of_date", "enterprise_id", "model_version", "score_source", "model_role",
                   "pd", "score", "grade", "base_points", "reasons", "run_id"],
        "scores_shadow": ["as_of_date", "enterprise_id", "model_version", "score_source",
                          "model_role", "pd", "score", "grade", "base_points", "reasons", "run_id"],
        "attributions": ["as_of_date", "enterprise_id", "model_version", "feature", "value",
                         "value_text", "phi", "points"],
        "attributions_compact": ["as_of_date", "model_version", "segment_type", "segment",
                                 "feature", "n_firms", "n_negative", "sum_points", "mean_points",
                                 "mean_abs_points", "mean_phi"],
        "portfolio_summary": ["as_of_date", "model_version", "segment_type", "segment", "n_firms",
                              "mean_pd", "expected_defaults", "score_p10", "score_p50",
                              "score_p90", "share_of_firms"],
        "drift": ["as_of_date", "model_version", "feature", "segment", "metric", "value",
                  "warn_threshold",
                  "threshold", "status", "run_id"],
        "challenger_comparison": ["as_of_date", "champion_version", "challenger_version", "metric",
                                  "from_grade", "to_grade", "value", "run_id"],
        "performance": ["as_of_date", "model_version", "segment_type", "segment", "outcome_months",
                        "n_firms", "n_defaults", "auc", "ks", "gini", "brier",
                        "predicted_default_rate", "observed_default_rate", "binomial_p_value",
                        "calibration_status", "backtested_at"],
        "backtest_roc": ["as_of_date", "model_version", "false_positive_rate",
                         "true_positive_rate", "pd_cut"],
        "runs": ["attempt_id", "run_id", "as_of_date", "model_version", "started_at",
                 "finished_at", "status", "rows_in", "rows_rejected", "firms_scored_model",
                 "firms_scored_rules", "message", "config_fingerprint", "serving", "gates"],
        "rejected_records": ["run_id", "as_of_date", "feed", "record_json", "reason"],
        "firm_segments": ["as_of_date", "enterprise_id", "industry", "region", "run_id"],
    }
    for t in tables.TABLES.values():
        assert "as_of_date" in t.names and t.replaced_by in t.names
        assert t.partition_by == ("as_of_date" if t.name != "runs" else None)
        assert set(t.cluster_by) <= set(t.names) and 1 <= len(t.cluster_by) <= 4   # BigQuery: <= 4
        assert all(c.description and "\n" not in c.description for c in t.columns)
    assert tables.table("runs").replaced_by == "attempt_id"
    assert [f.name for f in tables.table("scores").column("reasons").fields] == [
        "code", "feature", "points", "text_zh", "text_en"]


def test_arrow_schema_types():
    s = tables.arrow_schema("scores")
    assert s.field("as_of_date").type == pa.date32() and not s.field("as_of_date").nullable
    assert s.field("score").type == pa.int32() and s.field("base_points").nullable
    assert s.field("reasons").type.value_type.field("points").type == pa.float64()
    r = tables.arrow_schema("runs")
    assert r.field("started_at").type == pa.timestamp("us")
    assert r.field("rows_in").type.value_type == pa.struct(
        [pa.field("feed", pa.string(), False), pa.field("rows", pa.int64(), False)])
    assert tables.arrow_schema("portfolio_summary").field("n_firms").type == pa.int64()


def test_ddl_matches_duckdb_information_schema(wh):
    with duckdb.connect(wh.path, read_only=True) as con:
        for name, t in tables.TABLES.items():
            got = con.execute("SELECT column_name, data_type, is_nullable "
                              "FROM information_schema.columns WHERE table_name = ? "
                              "ORDER BY ordinal_position", [name]).fetchall()
            expected = [(c.name, tables.duckdb_type(c).replace('"', ""),
                         "NO" if c.required or c.fields else "YES") for c in t.columns]
            assert [(n, ty.replace('"', ""), nl) for n, ty, nl in got] == expected
    ddl = tables.duckdb_ddl("runs")
    assert '"rows_in" STRUCT("feed" VARCHAR, "rows" BIGINT)[] NOT NULL' in ddl
    assert '"message" VARCHAR,' in ddl


def test_bigquery_schema_has_repeated_records():
    s = {f["name"]: f for f in tables.bigquery_schema("scores")}
    assert (s["reasons"]["type"], s["reasons"]["mode"]) == ("RECORD", "REPEATED")
    assert [(f["name"], f["type"], f["mode"]) for f in s["reasons"]["fields"]] == [
        ("code", "STRING", "REQUIRED"), ("feature", "STRING", "REQUIRED"),
        ("points", "FLOAT", "REQUIRED"), ("text_zh", "STRING", "REQUIRED"),
        ("text_en", "STRING", "REQUIRED")]
    assert (s["as_of_date"]["type"], s["as_of_date"]["mode"]) == ("DATE", "REQUIRED")
    assert (s["score"]["type"], s["base_points"]["mode"]) == ("INTEGER", "NULLABLE")
    r = {f["name"]: f for f in tables.bigquery_schema("runs")}
    assert (r["rows_in"]["type"], r["rows_in"]["mode"]) == ("RECORD", "REPEATED")
    assert [(f["name"], f["type"]) for f in r["rows_in"]["fields"]] == [
        ("feed", "STRING"), ("rows", "INTEGER")]
    assert r["started_at"]["type"] == "TIMESTAMP" and r["message"]["mode"] == "NULLABLE"
    for name in tables.TABLES:
        schema = tables.bigquery_schema(name)
        assert [f["name"] for f in schema] == list(tables.table(name).names)
        assert all(f["description"] for f in schema)
        json.dumps(schema)        # the JSON form `bq mk --schema` takes


# ----------------------------------------------------------------------------- schema

def test_ensure_schema_is_idempotent_and_keeps_data(wh):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    before = dump(wh)
    wh.ensure_schema()
    wh.ensure_schema()
    assert dump(wh) == before
    names = rows_of(wh, "SELECT table_name, table_type FROM information_schema.tables "
                        "ORDER BY table_name")
    views = sorted(p.stem for p in pathlib.Path(wh_module.VIEWS_DIR).glob("*.sql"))
    assert len(views) >= 5
    assert names == sorted([(t, "BASE TABLE") for t in tables.TABLES] + [(v, "VIEW") for v in views])


def test_ensure_schema_refuses_to_run_without_the_view_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no view definitions"):
        Warehouse(tmp_path / "risk.duckdb", views_dir=tmp_path / "empty").ensure_schema()


def test_ensure_schema_refuses_a_table_that_drifted_from_the_contract(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE scores (as_of_date DATE, enterprise_id VARCHAR, pd DOUBLE)")
    with pytest.raises(RuntimeError, match="table 'scores' in the warehouse does not match"):
        Warehouse(path).ensure_schema()


# ----------------------------------------------------------------------------- publish

def test_publish_writes_every_table_and_the_run(wh):
    written = wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    assert written == {"scores": 4, "attributions": 4, "portfolio_summary": 1,
                       "rejected_records": 2, "runs": 1}
    assert rows_of(wh, "SELECT enterprise_id, score, grade, base_points, len(reasons) "
                       "FROM scores ORDER BY enterprise_id") == [
        ("E1", 650, "3", 600.0, 2), ("E2", 660, "3", 600.0, 1), ("E3", 560, "6", 580.0, 2),
        ("E4", 300, "D", None, 0)]
    assert rows_of(wh, "SELECT reasons[1].feature, reasons[1].points, reasons[1].text_zh "
                       "FROM scores WHERE enterprise_id = 'E1'") == [
        ("sales_trend", -30.0, "sales_trend 偏弱")]
    run = wh.query("SELECT * FROM runs").to_pylist()
    assert len(run) == 1 and run[0]["rows_in"] == [{"feed": "enterprises", "rows": 4},
                                                   {"feed": "invoices", "rows": 120}]
    assert run[0]["started_at"] == dt.datetime(2026, 8, 31, 1)
    assert rows_of(wh, "SELECT value FROM attributions WHERE feature = 'late_vat' "
                       "ORDER BY enterprise_id") == [(None,), (0.0,)]


def test_publish_twice_is_idempotent_and_a_second_date_is_kept_apart(wh):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    first = dump(wh)
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    assert dump(wh) == first
    wh.publish(D2, simple_tables(D2, D2_SCORES, "run-d2"), run_record(D2, "run-d2"))
    counts = rows_of(wh, "SELECT as_of_date, COUNT(*) FROM scores GROUP BY 1 ORDER BY 1")
    assert counts == [(D1, 4), (D2, 4)]
    assert rows_of(wh, "SELECT as_of_date, run_id FROM runs ORDER BY 1") == [
        (D1, "run-d1"), (D2, "run-d2")]
    d1_again = {n: [r for r in rows if r["as_of_date"] == D1] for n, rows in dump(wh).items()}
    assert d1_again == first


def test_republishing_a_date_with_fewer_rows_leaves_no_stale_rows(wh):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    wh.publish(D1, d1_tables("run-d1b", rows=D1_SCORES[:2]), run_record(D1, "run-d1b"))
    assert rows_of(wh, "SELECT enterprise_id, run_id FROM scores ORDER BY 1") == [
        ("E1", "run-d1b"), ("E2", "run-d1b")]
    assert rows_of(wh, "SELECT run_id, COUNT(*) FROM rejected_records GROUP BY 1") == [
        ("run-d1b", 2)]
    # runs is keyed by attempt: both runs of the date stay on record, the last published serves
    assert rows_of(wh, "SELECT attempt_id, run_id, serving FROM runs ORDER BY 1") == [
        ("run-d1-1", "run-d1", False), ("run-d1b-1", "run-d1b", True)]
    # publishing the first run again (its own attempt 2) makes it the one serving
    wh.publish(D1, d1_tables(), {**run_record(D1, "run-d1"), "attempt_id": "run-d1-2"})
    assert rows_of(wh, "SELECT attempt_id, serving FROM runs ORDER BY 1") == [
        ("run-d1-1", False), ("run-d1-2", True), ("run-d1b-1", False)]


def test_a_failure_mid_publish_leaves_every_table_as_it_was(wh, monkeypatch):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    before = dump(wh)
    real = wh_module._replace_rows
    written = []

    def fail_on_third(con, name, rows, key, value):
        if len(written) == 2:
            raise OSError("disk full")
        real(con, name, rows, key, value)
        written.append(name)

    monkeypatch.setattr(wh_module, "_replace_rows", fail_on_third)
    new = d1_tables("run-d1b", rows=D1_SCORES[:1])
    with pytest.raises(PublishError,
                       match=r"rolled back at 'portfolio_summary': OSError: disk full"):
        wh.publish(D1, new, run_record(D1, "run-d1b"))
    assert written == ["scores", "attributions"]          # two tables were written, then undone
    assert dump(wh) == before


def test_a_failing_run_insert_rolls_back_the_data_too(wh, monkeypatch):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    before = dump(wh)
    real = wh_module._replace_rows

    def fail_on_runs(con, name, rows, key, value):
        if name == "runs":
            con.execute("SELECT CAST('not a number' AS INTEGER)")   # a real DuckDB error
        real(con, name, rows, key, value)

    monkeypatch.setattr(wh_module, "_replace_rows", fail_on_runs)
    with pytest.raises(PublishError, match=r"at 'runs': ConversionException"):
        wh.publish(D1, d1_tables("run-d1b", rows=D1_SCORES[:1]), run_record(D1, "run-d1b"))
    assert dump(wh) == before


def _partition_state(con, as_of) -> dict:
    """What a reader sees of one date in every table, inside one read transaction (one snapshot)."""
    con.begin()
    try:
        return {
            "scores": con.execute("SELECT run_id, COUNT(*) FROM scores WHERE as_of_date = ? "
                                  "GROUP BY 1", [as_of]).fetchall(),
            "attributions": con.execute("SELECT COUNT(*) FROM attributions WHERE as_of_date = ?",
                                        [as_of]).fetchall(),
            "portfolio_summary": con.execute("SELECT n_firms FROM portfolio_summary "
                                             "WHERE as_of_date = ?", [as_of]).fetchall(),
            "rejected_records": con.execute("SELECT run_id, COUNT(*) FROM rejected_records "
                                            "WHERE as_of_date = ? GROUP BY 1", [as_of]).fetchall(),
        }
    finally:
        con.commit()


OLD_STATE = {"scores": [("run-d1", 4)], "attributions": [(4,)], "portfolio_summary": [(4,)],
             "rejected_records": [("run-d1", 2)]}
NEW_STATE = {"scores": [("run-d1b", 1)], "attributions": [(4,)], "portfolio_summary": [(1,)],
             "rejected_records": [("run-d1b", 2)]}


def test_a_reader_sees_the_old_date_until_commit(wh, monkeypatch):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    # A second connection in this process (DuckDB: one writing process; in-process connections
    # share the database and each reads its own snapshot).
    reader = duckdb.connect(wh.path)
    real = wh_module._replace_rows
    seen = []

    def write_then_look(con, name, rows, key, value):
        real(con, name, rows, key, value)
        seen.append((name, _partition_state(reader, D1)))

    monkeypatch.setattr(wh_module, "_replace_rows", write_then_look)
    try:
        wh.publish(D1, d1_tables("run-d1b", rows=D1_SCORES[:1]), run_record(D1, "run-d1b"))
        assert [name for name, _ in seen] == [*PARTITIONED, "runs"]
        assert all(state == OLD_STATE for _, state in seen)
        assert _partition_state(reader, D1) == NEW_STATE
    finally:
        reader.close()


def test_a_concurrent_reader_never_sees_a_mix(wh):
    versions = [(d1_tables(), run_record(D1, "run-d1")),
                (d1_tables("run-d1b", rows=D1_SCORES[:1]), run_record(D1, "run-d1b"))]
    wh.publish(D1, *versions[0])
    reader = duckdb.connect(wh.path)
    done, errors = threading.Event(), []

    def writer():
        try:
            for i in range(12):
                wh.publish(D1, *versions[(i + 1) % 2])
        except BaseException as err:      # surfaced by the assertion below
            errors.append(err)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    states = []
    try:
        while not done.is_set():
            states.append(_partition_state(reader, D1))
        states.append(_partition_state(reader, D1))
    finally:
        thread.join()
        reader.close()
    assert errors == []
    assert len(states) > 1 and all(s in (OLD_STATE, NEW_STATE) for s in states)
    assert states[-1] == OLD_STATE            # 12 publishes alternate back to the first version


# ----------------------------------------------------------------------------- validation

def _drop(t, col):
    return t.drop_columns([col])


def _set(t, col, values, type_=None):
    i = t.schema.get_field_index(col)
    return t.set_column(i, pa.field(col, type_ or t.schema.field(col).type),
                        pa.array(values, type_ or t.schema.field(col).type))


def _scores_as_parquet_would_give_it_back(t):
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return pq.read_table(io.BytesIO(buf.getvalue()))


BAD_TABLES = [
    ("missing column", lambda t: {**t, "scores": _drop(t["scores"], "pd")},
     r"table 'scores': missing column\(s\) \['pd'\]"),
    ("extra column", lambda t: {**t, "scores": t["scores"].append_column("x", pa.array([1] * 4))},
     r"table 'scores': .*unexpected column\(s\) \['x'\]"),
    ("wrong type", lambda t: {**t, "scores": _set(t["scores"], "score", [1.0] * 4, pa.float64())},
     r"table 'scores', column 'score': expected type int32, got double"),
    ("null in a required column",
     lambda t: {**t, "attributions": _set(t["attributions"], "feature", [None, "a", "b", "c"],
                                          pa.string())},
     r"table 'attributions', column 'feature' is required but has 1 null value"),
    ("NaN in a required column",
     lambda t: {**t, "scores": _set(t["scores"], "pd", [float("nan"), 0.1, 0.1, 1.0])},
     r"table 'scores', column 'pd' is required but has 1 null value"),
    ("null inside a reason", lambda t: {**t, "scores": _set(
        t["scores"], "reasons", [[{**reason("a", -1.0), "code": None}], [], [], []],
        pa.list_(pa.struct([pa.field(n, pa.float64() if n == "points" else pa.string())
                            for n in ("code", "feature", "points", "text_zh", "text_en")])))},
     r"table 'scores', column 'reasons', column 'code' is required but has 1 null"),
    ("grade off the master scale", lambda t: {**t, "scores": _set(t["scores"], "grade",
                                                                  ["3", "3", "11", "D"])},
     r"table 'scores', column 'grade': 1 value\(s\) not in .*e\.g\. \['11'\]"),
    ("a row of another date", lambda t: {**t, "portfolio_summary": summary(D2, 4)},
     r"table 'portfolio_summary', column 'as_of_date': 1 row\(s\) are not"),
    ("rows of another run", lambda t: {**t, "rejected_records": rejected(D1, "run-other", 1)},
     r"table 'rejected_records', column 'run_id': 1 row\(s\) are not 'run-d1'"),
    ("rows of another model", lambda t: {**t, "attributions": attributions(D1, D1_ATTR, "v0")},
     r"table 'attributions', column 'model_version': 4 row\(s\) are not"),
    ("unknown table", lambda t: {**t, "score": t["scores"]}, r"no risk table 'score'"),
    ("runs given as a table", lambda t: {**t, "runs": t["scores"]},
     r"table 'runs' is not replaced"),
    ("not an Arrow table", lambda t: {**t, "scores": t["scores"].to_pylist()},
     r"table 'scores': expected a pyarrow.Table, got list"),
]


@pytest.mark.parametrize("case, change, message", BAD_TABLES, ids=[c[0] for c in BAD_TABLES])
def test_validation_names_the_table_and_column_and_touches_nothing(wh, case, change, message):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    before = dump(wh)
    with pytest.raises(ValueError, match=message):
        wh.publish(D1, change(d1_tables()), run_record(D1, "run-d1"))
    assert dump(wh) == before


BAD_RUNS = [
    ("missing key", lambda r: {k: v for k, v in r.items() if k != "message"},
     r"run record: missing key\(s\) \['message'\]"),
    ("wrong type", lambda r: {**r, "rows_rejected": "two"}, r"run record, key 'rows_rejected'"),
    ("bad status", lambda r: {**r, "status": "ok"}, r"table 'runs', column 'status'"),
    ("failed status", lambda r: {**r, "status": "failed"}, r"use record_failed_run"),
    ("other date", lambda r: {**r, "as_of_date": D2}, r"table 'runs', column 'as_of_date'"),
    ("null in rows_in", lambda r: {**r, "rows_in": [{"feed": "invoices", "rows": None}]},
     r"column 'rows_in', column 'rows' is required"),
]


@pytest.mark.parametrize("case, change, message", BAD_RUNS, ids=[c[0] for c in BAD_RUNS])
def test_a_bad_run_record_is_refused_before_anything_is_touched(wh, case, change, message):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    before = dump(wh)
    with pytest.raises(ValueError, match=message):
        wh.publish(D1, d1_tables("run-d1b"), change(run_record(D1, "run-d1b")))
    assert dump(wh) == before


def test_a_datetime_is_not_a_date(wh):
    with pytest.raises(ValueError, match="as_of_date must be a datetime.date"):
        wh.publish(dt.datetime(2026, 8, 31), d1_tables(), run_record(D1, "run-d1"))


def test_parquet_round_trips_and_loose_types_are_accepted(wh):
    """Parquet names list items 'element' and drops nothing; strings may come back large."""
    t = d1_tables()
    t["scores"] = _scores_as_parquet_would_give_it_back(t["scores"])
    t["rejected_records"] = t["rejected_records"].cast(pa.schema(
        [pa.field(f.name, pa.large_string() if f.type == pa.string() else f.type)
         for f in t["rejected_records"].schema]))
    assert t["scores"].schema.field("reasons").type.value_field.name == "element"
    wh.publish(D1, t, run_record(D1, "run-d1"))
    assert rows_of(wh, "SELECT COUNT(*), SUM(len(reasons)) FROM scores") == [(4, 5)]


def test_nan_in_an_optional_column_is_stored_as_null(wh):
    rows = [r if r[0] != "E4" else (*r[:5], float("nan"), r[6]) for r in D1_SCORES]
    wh.publish(D1, d1_tables(rows=rows), run_record(D1, "run-d1"))
    assert rows_of(wh, "SELECT base_points FROM scores WHERE enterprise_id = 'E4'") == [(None,)]
    # NULL leaves SQL aggregates working; a NaN would have made this NaN
    assert rows_of(wh, "SELECT AVG(base_points) FROM scores") == [(pytest.approx(1780 / 3),)]


def _staged(tmp_path, tables_: dict, row_group_size: int = 2) -> dict:
    """Each table as a Parquet file the way the pipeline stages it (small row groups, so the
    check streams several batches), published as a StagedTable."""
    out = {}
    for name, table in tables_.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        out[name] = StagedTable.of(path)
    return out


def test_staged_parquet_files_publish_the_same_rows_in_the_same_order(wh, tmp_path, monkeypatch):
    """The nightly job publishes its staged files without reading them into memory (DuckDB's
    read_parquet): the same rows, types, NULLs for NaN and row order as the Arrow tables give."""
    monkeypatch.setattr(wh_module, "STAGED_BATCH_ROWS", 2)
    rows = [r if r[0] != "E4" else (*r[:5], float("nan"), r[6]) for r in D1_SCORES]
    attr = D1_ATTR + [("E3", "power_drop", float("nan"), 0.01, -0.9)]
    as_tables = {**d1_tables(rows=rows), "attributions": attributions(D1, attr)}
    from_arrow = Warehouse(tmp_path / "arrow.duckdb")
    from_arrow.ensure_schema()
    written = wh.publish(D1, _staged(tmp_path, as_tables), run_record(D1, "run-d1"))
    assert written == from_arrow.publish(D1, as_tables, run_record(D1, "run-d1")) == {
        "scores": 4, "attributions": 5, "portfolio_summary": 1, "rejected_records": 2, "runs": 1}
    for name in ("scores", "attributions", "portfolio_summary", "rejected_records"):
        sql = f"SELECT * FROM {name} ORDER BY rowid"
        assert wh.query(sql).equals(from_arrow.query(sql)), name
    assert rows_of(wh, "SELECT enterprise_id, feature FROM attributions WHERE value IS NULL "
                       "ORDER BY rowid") == [("E1", "late_vat"), ("E3", "power_drop")]
    assert rows_of(wh, "SELECT base_points FROM scores WHERE enterprise_id = 'E4'") == [(None,)]


def test_a_bad_staged_file_is_refused_before_anything_is_touched(wh, tmp_path, monkeypatch):
    """The check streams the file batch by batch: a bad row in its last batch is found and named
    like a bad Arrow table's, and nothing is replaced."""
    monkeypatch.setattr(wh_module, "STAGED_BATCH_ROWS", 2)
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    before = dump(wh)
    bad = d1_tables("run-d1b")
    bad["scores"] = _set(bad["scores"], "grade", ["3", "3", "6", "11"])
    with pytest.raises(ValueError, match=r"table 'scores', column 'grade': 1 value\(s\) not in"):
        wh.publish(D1, _staged(tmp_path, bad), run_record(D1, "run-d1b"))
    assert dump(wh) == before


# ----------------------------------------------------------------------------- failed runs

def test_a_failed_run_is_recorded_and_no_data_is_touched(wh):
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    before = dump(wh)
    failed = {**run_record(D1, "run-d1x", status="failed", message="RunFailed: too many rejects",
                           started_hour=3), "rows_in": [], "firms_scored_model": 0}
    wh.record_failed_run(failed)
    wh.record_failed_run(failed)                       # idempotent: keyed by attempt_id
    # an attempt of the published run itself that failed: its own row, the published one intact
    wh.record_failed_run({**failed, "run_id": "run-d1", "attempt_id": "run-d1-2"})
    after = dump(wh)
    assert {n: after[n] for n in PARTITIONED} == {n: before[n] for n in PARTITIONED}
    assert rows_of(wh, "SELECT attempt_id, status, serving, message, len(rows_in) "
                       "FROM run_history") == [
        ("run-d1-2", "failed", False, "RunFailed: too many rejects", 0),
        ("run-d1x-1", "failed", False, "RunFailed: too many rejects", 0),
        ("run-d1-1", "succeeded", True, "", 2)]
    assert rows_of(wh, "SELECT DISTINCT as_of_date FROM latest_scores") == [(D1,)]
    with pytest.raises(ValueError, match="takes status 'failed'"):
        wh.record_failed_run(run_record(D1, "run-d1y"))


# ----------------------------------------------------------------------------- views

@pytest.fixture()
def three_dates(wh) -> Warehouse:
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    wh.publish(D3, simple_tables(D3, D3_SCORES, "run-d3"), run_record(D3, "run-d3"))
    wh.publish(D2, simple_tables(D2, D2_SCORES, "run-d2"), run_record(D2, "run-d2"))
    return wh


def test_latest_scores_is_the_newest_date(three_dates):
    assert rows_of(three_dates, "SELECT as_of_date, enterprise_id, score, grade "
                                "FROM latest_scores") == [(D3, "E1", 640, "4")]
    assert three_dates.query("SELECT * FROM latest_scores").column_names == list(
        tables.table("scores").names)


def test_grade_distribution(three_dates):
    got = rows_of(three_dates, "SELECT grade, grade_order, n_firms, share, mean_pd "
                               "FROM grade_distribution WHERE as_of_date = ? "
                               "ORDER BY grade_order", [D1])
    assert got == [("3", 3, 2, 0.5, pytest.approx(0.010)), ("6", 6, 1, 0.25, pytest.approx(0.04)),
                   ("D", 99, 1, 0.25, 1.0)]
    assert rows_of(three_dates, "SELECT as_of_date, SUM(n_firms), SUM(share) "
                                "FROM grade_distribution GROUP BY 1 ORDER BY 1") == [
        (D1, 4, pytest.approx(1.0)), (D2, 4, pytest.approx(1.0)), (D3, 1, pytest.approx(1.0))]


def test_top_risk_drivers(three_dates):
    # D1 reasons: E1 sales_trend -30, late_vat -10; E2 sales_trend -20; E3 late_vat -5,
    # power_drop -1; E4 none. sales_trend and late_vat both hit 2 firms: sales_trend lost more.
    got = rows_of(three_dates, "SELECT feature, n_firms, share_of_firms, total_negative_points, "
                               "mean_points, rank FROM top_risk_drivers WHERE as_of_date = ? "
                               "ORDER BY rank", [D1])
    assert got == [("sales_trend", 2, 0.5, -50.0, -25.0, 1), ("late_vat", 2, 0.5, -15.0, -7.5, 2),
                   ("power_drop", 1, 0.25, -1.0, -1.0, 3)]
    assert rows_of(three_dates, "SELECT feature, n_firms, total_negative_points, rank "
                                "FROM top_risk_drivers WHERE as_of_date = ? ORDER BY rank",
                   [D2]) == [
        ("sales_trend", 2, -63.0, 1), ("late_vat", 1, -3.0, 2)]


def test_grade_migration_between_consecutive_dates(three_dates):
    got = rows_of(three_dates, "SELECT from_date, to_date, from_grade, to_grade, n_firms, "
                               "share_of_from_grade FROM grade_migration ORDER BY ALL")
    assert got == [
        # D1 -> D2: E1 3->3, E2 3->4, E3 6->exited, E4 D->D, E5 new->2
        (D1, D2, "3", "3", 1, 0.5), (D1, D2, "3", "4", 1, 0.5), (D1, D2, "6", "exited", 1, 1.0),
        (D1, D2, "D", "D", 1, 1.0), (D1, D2, "new", "2", 1, 1.0),
        # D2 -> D3: E1 3->4, E2 4->exited, E5 2->exited, E4 D->exited
        (D2, D3, "2", "exited", 1, 1.0), (D2, D3, "3", "4", 1, 1.0),
        (D2, D3, "4", "exited", 1, 1.0), (D2, D3, "D", "exited", 1, 1.0)]


def test_run_history_newest_first(three_dates):
    three_dates.record_failed_run({**run_record(D3, "run-d3-retry", status="failed",
                                                message="OSError: disk full", started_hour=5)})
    assert rows_of(three_dates, "SELECT run_id, as_of_date, status FROM run_history") == [
        ("run-d3-retry", D3, "failed"), ("run-d3", D3, "succeeded"),
        ("run-d2", D2, "succeeded"), ("run-d1", D1, "succeeded")]


VIEW_FILES = sorted((pathlib.Path(wh_module.VIEWS_DIR)).glob("*.sql"))


def test_the_views_are_there():
    assert [p.stem for p in VIEW_FILES] == [
        "attribution_summary", "backtest_history", "drift_history", "grade_distribution",
        "grade_migration",
        "latest_scores", "run_history", "top_risk_drivers", "top_risk_drivers_by_industry"]


@pytest.mark.parametrize("path", VIEW_FILES, ids=[p.stem for p in VIEW_FILES])
def test_each_view_file_is_one_view_named_after_it_and_translates_to_bigquery(path):
    statements = sqlglot.parse(path.read_text(encoding="utf-8"), read="duckdb")
    assert len([s for s in statements if s is not None]) == 1
    create = statements[0]
    assert isinstance(create, sqlglot.exp.Create) and create.kind == "VIEW"
    assert create.args.get("replace") and create.this.name == path.stem
    bq = sqlglot.transpile(path.read_text(encoding="utf-8"), read="duckdb", write="bigquery",
                           unsupported_level=sqlglot.ErrorLevel.RAISE)
    assert bq and f"VIEW {path.stem} AS" in bq[0]


# ----------------------------------------------------------------------------- query

def test_query_binds_parameters(three_dates):
    assert rows_of(three_dates, "SELECT enterprise_id FROM scores WHERE as_of_date = ? AND pd > ? "
                                "ORDER BY 1", [D1, 0.02]) == [("E3",), ("E4",)]
    assert rows_of(three_dates, "SELECT COUNT(*) FROM scores WHERE grade = $grade",
                   {"grade": "3"}) == [(3,)]
    sneaky = "3' OR '1'='1"
    assert rows_of(three_dates, "SELECT COUNT(*) FROM scores WHERE grade = ?", [sneaky]) == [(0,)]
    assert isinstance(three_dates.query("SELECT 1 AS x"), pa.Table)


def test_query_is_read_only(three_dates, tmp_path):
    with pytest.raises(duckdb.Error, match="read-only"):
        three_dates.query("DELETE FROM scores")
    assert rows_of(three_dates, "SELECT COUNT(*) FROM scores") == [(9,)]
    with pytest.raises(FileNotFoundError, match="no warehouse at"):
        Warehouse(tmp_path / "nowhere.duckdb").query("SELECT 1")


def test_a_warehouse_of_one_run_row_per_run_is_migrated_to_attempts(tmp_path):
    """`runs` as it was before attempts: each row becomes its run's attempt 1, the latest
    succeeded run of each date serving; the other tables are untouched."""
    path = tmp_path / "old.duckdb"
    wh = Warehouse(path)
    wh.ensure_schema()
    wh.publish(D1, d1_tables(), run_record(D1, "run-d1"))
    wh.publish(D1, d1_tables("run-d1b", rows=D1_SCORES[:2]),
               run_record(D1, "run-d1b", started_hour=2))
    wh.record_failed_run(run_record(D1, "run-d1c", status="failed", started_hour=3))
    wh.publish(D2, simple_tables(D2, D2_SCORES, "run-d2"), run_record(D2, "run-d2"))
    before = dump(wh)
    with duckdb.connect(str(path)) as con:        # back to the earlier contract's table
        names = ", ".join(wh_module.RUNS_BEFORE_ATTEMPTS)
        con.execute(f"CREATE TABLE legacy AS SELECT {names} FROM runs")
        con.execute("DROP VIEW run_history")
        con.execute("DROP VIEW latest_scores")
        con.execute("DROP TABLE runs")
        con.execute("ALTER TABLE legacy RENAME TO runs")
    wh.ensure_schema()
    wh.ensure_schema()                            # idempotent
    after = dump(wh)
    assert {n: after[n] for n in PARTITIONED} == {n: before[n] for n in PARTITIONED}
    assert rows_of(wh, "SELECT attempt_id, status, serving, len(gates) FROM runs ORDER BY 1") == [
        ("run-d1-1", "succeeded", False, 0), ("run-d1b-1", "succeeded", True, 0),
        ("run-d1c-1", "failed", False, 0), ("run-d2-1", "succeeded", True, 0)]

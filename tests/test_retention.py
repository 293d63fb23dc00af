"""Retention on a real warehouse: four nights of the fixture book, the first and the last
published by the nightly job, the two between them copies of the first (bench.retention_year's
copy_night: two more real runs would add minutes to the suite and nothing the copies lack). The
last night runs under a policy that keeps one date (and month-ends) in full, so its hook compacts
the two copies; then `smescore retain` again, which finds nothing to do."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest

from beam_jobs import score_portfolio
from bench.retention_year import copy_night
from smescore import cli, retention, sqlgen
from smescore.errors import BadInput

NIGHTS = [dt.date(2026, 9, 30), dt.date(2026, 10, 15), dt.date(2026, 10, 22), dt.date(2026, 10, 31)]
COMPACTED = [dt.date(2026, 10, 15), dt.date(2026, 10, 22)]


def _policy_file(folder, last: int) -> str:
    path = os.path.join(folder, f"retention-{last}.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"attributions": {"full_last_dates": last, "full_month_ends": True}}, fh)
    return path


def _night(feeds, registry, warehouse, as_of, policy):
    os.environ[retention.ENV] = policy
    try:
        return score_portfolio.run([f"--feeds={feeds}", f"--as_of={as_of}",
                                    f"--registry={registry}", f"--warehouse={warehouse}",
                                    "--n_shards=2"], save_main_session=False,
                                   progress=lambda m: None)
    finally:
        del os.environ[retention.ENV]


def _frame(path, sql, params=()):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, list(params)).fetch_df()


@pytest.fixture(scope="module")
def nights(small_feeds, trained, tmp_path_factory):
    """(warehouse after the four nights, a copy taken before the last one, last night's result)."""
    registry = trained[0]
    folder = str(tmp_path_factory.mktemp("retention"))
    warehouse = os.path.join(folder, "risk.duckdb")
    first = _night(small_feeds, registry, warehouse, NIGHTS[0], _policy_file(folder, 10))
    assert first["retention"]["compacted"] == []
    with duckdb.connect(warehouse) as con:
        for day in NIGHTS[1:-1]:
            copy_night(con, NIGHTS[0], day)
    before = os.path.join(folder, "before.duckdb")
    shutil.copyfile(warehouse, before)
    last = _night(small_feeds, registry, warehouse, NIGHTS[-1], _policy_file(folder, 1))
    return warehouse, before, last, folder


def test_the_nightly_hook_compacts_what_the_policy_no_longer_keeps(nights):
    warehouse, before, last, _ = nights
    report = last["retention"]
    assert report["dates"] == [d.isoformat() for d in COMPACTED]
    full_rows = _frame(before, "SELECT as_of_date, COUNT(*) AS n FROM attributions "
                               "GROUP BY 1 ORDER BY 1")
    expected = {d.date(): n for d, n in zip(pd.to_datetime(full_rows.as_of_date), full_rows.n)}
    assert [c["rows_removed"] for c in report["compacted"]] == [expected[d] for d in COMPACTED]
    assert report["rows_removed"] > 0 and report["used_bytes_before"] > 0
    held = _frame(warehouse, "SELECT DISTINCT as_of_date FROM attributions ORDER BY 1")
    assert [d.date() for d in pd.to_datetime(held.as_of_date)] == [NIGHTS[0], NIGHTS[-1]]
    compact = _frame(warehouse, "SELECT DISTINCT as_of_date FROM attributions_compact ORDER BY 1")
    assert [d.date() for d in pd.to_datetime(compact.as_of_date)] == COMPACTED
    for table in ("scores", "portfolio_summary", "drift", "firm_segments"):
        counts = [_frame(p, f"SELECT COUNT(*) AS n FROM {table}").n[0] for p in (before, warehouse)]
        assert counts[1] >= counts[0] > 0, table        # kept (plus the last night's rows)


def test_compact_rows_are_the_aggregates_of_the_original_rows(nights):
    """pandas over the rows as they were, against the compacted table."""
    warehouse, before, _, _ = nights
    rows = _frame(before, "SELECT a.as_of_date, a.model_version, a.feature, a.phi, a.points, "
                          "g.industry, g.region FROM attributions a LEFT JOIN firm_segments g "
                          "ON g.as_of_date = a.as_of_date AND g.enterprise_id = a.enterprise_id")
    rows = rows[pd.to_datetime(rows.as_of_date).dt.date.isin(COMPACTED)]
    assert rows.industry.notna().all()
    rows["all"] = "all"
    expected = []
    for segment_type, column in (("all", "all"), ("industry", "industry"), ("region", "region")):
        g = rows.groupby(["as_of_date", "model_version", column, "feature"])
        agg = pd.DataFrame({"n_firms": g.size(),
                            "n_negative": g.points.apply(lambda p: int((p < 0).sum())),
                            "sum_points": g.points.sum(), "mean_points": g.points.mean(),
                            "mean_abs_points": g.points.apply(lambda p: p.abs().mean()),
                            "mean_phi": g.phi.mean()}).reset_index()
        expected.append(agg.rename(columns={column: "segment"}).assign(segment_type=segment_type))
    expected = pd.concat(expected)
    got = _frame(warehouse, "SELECT * FROM attributions_compact")
    key = ["as_of_date", "model_version", "segment_type", "segment", "feature"]
    merged = expected.merge(got, on=key, how="outer", suffixes=("_want", "_got"), indicator=True)
    assert (merged["_merge"] == "both").all()
    assert len(got) == len(expected) > 2 * 20           # every feature, every segment, both dates
    for col in ("n_firms", "n_negative"):
        assert (merged[f"{col}_want"] == merged[f"{col}_got"]).all(), col
    for col in ("sum_points", "mean_points", "mean_abs_points", "mean_phi"):
        np.testing.assert_allclose(merged[f"{col}_got"], merged[f"{col}_want"], rtol=1e-9,
                                   atol=1e-9, err_msg=col)


def test_views_answer_the_same_for_compacted_dates(nights):
    warehouse, before, _, _ = nights
    order = "ORDER BY as_of_date, model_version, segment_type, segment, feature"
    summary = [_frame(p, f"SELECT * FROM attribution_summary WHERE as_of_date IN (?, ?) {order}",
                      COMPACTED) for p in (before, warehouse)]
    assert len(summary[0]) > 0
    pd.testing.assert_frame_equal(summary[0], summary[1], check_exact=False, rtol=1e-9)
    drivers = "SELECT * FROM top_risk_drivers WHERE as_of_date = ? ORDER BY rank, feature"
    by_industry = ("SELECT * FROM top_risk_drivers_by_industry WHERE as_of_date = ? "
                   "ORDER BY industry, rank, feature")
    for sql in (drivers, by_industry):
        old, new = (_frame(p, sql, [COMPACTED[0]]) for p in (before, warehouse))
        assert len(old) > 0
        pd.testing.assert_frame_equal(old, new)


def test_a_second_run_changes_nothing(nights, capsys):
    warehouse, _, _, folder = nights
    summary = "SELECT * FROM attribution_summary ORDER BY ALL"
    then = _frame(warehouse, summary)
    assert cli.main(["retain", "--warehouse", warehouse, "--config",
                     _policy_file(folder, 1)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["dates"], report["rows_removed"]) == ([], 0)
    assert report["used_bytes_after"] == report["used_bytes_before"]
    pd.testing.assert_frame_equal(_frame(warehouse, summary), then)


def test_dry_run_names_the_dates_and_changes_nothing(nights, tmp_path):
    _, before, _, folder = nights
    copy = str(tmp_path / "copy.duckdb")
    shutil.copyfile(before, copy)
    report = retention.apply(copy, retention.Policy(1, True), dry_run=True)
    assert report["dates"] == [COMPACTED[0].isoformat()]     # 10-22 is the latest date there
    assert report["compacted"] == []
    assert _frame(copy, "SELECT COUNT(DISTINCT as_of_date) AS n FROM attributions").n[0] == 3


def test_policy_keeps_the_latest_dates_and_month_ends():
    dates = [dt.date(2026, 1, 31) + dt.timedelta(days=i) for i in range(45)]
    keep = retention.Policy(7, True).full_dates(dates)
    assert keep == set(dates[-7:]) | {dt.date(2026, 1, 31), dt.date(2026, 2, 28)}
    assert retention.Policy(3, False).full_dates(dates) == set(dates[-3:])


def test_policy_file_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"attributions": {"full_last_dates": 0, "full_month_ends": True}}))
    with pytest.raises(BadInput, match=r"r.json: attributions.full_last_dates must be a positive"):
        retention.Policy.load(str(bad))
    bad.write_text(json.dumps({"attributions": {"full_last_dates": 3}}))
    with pytest.raises(BadInput, match=r"missing \['full_month_ends'\]"):
        retention.Policy.load(str(bad))
    assert retention.Policy.load() == retention.Policy(7, True)


def test_bigquery_ddl_expires_attribution_partitions_by_the_policy():
    ddl = sqlgen.bigquery_ddl("attributions")
    assert "OPTIONS(partition_expiration_days=7, description=" in ddl
    assert "partition_expiration_days" not in sqlgen.bigquery_ddl("scores")
    assert "partition_expiration_days" not in sqlgen.bigquery_ddl("attributions_compact")


def test_the_hook_reports_a_failure_instead_of_raising(tmp_path, monkeypatch):
    """The night is published when the hook runs: a broken policy file is said, not raised."""
    from smescore.warehouse import Warehouse
    path = str(tmp_path / "w.duckdb")
    Warehouse(path).ensure_schema()
    said = []
    monkeypatch.setenv(retention.ENV, str(tmp_path / "missing.json"))
    result = retention.after_publish(path, said.append)
    assert result["error"].startswith("BadInput: retention config ")
    assert "missing.json" in result["error"]
    assert said and said[0].startswith(f"[retain] retention not applied to {path}")
    assert retention.after_publish(None, said.append) is None        # BigQuery: not this hook
    monkeypatch.delenv(retention.ENV)
    assert retention.after_publish(path, said.append)["dates"] == []

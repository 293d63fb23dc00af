"""Outcome backtests: the figures on a handmade cohort worked out by hand, the per-date replace of
`performance`/`backtest_roc`, and the refusal before 12 months of outcomes are in.

The backtest on generated data (published and rescored versions) runs in test_lifecycle.py, where
the scenario that needs it scores the date anyway.
"""
from __future__ import annotations

import datetime as dt
from math import comb

import pandas as pd
import pyarrow as pa
import pytest

from beam_jobs import backtest as backtest_job
from beam_jobs.sources import LocalFilesSource
from models import backtest, performance
from smescore import tables
from smescore.warehouse import PublishError, Warehouse

D = dt.date(2025, 10, 31)
AT = dt.datetime(2026, 11, 2, 3, 0)

# Eight firms, worst PD first. Defaults: the 1st, 3rd and 6th.
COHORT = pd.DataFrame({
    "enterprise_id": [f"E{i}" for i in range(1, 9)],
    "pd": [0.30, 0.20, 0.15, 0.10, 0.08, 0.05, 0.03, 0.01],
    "default": [1, 0, 1, 0, 0, 1, 0, 0],
    "industry": ["A", "A", "A", "A", "B", "B", "B", "B"],
    "region": ["R1", "R1", "R1", "R1", "R1", "R1", "R2", "R2"],
    "grade": ["8", "7", "7", "6", "6", "5", "4", "2"],
})


def exact_two_sided(k: int, n: int, p: float) -> float:
    """Sum of the probabilities of every count no likelier than k (the exact test, by hand)."""
    pmf = [comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(n + 1)]
    return sum(x for x in pmf if x <= pmf[k] * (1 + 1e-7))


def test_whole_cohort_figures_by_hand():
    f = performance.segment_figures(COHORT["default"], COHORT["pd"])
    # AUC: pairs (default, non-default) ranked right: 0.30 beats 5, 0.15 beats 4, 0.05 beats 2.
    assert f["auc"] == pytest.approx(11 / 15, abs=1e-12)
    assert f["gini"] == pytest.approx(7 / 15, abs=1e-12)
    # KS: largest gap of the cumulative shares, worst first: after 0.15, 2/3 of the defaults and
    # 1/5 of the rest.
    assert f["ks"] == pytest.approx(2 / 3 - 1 / 5, abs=1e-12)
    brier = (0.7 ** 2 + 0.2 ** 2 + 0.85 ** 2 + 0.1 ** 2 + 0.08 ** 2 + 0.95 ** 2 + 0.03 ** 2
             + 0.01 ** 2) / 8
    assert f["brier"] == pytest.approx(brier, abs=1e-12) == pytest.approx(0.27155, abs=1e-12)
    assert (f["n_firms"], f["n_defaults"]) == (8, 3)
    assert f["predicted_default_rate"] == pytest.approx(0.115, abs=1e-12)
    assert f["observed_default_rate"] == 3 / 8
    assert f["binomial_p_value"] == pytest.approx(exact_two_sided(3, 8, 0.115), rel=1e-9)
    assert f["binomial_p_value"] == pytest.approx(0.0545816497, abs=1e-9)
    assert f["calibration_status"] == "ok"                          # 0.0546 >= 5%


@pytest.mark.parametrize("k, n, rate, status", [
    (12, 100, 0.05, "too_many_defaults"), (0, 100, 0.08, "too_few_defaults"),
    (6, 100, 0.05, "ok")])
def test_calibration_status_follows_the_exact_binomial_test(k, n, rate, status):
    p = performance.binomial_p_value(k, n, rate)
    assert p == pytest.approx(exact_two_sided(k, n, rate), rel=1e-9)
    assert performance.calibration_status(k, n, rate, p) == status


def test_segment_rows_and_undefined_ranking():
    rows = performance.performance_rows(COHORT, D, "v1", AT)
    keyed = {(r["segment_type"], r["segment"]): r for r in rows}
    assert list(keyed)[0] == ("all", "all")
    assert set(keyed) == {("all", "all"), ("industry", "A"), ("industry", "B"), ("region", "R1"),
                          ("region", "R2"), *(("grade", g) for g in ("2", "4", "5", "6", "7", "8"))}
    b = keyed[("industry", "B")]           # PDs .08 .05 .03 .01, the .05 defaulted: beats 2 of 3
    assert (b["n_firms"], b["n_defaults"], b["auc"]) == (4, 1, pytest.approx(2 / 3))
    assert b["predicted_default_rate"] == pytest.approx(0.0425)
    assert b["binomial_p_value"] == pytest.approx(exact_two_sided(1, 4, 0.0425), rel=1e-9)
    r2 = keyed[("region", "R2")]           # no default: nothing to rank
    assert r2["auc"] is None and r2["ks"] is None and r2["gini"] is None
    assert r2["binomial_p_value"] == pytest.approx(1.0) and r2["calibration_status"] == "ok"
    assert all(r["outcome_months"] == 12 and r["backtested_at"] == AT for r in rows)


def test_roc_points():
    roc = performance.roc_rows(COHORT, D, "v1")
    points = [(r["false_positive_rate"], r["true_positive_rate"], r["pd_cut"]) for r in roc]
    # sklearn drops the collinear points; the corners and every turn remain.
    assert points[0] == (0.0, 0.0, 1.0)
    assert points[-1][:2] == (1.0, 1.0)
    assert (0.0, pytest.approx(1 / 3), 0.30) in points
    assert (pytest.approx(0.2), pytest.approx(2 / 3), 0.15) in points
    assert (pytest.approx(0.6), 1.0, 0.05) in points
    area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(points, points[1:]))
    assert area == pytest.approx(11 / 15)                       # the curve's area is the AUC
    assert performance.roc_rows(COHORT[COHORT.region == "R2"], D, "v1") == []


# ----------------------------------------------------------------------------- warehouse

def _tables(version_rows: dict[str, pd.DataFrame], as_of=D) -> dict[str, pa.Table]:
    perf, roc = [], []
    for version, cohort in version_rows.items():
        perf += performance.performance_rows(cohort, as_of, version, AT)
        roc += performance.roc_rows(cohort, as_of, version)
    return {"performance": pa.Table.from_pylist(perf, schema=tables.arrow_schema("performance")),
            "backtest_roc": pa.Table.from_pylist(roc, schema=tables.arrow_schema("backtest_roc"))}


@pytest.fixture()
def wh(tmp_path) -> Warehouse:
    w = Warehouse(tmp_path / "risk.duckdb")
    w.ensure_schema()
    return w


def _count(wh, table, as_of):
    return wh.query(f"SELECT model_version, COUNT(*) AS n FROM {table} WHERE as_of_date = ? "
                    "GROUP BY 1 ORDER BY 1", [as_of]).to_pylist()


def test_replace_partitions_replaces_one_date_of_many_versions(wh):
    other = D - dt.timedelta(days=31)
    written = wh.replace_partitions(D, _tables({"v1": COHORT, "v2": COHORT}))
    wh.replace_partitions(other, _tables({"v1": COHORT}, other))
    assert written == {"performance": 22,
                       "backtest_roc": 2 * len(performance.roc_rows(COHORT, D, "v"))}
    assert _count(wh, "performance", D) == [{"model_version": "v1", "n": 11},
                                            {"model_version": "v2", "n": 11}]
    wh.replace_partitions(D, _tables({"v3": COHORT.iloc[:4]}))        # a rerun of D
    # all, industry A, region R1, grades 8, 7, 6
    assert _count(wh, "performance", D) == [{"model_version": "v3", "n": 6}]
    assert _count(wh, "backtest_roc", D)[0]["model_version"] == "v3"
    assert _count(wh, "performance", other) == [{"model_version": "v1", "n": 11}]
    auc = wh.query("SELECT auc FROM performance WHERE as_of_date = ? AND segment_type = 'all'",
                   [other]).column("auc").to_pylist()
    assert auc == [pytest.approx(11 / 15)]
    assert wh.query("SELECT COUNT(*) AS n FROM runs").column("n").to_pylist() == [0]


def test_replace_partitions_refuses_run_tables_and_rows_of_another_date(wh):
    with pytest.raises(ValueError, match="written by a scoring run"):
        wh.replace_partitions(D, {"scores": tables.arrow_schema("scores").empty_table()})
    with pytest.raises(ValueError, match="written by a scoring run"):
        wh.replace_partitions(D, {"runs": tables.arrow_schema("runs").empty_table()})
    with pytest.raises(ValueError, match=r"'as_of_date': 11 row\(s\) are not"):
        wh.replace_partitions(D, _tables({"v1": COHORT}, D - dt.timedelta(days=1)))
    with pytest.raises(ValueError, match="at least one table"):
        wh.replace_partitions(D, {})


def test_a_failed_replace_leaves_the_date_as_it_was(wh, monkeypatch):
    from smescore import warehouse as wh_module
    wh.replace_partitions(D, _tables({"v1": COHORT}))
    before = wh.query("SELECT * FROM performance ORDER BY ALL").to_pylist()
    real = wh_module._replace_rows

    def fail_on_roc(con, name, rows, key, value):
        if name == "backtest_roc":
            con.execute("SELECT CAST('x' AS INTEGER)")         # a real DuckDB error
        real(con, name, rows, key, value)

    monkeypatch.setattr(wh_module, "_replace_rows", fail_on_roc)
    with pytest.raises(PublishError, match="rolled back at 'backtest_roc'"):
        wh.replace_partitions(D, _tables({"v2": COHORT}))
    assert wh.query("SELECT * FROM performance ORDER BY ALL").to_pylist() == before


# ----------------------------------------------------------------------------- refusals

def test_backtest_refuses_before_twelve_months_of_outcomes(small_feeds, tmp_path):
    # The small portfolio's loan reports end in 2026-10: 2025-10-31 is the last date with a
    # full year after it.
    backtest.check_outcomes_observed(LocalFilesSource(small_feeds), dt.date(2025, 10, 31))
    with pytest.raises(backtest.BacktestError,
                       match=r"ends with report month 2026-10; a 12-month backtest of 2025-11-30 "
                             r"needs report months through 2026-11"):
        backtest_job.run_backtest(dt.date(2025, 11, 30), small_feeds, str(tmp_path / "none.duckdb"))


def test_backtest_refuses_a_date_without_scores(small_feeds, wh):
    with pytest.raises(backtest.BacktestError, match="no model scores of 2025-10-31"):
        backtest_job.run_backtest(D, small_feeds, wh.path)

"""Reason codes: at most four, negative points only, most negative first, sentences with the
firm's actual values; and the portfolio aggregate."""
import numpy as np
import pytest

from models.reasons import rank_reasons, reasons_for, top_drivers
from transforms import catalog

NAMES = ("inv_sales_chg_3m", "tax_late_12m", "ent_industry", "pwr_overdue_max_3m",
         "hc_last", "ent_reg_capital")
CODES = {n: catalog.BY_NAME[n].code for n in NAMES}

POINTS = np.array([
    # firm 0: six features took points away; the four worst, in order: 0, 3, 1, 5
    [-40.0, -12.5, -3.0, -25.0, -1.0, -8.0],
    # firm 1: only positives and zeros -> no reasons
    [10.0, 0.0, 3.0, 0.0, 1.0, 2.0],
    # firm 2: a tie between columns 1 and 4 goes to the earlier feature; -0.2 is below min_points
    [5.0, -7.0, 1.0, -0.2, -7.0, 4.0],
])
VALUES = {
    "inv_sales_chg_3m": np.array([-0.4, 0.1, 0.0]),
    "tax_late_12m": np.array([3.0, 0.0, 2.0]),
    "ent_industry": np.array(["F", "C", ""], dtype=object),
    "pwr_overdue_max_3m": np.array([45.0, 0.0, np.nan]),
    "hc_last": np.array([np.nan, 12.0, 3.0]),
    "ent_reg_capital": np.array([50_000.0, 2e6, 1e5]),
}


def test_example_from_the_design_notes():
    (first, *_), _, _ = reasons_for(POINTS, VALUES, NAMES)
    assert first == {"code": CODES["inv_sales_chg_3m"], "feature": "inv_sales_chg_3m", "points": -40.0,
                     "text_zh": "近3个月开票金额较前3个月下降40%",
                     "text_en": "Invoiced sales in the last 3 months down 40% on the prior 3 months"}


def test_at_most_four_most_negative_first():
    firm0 = reasons_for(POINTS, VALUES, NAMES)[0]
    assert [r["feature"] for r in firm0] == [
        "inv_sales_chg_3m", "pwr_overdue_max_3m", "tax_late_12m", "ent_reg_capital"]
    assert [r["points"] for r in firm0] == [-40.0, -25.0, -12.5, -8.0]
    assert [r["code"] for r in firm0] == [CODES[r["feature"]] for r in firm0]


def test_only_negative_points_and_ties_by_feature_order():
    _, firm1, firm2 = reasons_for(POINTS, VALUES, NAMES)
    assert firm1 == []
    assert [(r["feature"], r["points"]) for r in firm2] == [("tax_late_12m", -7.0), ("hc_last", -7.0)]
    with_small = reasons_for(POINTS, VALUES, NAMES, min_points=0.0)[2]
    assert [r["feature"] for r in with_small] == ["tax_late_12m", "hc_last", "pwr_overdue_max_3m"]


def test_actual_values_in_both_languages():
    firm0 = {r["feature"]: r for r in reasons_for(POINTS, VALUES, NAMES)[0]}
    assert firm0["pwr_overdue_max_3m"]["text_zh"] == "近3期电费最长逾期45天"
    assert firm0["pwr_overdue_max_3m"]["text_en"] == "Electricity bill paid up to 45 days late in the last 3 periods"
    assert firm0["tax_late_12m"]["text_zh"] == "近12期逾期申报3次"
    assert firm0["tax_late_12m"]["text_en"] == "Tax returns filed late in the last 12 periods: 3"
    assert firm0["ent_reg_capital"]["text_zh"] == "注册资本为5.0万元"
    assert firm0["ent_reg_capital"]["text_en"] == "Registered capital of CNY 50,000"


def test_missing_values_read_as_no_data():
    points = np.array([[0.0, 0.0, -5.0, -9.0, -3.0, 0.0]])
    values = {n: VALUES[n][2:3] for n in NAMES}
    got = {r["feature"]: r for r in reasons_for(points, values, NAMES)[0]}
    assert got["pwr_overdue_max_3m"]["text_zh"] == "近3期电费最长逾期天数：无数据"
    assert got["pwr_overdue_max_3m"]["text_en"] == "Longest electricity bill delay, last 3 periods: no data"
    assert got["ent_industry"]["text_zh"] == "行业门类(GB/T 4754)：无数据"       # '' is a null category
    assert got["ent_industry"]["text_en"] == "Industry section (GB/T 4754): no data"
    assert got["hc_last"]["text_en"] == "Employees with social insurance in the latest period: 3"


def test_float32_nan_reads_as_no_data():
    points = np.array([[-5.0]])
    got = reasons_for(points, {"inv_sales_chg_3m": np.array([np.nan], np.float32)}, ["inv_sales_chg_3m"])
    assert got[0][0]["text_en"] == "Change in invoiced sales, last 3 months vs prior 3: no data"


def test_values_as_a_2d_object_array_give_the_same_reasons():
    matrix = np.column_stack([VALUES[n].astype(object) for n in NAMES])
    assert reasons_for(POINTS, matrix, NAMES) == reasons_for(POINTS, VALUES, NAMES)


def test_points_rounded_to_two_decimals():
    got = reasons_for(np.array([[-12.34567, -0.987654]]), {"tax_late_12m": [1.0], "hc_last": [2.0]},
                      ["tax_late_12m", "hc_last"])
    assert [r["points"] for r in got[0]] == [-12.35, -0.99]


def test_max_reasons_and_deterministic_ranking():
    rng = np.random.default_rng(7)
    points = np.round(rng.normal(0, 10, (200, len(NAMES))))     # many ties
    cols, keep = rank_reasons(points, max_reasons=4, min_points=0.5)
    assert cols.shape == (200, 4) and keep.sum(1).max() <= 4
    for i in range(200):
        expected = sorted((p, j) for j, p in enumerate(points[i]) if p <= -0.5)[:4]
        assert cols[i][keep[i]].tolist() == [j for _, j in expected]
    assert reasons_for(points, np.zeros((200, len(NAMES)), object), NAMES, max_reasons=2) == \
        reasons_for(points.copy(), np.zeros((200, len(NAMES)), object), NAMES, max_reasons=2)
    assert max(len(r) for r in reasons_for(points, np.zeros((200, 6), object), NAMES, max_reasons=2)) == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=np.array([[np.nan, 0, 0, 0, 0, 0]])), "1 non-finite"),
    (dict(points=np.zeros(6)), "2-D"),
    (dict(feature_names=("nope",) + NAMES[1:]), "not in the catalogue"),
    (dict(values={n: VALUES[n] for n in NAMES[1:]}), "no column"),
    (dict(points=np.zeros((3, 5))), "5 columns for 6"),
])
def test_bad_inputs(kwargs, message):
    args = dict(points=POINTS, values=VALUES, feature_names=NAMES) | kwargs
    with pytest.raises(ValueError, match=message):
        reasons_for(**args)


def test_top_drivers_portfolio_aggregate():
    drivers = top_drivers(POINTS, NAMES)
    by = {d["feature"]: d for d in drivers}
    assert [d["feature"] for d in drivers] == [
        "tax_late_12m", "inv_sales_chg_3m", "pwr_overdue_max_3m", "hc_last", "ent_reg_capital"]  # tie at -8: order
    assert by["tax_late_12m"]["firms"] == 2
    assert by["tax_late_12m"]["share_of_firms"] == pytest.approx(2 / 3)
    assert by["tax_late_12m"]["points_taken"] == pytest.approx(-19.5)
    assert by["tax_late_12m"]["mean_points_as_reason"] == pytest.approx(-9.75)
    # ent_industry took 3 points from firm 0 but was never among its four reasons
    assert "ent_industry" not in by
    assert by["pwr_overdue_max_3m"]["points_taken"] == pytest.approx(-25.2)    # -0.2 counts here
    assert by["pwr_overdue_max_3m"]["mean_points_as_reason"] == pytest.approx(-25.0)
    assert by["hc_last"] == {"feature": "hc_last", "code": CODES["hc_last"], "firms": 1,
                             "share_of_firms": pytest.approx(1 / 3), "points_taken": pytest.approx(-8.0),
                             "mean_points_as_reason": pytest.approx(-7.0)}

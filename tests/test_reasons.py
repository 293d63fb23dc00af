"""Reason codes: at most four, negative points only, most negative first, one per risk family,
only where the firm is worse than the typical firm of the training sample; sentences that give the
firm's value beside the typical one, Chinese throughout; and the portfolio aggregate."""
import re

import numpy as np
import pytest

from models.reasons import (TypicalFirm, may_be_reason, on_risky_side, rank_reasons, reasons_for,
                            sentences, top_drivers)
from models.rules import load_rules_config
from smescore.errors import BadInput
from transforms import catalog, feeds

LATIN_WORD = re.compile(r"[A-Za-z]{3,}")
NAMES = ("inv_sales_chg_3m", "tax_late_12m", "ent_industry", "pwr_overdue_max_3m",
         "hc_last", "ent_reg_capital")
CODES = {n: catalog.BY_NAME[n].code for n in NAMES}
TYPICAL = TypicalFirm("v1", {"inv_sales_chg_3m": 0.02, "tax_late_12m": 0.0, "ent_industry": "C",
                             "pwr_overdue_max_3m": 0.0, "hc_last": 8.0, "ent_reg_capital": 1e6})

POINTS = np.array([
    # firm 0: six features took points away; hc_last is missing (never a reason); the four
    # worst of the rest, in order: 0, 3, 1, 5
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
    "pwr_overdue_max_3m": np.array([45.0, 0.0, 10.0]),
    "hc_last": np.array([np.nan, 12.0, 3.0]),
    "ent_reg_capital": np.array([50_000.0, 2e6, 1e5]),
}


def _reasons(points=POINTS, values=VALUES, names=NAMES, **kw):
    return reasons_for(points, values, names, TYPICAL, **kw)


def test_example_from_the_issue():
    zh, en = sentences(catalog.BY_NAME["inv_sales_cnt_12m"], 12.0, 80.0)
    assert en == "Fewer sales invoices than most firms: 12 in the last 12 months (typical: 80)"
    assert zh == "近12个月销项发票12张，少于多数企业（中位数80张）"


def test_first_reason_says_worse_than_typical_with_both_values():
    (first, *_), _, _ = _reasons()
    assert first == {"code": CODES["inv_sales_chg_3m"], "feature": "inv_sales_chg_3m", "points": -40.0,
                     "text_zh": "近3个月开票金额较前3个月低于全部企业中位数40%，低于多数企业"
                                "（中位数高于全部企业中位数2%）",
                     "text_en": "Weaker growth in invoiced sales than most firms: 40% below the "
                                "book's median in the last 3 months vs the prior 3 (typical: 2% "
                                "above the book's median)"}


def test_at_most_four_most_negative_first():
    firm0 = _reasons()[0]
    assert [r["feature"] for r in firm0] == [
        "inv_sales_chg_3m", "pwr_overdue_max_3m", "tax_late_12m", "ent_reg_capital"]
    assert [r["points"] for r in firm0] == [-40.0, -25.0, -12.5, -8.0]
    assert [r["code"] for r in firm0] == [CODES[r["feature"]] for r in firm0]
    assert [r["feature"] for r in _reasons(max_reasons=5, one_per_family=False)[0]] == [
        "inv_sales_chg_3m", "pwr_overdue_max_3m", "tax_late_12m", "ent_reg_capital", "ent_industry"]


def test_only_negative_points_and_ties_by_feature_order():
    _, firm1, firm2 = _reasons()
    assert firm1 == []
    assert [(r["feature"], r["points"]) for r in firm2] == [("tax_late_12m", -7.0), ("hc_last", -7.0)]
    with_small = _reasons(min_points=0.0)[2]
    assert [r["feature"] for r in with_small] == ["tax_late_12m", "hc_last", "pwr_overdue_max_3m"]


def test_sentences_of_the_first_firm_in_both_languages():
    firm0 = {r["feature"]: r for r in _reasons(max_reasons=5, one_per_family=False)[0]}
    assert firm0["pwr_overdue_max_3m"]["text_zh"] == "近3期电费最长逾期45天，长于多数企业（中位数0天）"
    assert firm0["pwr_overdue_max_3m"]["text_en"] == (
        "Longer delays paying electricity bills than most firms: 45 days at most in the last 3 periods "
        "(typical: 0 days)")
    assert firm0["tax_late_12m"]["text_zh"] == "近12期逾期申报3次，多于多数企业（中位数0次）"
    assert firm0["tax_late_12m"]["text_en"] == (
        "More late tax filings than most firms: 3 in the last 12 periods (typical: 0)")
    assert firm0["ent_reg_capital"]["text_zh"] == "注册资本5.0万元，低于多数企业（中位数100.0万元）"
    assert firm0["ent_reg_capital"]["text_en"] == (
        "Lower registered capital than most firms: CNY 50,000 (typical: CNY 1,000,000)")
    assert firm0["ent_industry"]["text_zh"] == "所属行业为批发和零售业（F），多数企业为制造业（C）"
    assert firm0["ent_industry"]["text_en"] == (
        "Industry: wholesale and retail, section F (most firms: manufacturing, section C)")


# ---------- the side-of-median rule ----------
def test_a_directional_feature_is_a_reason_only_strictly_on_the_risky_side_of_the_median():
    names = ("tax_late_12m", "hc_last")                 # +1 (more is riskier), -1 (fewer is)
    typical = TypicalFirm("v1", {"tax_late_12m": 1.0, "hc_last": 8.0})
    values = {"tax_late_12m": np.array([0.0, 1.0, 2.0, 5.0]),
              "hc_last": np.array([12.0, 8.0, 7.9, 3.0])}
    assert may_be_reason(values, names, typical).tolist() == [
        [False, False], [False, False], [True, True], [True, True]]
    got = reasons_for(np.full((4, 2), -10.0), values, names, typical)
    assert [[r["feature"] for r in firm] for firm in got] == [
        [], [], ["tax_late_12m", "hc_last"], ["tax_late_12m", "hc_last"]]


def test_the_whole_matrix_follows_the_one_feature_rule_for_every_catalogue_feature():
    # may_be_reason compares all numeric features at once; each column must be on_risky_side
    # (for direction 0 present and not the typical value, for a category a known value other
    # than the most frequent one), typical values unknown included
    rng = np.random.default_rng(3)
    n = 40
    values, typical_values = {}, {}
    for f in catalog.FEATURES:
        if f.is_categorical:
            values[f.name] = rng.choice(np.array(["", "C", "F", None], object), n)
            typical_values[f.name] = "C"
        else:
            v = rng.normal(size=n)
            v[rng.random(n) < 0.2] = np.nan
            v[rng.random(n) < 0.2] = 0.0
            values[f.name] = v
            typical_values[f.name] = [None, 0.0, 0.3, -1][int(rng.integers(4))]
    typical = TypicalFirm("v1", typical_values)
    got = may_be_reason(values, catalog.NAMES, typical)
    for j, f in enumerate(catalog.FEATURES):
        if f.is_categorical:
            want = [x not in ("", None, "C") for x in values[f.name]]
        elif f.risk_direction == 0:
            t = typical.value(f.name)
            want = np.isfinite(values[f.name]) & ((t is None) | (values[f.name] != t))
        else:
            want = on_risky_side(f, values[f.name], typical.value(f.name))
        assert got[:, j].tolist() == list(want), f.name
    assert 0 < got.sum() < got.size


def test_the_family_is_represented_by_its_worst_feature_on_the_risky_side():
    # tax_late_3m took the most points but the firm filed on time in the last 3 periods (0, the
    # median): the reason is tax_late_12m, from the same family, where it is worse than typical
    names = ("tax_late_3m", "tax_late_12m")
    typical = TypicalFirm("v1", {"tax_late_3m": 0.0, "tax_late_12m": 0.0})
    got = reasons_for(np.array([[-20.0, -5.0]]), {"tax_late_3m": [0.0], "tax_late_12m": [2.0]},
                      names, typical)
    assert [(r["feature"], r["points"]) for r in got[0]] == [("tax_late_12m", -5.0)]


def test_a_missing_value_is_never_a_reason():
    names = ("pwr_overdue_max_3m", "inv_avg_ticket_3m", "ent_province")
    typical = TypicalFirm("v1", {"pwr_overdue_max_3m": 0.0, "inv_avg_ticket_3m": 5000.0,
                                 "ent_province": "Guangdong"})
    values = {"pwr_overdue_max_3m": np.array([np.nan], np.float32),
              "inv_avg_ticket_3m": np.array([None], object), "ent_province": np.array([""], object)}
    assert reasons_for(np.full((1, 3), -30.0), values, names, typical, min_points=0.0) == [[]]


def test_direction_0_and_categories_are_reasons_when_points_are_negative_and_say_no_more():
    names = ("inv_avg_ticket_3m", "ent_province")
    typical = TypicalFirm("v1", {"inv_avg_ticket_3m": 5000.0, "ent_province": "Guangdong"})
    values = {"inv_avg_ticket_3m": np.array([2000.0, 9000.0]),
              "ent_province": np.array(["Heilongjiang", "Hubei"], object)}
    got = reasons_for(np.array([[-6.0, -3.0], [-4.0, -2.0]]), values, names, typical)
    assert [[(r["feature"], r["text_en"]) for r in firm] for firm in got] == [
        [("inv_avg_ticket_3m", "Average sales invoice: CNY 2,000 in the last 3 months (typical: CNY 5,000)"),
         ("ent_province", "Province of registration: Heilongjiang (most firms: Guangdong)")],
        [("inv_avg_ticket_3m", "Average sales invoice: CNY 9,000 in the last 3 months (typical: CNY 5,000)"),
         ("ent_province", "Province of registration: Hubei (most firms: Guangdong)")]]
    assert got[0][0]["text_zh"] == "近3个月平均单张开票金额为2000元（中位数5000元）"
    assert got[0][1]["text_zh"] == "注册地为黑龙江，多数企业为广东"


def test_the_typical_value_itself_is_never_a_reason():
    """'Guangdong (most firms: also Guangdong)', 'Registered-capital changes: 0 (typical: 0)':
    the firm is no different from the typical firm there, whatever its points."""
    names = ("inv_avg_ticket_3m", "reg_cap_chg_12m", "ent_province")
    typical = TypicalFirm("v1", {"inv_avg_ticket_3m": 5000.0, "reg_cap_chg_12m": 0.0,
                                 "ent_province": "Guangdong"})
    values = {"inv_avg_ticket_3m": np.array([5000.0, 5000.0], np.float32),
              "reg_cap_chg_12m": np.array([0.0, 1.0], np.float32),
              "ent_province": np.array(["Guangdong", "Hubei"], object)}
    got = reasons_for(np.full((2, 3), -9.0), values, names, typical)
    assert [[r["feature"] for r in firm] for firm in got] == [[], ["reg_cap_chg_12m", "ent_province"]]


def test_a_directional_feature_the_training_sample_never_had_is_never_a_reason():
    typical = TypicalFirm("v1", {"loan_dpd_now": None})
    assert reasons_for(np.array([[-9.0]]), {"loan_dpd_now": [30.0]}, ["loan_dpd_now"], typical) == [[]]


def test_typical_firm_from_the_model_card():
    dist = {f.name: ({"type": "categorical", "mode": "C"} if f.is_categorical
                     else {"type": "numeric", "median": float(i)}) for i, f in enumerate(catalog.FEATURES)}
    typical = TypicalFirm.from_card({"training_distribution": dist}, "20261101-1")
    assert typical.value("ent_industry") == "C"
    assert typical.value(catalog.NAMES[3]) == 3.0
    with pytest.raises(BadInput, match=r"model 20261101-0: its model card has no training_distribution"):
        TypicalFirm.from_card({"features": list(catalog.NAMES)}, "20261101-0")
    del dist["hc_last"]
    with pytest.raises(BadInput, match=r"model v9: .* lacks feature\(s\) \['hc_last'\]"):
        TypicalFirm.from_card({"training_distribution": dist}, "v9")


# ---------- sentences for each kind ----------
@pytest.mark.parametrize("name, value, typical, zh, en", [
    ("inv_sales_amt_3m", 12_000.0, 850_000.0, "近3个月开票销售额1.2万元，低于多数企业（中位数85.0万元）",
     "Lower invoiced sales than most firms: CNY 12,000 in the last 3 months (typical: CNY 850,000)"),
    ("inv_n_customers_12m", 2.0, 9.0, "近12个月客户2家，少于多数企业（中位数9家）",
     "Fewer customers than most firms: 2 in the last 12 months (typical: 9)"),
    ("reg_litig_12m", 2.0, 0.0, "近12个月涉诉2次，多于多数企业（中位数0次）",
     "More lawsuits against the firm than most firms: 2 in the last 12 months (typical: 0)"),
    # changes are read against the book's median change at the date (transforms/book_relative.py)
    ("tax_sales_yoy_3m", -0.4, 0.02,
     "近3期申报销售额同比低于全部企业中位数40%，低于多数企业（中位数高于全部企业中位数2%）",
     "Weaker growth in declared taxable sales than most firms: 40% below the book's median in "
     "the last 3 periods, year on year (typical: 2% above the book's median)"),
    ("hc_chg_12m", -0.25, 0.0, "社保缴纳人数同比低于全部企业中位数25%，低于多数企业（中位数与全部企业中位数持平）",
     "Weaker growth in insured headcount than most firms: 25% below the book's median year on "
     "year (typical: level with the book's median)"),
    ("inv_top1_share_12m", 0.62, 0.31, "近12个月第一大客户销售占比62%，高于多数企业（中位数31%）",
     "Higher share of sales to the largest customer than most firms: 62% in the last 12 months "
     "(typical: 31%)"),
    ("inv_void_ratio_3m", 0.045, 0.012, "近3个月作废发票占比4.5%，高于多数企业（中位数1.2%）",
     "Higher share of sales invoices voided than most firms: 4.5% in the last 3 months (typical: 1.2%)"),
    ("inv_months_no_sales_12m", 3.0, 0.0, "近12个月无开票的月份有3个月，多于多数企业（中位数0个月）",
     "More months without any sales invoice than most firms: 3 months of the last 12 (typical: 0 months)"),
    ("loan_max_dpd_12m", 45.0, 0.0, "近12个月贷款最长逾期45天，长于多数企业（中位数0天）",
     "Longer loan arrears than most firms: 45 days past due at most in the last 12 months "
     "(typical: 0 days)"),
    ("pwr_kwh_12m", 8_000.0, 52_000.0, "近12个月用电量8,000千瓦时，低于多数企业（中位数52,000千瓦时）",
     "Lower electricity use than most firms: 8,000 kWh in the last 12 months (typical: 52,000 kWh)"),
    ("hc_last", 2.0, 9.0, "最近一期社保缴纳人数2人，少于多数企业（中位数9人）",
     "Fewer employees with social insurance than most firms: 2 in the latest period (typical: 9)"),
    ("ent_age_years", 1.5, 8.25, "企业成立1.5年，短于多数企业（中位数8.2年）",
     "Younger than most firms: 1.5 years since establishment (typical: 8.2 years)"),
    ("inv_sales_slope_12m", -0.05, 0.01,
     "近12个月开票金额趋势月均低于全部企业中位数4.9%，低于多数企业（中位数月均高于全部企业中位数1.0%）",
     "Weaker trend in invoiced sales than most firms: 4.9% a month below the book's median over "
     "the last 12 months (typical: 1.0% a month above the book's median)"),
    ("inv_purch_sales_ratio_3m", 1.8, 0.7, "近3个月进项与销项金额之比1.80，高于多数企业（中位数0.70）",
     "Higher purchases-to-sales ratio than most firms: 1.80 in the last 3 months (typical: 0.70)"),
    ("tax_months_since_late", 2.0, 9.0, "距最近一次逾期申报2个月，短于多数企业（中位数9个月）",
     "More recent late tax filing than most firms: 2 months ago (typical: 9 months)"),
    ("ent_rep_age", 67.0, 44.0, "法定代表人年龄为67岁（中位数44岁）",
     "Legal representative's age: 67 (typical: 44)"),
    ("reg_cap_chg_12m", 2.0, 0.0, "近12个月注册资本变更2次（中位数0次）",
     "Registered-capital changes: 2 in the last 12 months (typical: 0)"),
    ("ent_legal_form", "individual_business", "limited_company", "企业类型为个体工商户，多数企业为有限责任公司",
     "Legal form: individual business (most firms: limited company)"),
    ("ent_province", "InnerMongolia", "Guangdong", "注册地为内蒙古，多数企业为广东",
     "Province of registration: Inner Mongolia (most firms: Guangdong)"),
])
def test_sentences_for_each_kind(name, value, typical, zh, en):
    assert sentences(catalog.BY_NAME[name], value, typical) == (zh, en)


def test_a_directional_value_on_the_safe_side_is_stated_without_a_comparison():
    # the cold-start rules may state such a value (their bins are hand-set); it must not say 'worse'
    zh, en = sentences(catalog.BY_NAME["tax_late_12m"], 0.0, 1.0)
    assert (zh, en) == ("近12期逾期申报0次（中位数1次）", "Late tax filings: 0 in the last 12 periods (typical: 1)")


def test_an_unknown_category_renders_as_it_came():
    zh, en = sentences(catalog.BY_NAME["ent_province"], "Macau", "Guangdong")
    assert (zh, en) == ("注册地为Macau，多数企业为广东", "Province of registration: Macau (most firms: Guangdong)")


def test_every_category_the_feed_contract_allows_has_a_chinese_and_english_name():
    for name, allowed in (("ent_industry", feeds.INDUSTRY_SECTIONS), ("ent_province", feeds.PROVINCES),
                          ("ent_legal_form", feeds.LEGAL_FORMS)):
        assert set(catalog.CATEGORY_NAMES[name]) == set(allowed), name
    assert catalog.render_value(catalog.BY_NAME["ent_industry"], "C", "zh") == "制造业（C）"


def _representative(f: catalog.Feature) -> list[tuple[object, object]]:
    """(value, typical) pairs: both sides of the typical value, equal to it, zero, large."""
    if f.is_categorical:
        cats = list(catalog.CATEGORY_NAMES[f.name])
        return [(c, cats[(i + 1) % len(cats)]) for i, c in enumerate(cats)] + [(cats[0], cats[0])]
    typical = {"pct_change": 0.03, "share": 0.12, "ratio": 0.8, "slope": 0.004, "age": 45.0,
               "years": 7.3, "amount": 263_512.0, "kwh": 41_250.0}.get(f.kind, 4.0)
    return [(typical * k + d, typical) for k, d in ((0.0, 0.0), (0.3, 0.0), (1.0, 0.0), (2.7, 1.0))] + \
        [(-0.35, typical)] * (f.kind in ("pct_change", "slope")) + [(1.2e9, 3.4e6)] * (f.kind == "amount")


def test_no_latin_word_in_any_chinese_sentence_and_both_values_in_every_sentence():
    n = 0
    for f in catalog.FEATURES:
        assert not LATIN_WORD.search(f.desc_zh + f.subject_zh + f.period_zh + f.worse_zh), f.name
        for value, typical in _representative(f):
            zh, en = sentences(f, value, typical)
            assert not LATIN_WORD.search(zh), (f.name, zh)
            for lang, text in (("zh", zh), ("en", en)):
                assert catalog.render_value(f, value, lang) in text, (f.name, lang, text)
                assert catalog.render_value(f, typical, lang) in text.split("多数企业" if lang == "zh"
                                                                            else "than most")[-1]
            n += 1
    assert n >= 4 * len(catalog.FEATURES) + 31 + 20 + 4


def test_no_latin_word_in_the_cold_start_rules_chinese_sentences():
    rules = load_rules_config().rules
    typical = TypicalFirm("v1", {n: ("C" if n == "ent_industry" else "Guangdong" if n == "ent_province"
                                     else "limited_company" if n == "ent_legal_form" else 3.0)
                                 for n in catalog.NAMES})
    n = 0
    for rule in rules.rules:
        f = catalog.BY_NAME[rule.feature]
        samples = ([None, *catalog.CATEGORY_NAMES[f.name]] if f.is_categorical
                   else [None, -1.0, 0.5, 1.0, 2.5, 30.0, 70.0, 5e4, 2e5, 6e6])
        values = {r.feature: np.array([samples[0]] * len(samples), object) for r in rules.rules}
        values[rule.feature] = np.array(samples, object)
        _, _, reasons = rules.score(values, typical)
        for firm in reasons:
            for r in firm:
                assert not LATIN_WORD.search(r["text_zh"]), r
                n += 1
    assert n > 40


# ---------- the rest as before ----------
def test_values_as_a_2d_object_array_give_the_same_reasons():
    matrix = np.column_stack([VALUES[n].astype(object) for n in NAMES])
    assert _reasons(values=matrix) == _reasons()


def test_points_rounded_to_two_decimals():
    typical = TypicalFirm("v1", {"tax_late_12m": 0.0, "hc_last": 8.0})
    got = reasons_for(np.array([[-12.34567, -0.987654]]), {"tax_late_12m": [1.0], "hc_last": [2.0]},
                      ["tax_late_12m", "hc_last"], typical)
    assert [r["points"] for r in got[0]] == [-12.35, -0.99]


def test_max_reasons_and_deterministic_ranking():
    rng = np.random.default_rng(7)
    points = np.round(rng.normal(0, 10, (200, len(NAMES))))     # many ties
    cols, keep = rank_reasons(points, max_reasons=4, min_points=0.5)
    assert cols.shape == (200, 4) and keep.sum(1).max() <= 4
    for i in range(200):
        expected = sorted((p, j) for j, p in enumerate(points[i]) if p <= -0.5)[:4]
        assert cols[i][keep[i]].tolist() == [j for _, j in expected]
    values = np.tile(np.array([[-1.0, 5.0, "E", 30.0, 1.0, 100.0]], object), (200, 1))
    first = reasons_for(points, values, NAMES, TYPICAL, max_reasons=2)
    assert first == reasons_for(points.copy(), values.copy(), NAMES, TYPICAL, max_reasons=2)
    assert max(len(r) for r in first) == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=np.array([[np.nan, 0, 0, 0, 0, 0]])), "1 non-finite"),
    (dict(points=np.zeros(6)), "2-D"),
    (dict(feature_names=("nope",) + NAMES[1:]), "not in the catalogue"),
    (dict(values={n: VALUES[n] for n in NAMES[1:]}), "no column"),
    (dict(points=np.zeros((3, 5))), "5 columns for 6"),
    (dict(typical=TypicalFirm("v7", {})), r"model v7: no typical value for feature 'inv_sales_chg_3m'"),
])
def test_bad_inputs(kwargs, message):
    args = dict(points=POINTS, values=VALUES, feature_names=NAMES, typical=TYPICAL) | kwargs
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

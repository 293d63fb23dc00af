"""Cold-start rules: a firm worked out by hand, validation errors, the packaged rules."""
import copy
import json
import math

import numpy as np
import pytest

from models.reasons import TypicalFirm
from models.rules import ColdStartRules, load_rules_config
from models.scorecard import ConfigError, ScoreScale

# The champion's typical firm, which every cold-start sentence ends with.
TYPICAL = TypicalFirm("v1", {"ent_age_years": 6.0, "ent_industry": "C", "reg_litig_12m": 0.0,
                             "ent_reg_capital": 1e6, "ent_province": "Guangdong",
                             "ent_legal_form": "limited_company", "ent_rep_age": 44.0,
                             "reg_penalty_12m": 0.0})
FACTOR = 60 / math.log(2)
OFFSET = 600 - FACTOR * math.log(30)

CONFIG = {
    "version": "test-1",
    "base_logit": -3.0,
    "rules": [
        {"feature": "ent_age_years",
         "bins": [{"lower": None, "upper": 1, "adjustment": 0.5, "code": "C01"},
                  {"lower": 1, "upper": 5, "adjustment": 0.2, "code": "C02"},
                  {"lower": 5, "upper": None, "adjustment": -0.3}],
         "missing": {"adjustment": 0.4, "code": "C03",
                     "text_zh": "无成立日期", "text_en": "No date of establishment"}},
        {"feature": "ent_industry",
         "bins": [{"categories": ["E"], "adjustment": 0.4, "code": "C04",
                   "text_zh": "所属行业为{value}", "text_en": "Industry: {value}"},
                  {"categories": ["I", "M"], "adjustment": -0.2}],
         "other": {"adjustment": 0.1, "code": "C05"},
         "missing": {"adjustment": 0.0}},
        {"feature": "reg_litig_12m",
         "bins": [{"lower": None, "upper": 1, "adjustment": 0.0},
                  {"lower": 1, "upper": None, "adjustment": 0.6, "code": "C06",
                   "text_zh": "近12个月涉诉{raw:.0f}次", "text_en": "{raw:.0f} lawsuits in the last 12 months"}],
         "missing": {"adjustment": 0.0}},
    ],
}
VALUES = {  # A: young builder with lawsuits; B: established, industry S (no list); C: missing data
    "ent_age_years": np.array([0.5, 7.0, np.nan]),
    "ent_industry": np.array(["E", "S", None], dtype=object),
    "reg_litig_12m": np.array([2.0, np.nan, 0.0]),
}


@pytest.fixture(scope="module")
def rules():
    return ColdStartRules.from_config(CONFIG)


def test_hand_computed_firm(rules):
    pd, logit, reasons = rules.score(VALUES, TYPICAL)
    # A: -3 + 0.5 (age < 1) + 0.4 (section E) + 0.6 (lawsuits >= 1) = -1.5
    assert logit[0] == pytest.approx(-1.5, abs=1e-12)
    assert pd[0] == pytest.approx(1 / (1 + math.exp(1.5)), abs=1e-15)
    assert pd[0] == pytest.approx(0.18242552380635635, abs=1e-15)
    assert reasons[0] == [
        {"code": "C06", "feature": "reg_litig_12m", "points": round(-0.6 * FACTOR, 2),
         "text_zh": "近12个月涉诉2次（中位数0次）", "text_en": "2 lawsuits in the last 12 months (typical: 0)"},
        {"code": "C01", "feature": "ent_age_years", "points": -43.28,             # catalogue sentence
         "text_zh": "企业成立0.5年，短于多数企业（中位数6.0年）",
         "text_en": "Younger than most firms: 0.5 years since establishment (typical: 6.0 years)"},
        {"code": "C04", "feature": "ent_industry", "points": -34.62,
         "text_zh": "所属行业为建筑业（E），多数企业为制造业（C）",
         "text_en": "Industry: construction, section E (most firms: manufacturing, section C)"},
    ]
    assert reasons[0][0]["points"] == -51.94


def test_points_add_up_to_the_score_like_the_model(rules):
    scale = ScoreScale()
    _, logit, _ = rules.score(VALUES, TYPICAL)
    adj = rules.adjustments(rules.outcome_indices(VALUES))
    total = scale.base_points(rules.base_logit) + scale.points_from_phi(adj).sum(1)
    np.testing.assert_allclose(total, scale.unclamped_score_from_logit(logit), atol=1e-9)
    assert scale.base_points(-3.0) == pytest.approx(OFFSET + 3 * FACTOR, abs=1e-9)
    assert scale.score_from_logit(logit).tolist() == [435, 583, 531]    # 435.43, 582.58, 530.65


def test_category_in_no_list_gets_the_other_bin(rules):
    _, logit, reasons = rules.score(VALUES, TYPICAL)
    assert logit[1] == pytest.approx(-3.0 - 0.3 + 0.1, abs=1e-12)
    assert reasons[1] == [{"code": "C05", "feature": "ent_industry", "points": round(-0.1 * FACTOR, 2),
                           "text_zh": "所属行业为公共管理、社会保障和社会组织（S），多数企业为制造业（C）",
                           "text_en": "Industry: public administration and social organisations, "
                                      "section S (most firms: manufacturing, section C)"}]


def test_missing_values_get_the_rules_missing_bin(rules):
    _, logit, reasons = rules.score(VALUES, TYPICAL)
    assert logit[2] == pytest.approx(-3.0 + 0.4, abs=1e-12)
    assert [(r["code"], r["text_en"]) for r in reasons[2]] == [("C03", "No date of establishment (typical: 6.0 years)")]
    # '' is how a null category arrives from Arrow (fill_null(''))
    _, logit2, _ = rules.score({**VALUES, "ent_industry": np.array(["E", "S", ""], dtype=object)},
                               TYPICAL)
    assert logit2.tolist() == logit.tolist()


def test_deterministic_and_order_free(rules):
    first = rules.score(VALUES, TYPICAL)
    again = ColdStartRules.from_config(copy.deepcopy(CONFIG)).score(VALUES, TYPICAL)
    assert first[0].tolist() == again[0].tolist() and first[2] == again[2]
    order = [2, 0, 1]
    shuffled = rules.score({k: v[order] for k, v in VALUES.items()}, TYPICAL)
    assert shuffled[1].tolist() == first[1][order].tolist()
    assert shuffled[2] == [first[2][i] for i in order]


def test_at_most_four_reasons_only_adverse_bins():
    rules = load_rules_config().rules
    bad = {"ent_reg_capital": [np.nan], "ent_industry": [""], "ent_province": ["Jilin"],
           "ent_legal_form": ["individual_business"], "ent_age_years": [0.2], "ent_rep_age": [80.0],
           "reg_penalty_12m": [3.0], "reg_litig_12m": [5.0]}
    _, _, reasons = rules.score({k: np.asarray(v, dtype=object) for k, v in bad.items()}, TYPICAL)
    assert [r["code"] for r in reasons[0]] == ["C24", "C26", "C18", "C10"]
    assert all(r["points"] < 0 for r in reasons[0])


def test_scale_sets_the_points():
    rules = ColdStartRules.from_config(CONFIG, scale=ScoreScale(pdo=20, base_score=600))
    _, _, reasons = rules.score(VALUES, TYPICAL)
    assert reasons[0][0]["points"] == round(-0.6 * 20 / math.log(2), 2)
    assert ColdStartRules.from_config(CONFIG).with_scale(rules.scale) == rules


def _broken(path, value):
    """CONFIG with one entry replaced; path is a tuple of keys / indices."""
    cfg = copy.deepcopy(CONFIG)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg


AGE_BINS = ("rules", 0, "bins")


@pytest.mark.parametrize("path, value, message", [
    (("rules", 0, "feature"), "ent_colour", "unknown feature 'ent_colour'"),
    (("rules", 0, "feature"), "inv_sales_amt_3m", "registry data only"),
    (AGE_BINS + (1, "lower"), 0.8, r"bins\[0\] and bins\[1\] overlap"),
    (AGE_BINS + (1, "lower"), 1.5, r"gap between bins\[0\] and bins\[1\]: values in \[1.0, 1.5\)"),
    (AGE_BINS + (0, "lower"), 0, "first bin must have lower null"),
    (AGE_BINS + (2, "upper"), 50, "last bin must have upper null"),
    (AGE_BINS + (1, "upper"), 1, "must be below upper"),
    (("rules", 0, "missing"), KeyError, "what a missing value gets"),
    (("rules", 1, "other"), KeyError, "'other' bin"),
    (("rules", 1, "bins", 1, "categories"), ["I", "E"], r"'E' is already in bins\[0\]"),
    (("rules", 1, "bins", 1, "categories"), ["Z"], "unknown ent_industry category 'Z'"),
    (("rules", 1, "bins", 1, "categories"), [], "non-empty list"),
    (AGE_BINS + (1, "code"), KeyError, r"adverse bin \(adjustment 0.2 > 0\) needs a reason code"),
    (AGE_BINS + (1, "code"), "C01", r"unique; \['C01'\]"),
    (AGE_BINS + (1, "code"), "R001", "must look like 'C01'"),
    (AGE_BINS + (1, "adjustment"), 20, "within"),
    (AGE_BINS + (1, "adjustmnet"), 0.2, r"unknown key\(s\) \['adjustmnet'\]"),
    (AGE_BINS + (1, "categories"), ["A"], r"unknown key\(s\) \['categories'\]"),
    (("rules", 0, "missing", "text_zh"), KeyError, "both text_zh and text_en"),
    (("rules", 1, "bins", 0, "text_en"), "Construction {valeu}", "cannot be rendered"),
    (("rules", 2, "bins", 1, "text_en"), "{raw:.0f} {value:.0f}", "cannot be rendered"),
    (("rules", 2, "feature"), "ent_age_years", r"one rule per feature; \['ent_age_years'\]"),
    (("base_logit",), float("nan"), "must be finite"),
    (("rules",), [], "non-empty list"),
])
def test_validation_errors(path, value, message):
    with pytest.raises(ConfigError, match=message):
        ColdStartRules.from_config(_broken(path, value))


def test_adverse_missing_bin_needs_its_own_sentence():
    cfg = _broken(("rules", 0, "missing"), {"adjustment": 0.4, "code": "C03"})
    with pytest.raises(ConfigError, match="adverse missing bin needs text_zh and text_en"):
        ColdStartRules.from_config(cfg)


def test_values_must_cover_every_rule(rules):
    with pytest.raises(ValueError, match=r"no column for rule feature\(s\) \['reg_litig_12m'\]"):
        rules.score({k: v for k, v in VALUES.items() if k != "reg_litig_12m"}, TYPICAL)
    with pytest.raises(ValueError, match="differ in length"):
        rules.score({**VALUES, "reg_litig_12m": np.zeros(2)}, TYPICAL)


# ---------- the packaged rules ----------
def test_packaged_rules_load():
    cfg = load_rules_config()
    assert cfg.version == "2026.2" and len(cfg.fingerprint) == 64
    assert cfg.rules.features == ("ent_reg_capital", "ent_industry", "ent_province", "ent_legal_form",
                                  "ent_age_years", "ent_rep_age", "reg_penalty_12m", "reg_litig_12m")
    assert cfg.rules.base_pd == pytest.approx(0.05, abs=1e-12)
    codes = [o.code for r in cfg.rules.rules for o in r.outcomes if o.adverse]
    assert len(set(codes)) == len(codes) == 26


def test_packaged_rules_on_a_neutral_and_a_described_firm():
    rules = load_rules_config().rules
    values = {"ent_reg_capital": np.array([1e6, 5e4]),
              "ent_industry": np.array(["C", "H"], dtype=object),
              "ent_province": np.array(["Anhui", "Heilongjiang"], dtype=object),
              "ent_legal_form": np.array(["limited_company", "sole_proprietorship"], dtype=object),
              "ent_age_years": np.array([4.0, 0.4]),
              "ent_rep_age": np.array([45.0, 24.0]),
              "reg_penalty_12m": np.array([0.0, 0.0]),
              "reg_litig_12m": np.array([0.0, 1.0])}
    pd, logit, reasons = rules.score(values, TYPICAL)
    assert pd[0] == pytest.approx(0.05, abs=1e-12) and reasons[0] == []
    # 0.35 capital + 0.30 section H + 0.35 North-East + 0.10 sole prop + 0.50 age + 0.25 rep + 0.35 suits
    assert logit[1] == pytest.approx(math.log(0.05 / 0.95) + 2.2, abs=1e-12)
    assert [(r["code"], r["text_zh"]) for r in reasons[1]] == [
        ("C18", "企业成立0.4年，短于多数企业（中位数6.0年）"),
        ("C02", "注册资本仅5.0万元（中位数100.0万元）"),
        ("C10", "注册地位于东北地区（黑龙江），区域小微企业违约率较高，多数企业为广东"),
        ("C25", "近12个月涉诉1次，多于多数企业（中位数0次）"),
    ]
    assert reasons[1][1]["text_en"] == "Registered capital of only CNY 50,000 (typical: CNY 1,000,000)"
    assert reasons[1][2]["text_en"] == ("Registered in the North-East (Heilongjiang), a region with "
                                        "high SME default rates (most firms: Guangdong)")


def test_packaged_rules_from_a_file_path(tmp_path):
    from importlib import resources
    raw = json.loads(resources.files("smescore.config").joinpath("cold_start_rules.json")
                     .read_text(encoding="utf-8"))
    p = tmp_path / "rules.json"
    p.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    assert load_rules_config(p).fingerprint == load_rules_config().fingerprint

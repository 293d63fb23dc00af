"""Score scaling (PDO form), clamping, rounding, the master scale and the packaged config."""
import json
import math

import numpy as np
import pytest

from models.scorecard import (ConfigError, MasterScale, ScoreScale, config_fingerprint,
                              load_scorecard_config)

SCALE = ScoreScale()
BOUNDS = (0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.08, 0.12, 0.20, 1.0)


def _logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p) - np.log1p(-p)


# ---------- scaling ----------
def test_factor_and_offset_pins():
    assert SCALE.factor == pytest.approx(86.56170245333781, abs=1e-9)
    assert SCALE.offset == pytest.approx(305.58656426348887, abs=1e-9)
    assert SCALE.offset == pytest.approx(305.6, abs=0.05)


def test_base_odds_score_exactly_base_score():
    assert SCALE.unclamped_score(1 / 31) == pytest.approx(600, abs=1e-9)
    assert SCALE.score(1 / 31) == 600


def test_doubling_the_good_odds_adds_pdo():
    # good:bad 60:1 is pd 1/61; 120:1 is 1/121; 15:1 is 1/16
    assert SCALE.unclamped_score(1 / 61) == pytest.approx(660, abs=1e-9)
    assert SCALE.unclamped_score(1 / 121) == pytest.approx(720, abs=1e-9)
    assert SCALE.unclamped_score(1 / 16) == pytest.approx(540, abs=1e-9)


def test_even_odds_scores_the_offset():
    assert SCALE.unclamped_score(0.5) == pytest.approx(305.58656426348887, abs=1e-9)


def test_other_scale_parameters():
    s = ScoreScale(base_score=500, base_good_odds=50, pdo=20, min_score=0, max_score=1000)
    assert s.factor == pytest.approx(20 / math.log(2), abs=1e-12)
    assert s.unclamped_score(1 / 51) == pytest.approx(500, abs=1e-9)
    assert s.unclamped_score(1 / 101) == pytest.approx(520, abs=1e-9)


def test_clamping_at_both_ends():
    pd = np.array([1e-9, 0.0005, 0.5, 0.9, 0.999999])
    unclamped = SCALE.unclamped_score(pd)
    assert unclamped[0] == pytest.approx(305.58656426348887 + 86.56170245333781 * math.log((1 - 1e-9) / 1e-9))
    assert unclamped[0] > 850 and unclamped[-1] < 300
    assert SCALE.score(pd).tolist() == [850, 850, 306, 300, 300]
    assert SCALE.score(pd).dtype == np.int64


def test_rounding_is_half_up_not_half_to_even():
    # numpy's np.round would give 600, 602, 300 ... half to even
    got = SCALE.clamp_round(np.array([600.5, 601.5, 600.49999, 299.5, 849.5, 850.4, 312.5]))
    assert got.tolist() == [601, 602, 600, 300, 850, 850, 313]


def test_logit_path_equals_pd_path():
    pd = np.array([1e-12, 1e-6, 0.0025, 1 / 31, 0.2, 0.5, 0.97])
    np.testing.assert_allclose(SCALE.unclamped_score_from_logit(_logit(pd)),
                               SCALE.unclamped_score(pd), rtol=0, atol=1e-9)
    assert SCALE.score_from_logit(_logit(pd)).tolist() == SCALE.score(pd).tolist()


def test_logit_path_keeps_precision_near_one():
    # pd = 1 - 1e-17 is 1.0 in float64; its log-odds of 39.1 is still a number
    assert SCALE.unclamped_score_from_logit(39.1439465808987) == pytest.approx(
        305.58656426348887 - 86.56170245333781 * 39.1439465808987, abs=1e-9)


def test_scalar_in_scalar_out():
    assert SCALE.score(1 / 31) == 600
    assert np.ndim(SCALE.unclamped_score(0.1)) == 0


@pytest.mark.parametrize("bad, n_bad", [([0.0, 0.1], 1), ([0.1, 1.0, np.nan, -0.2], 3)])
def test_pd_outside_open_unit_interval_is_refused_with_a_count(bad, n_bad):
    with pytest.raises(ValueError, match=f"got {n_bad} bad value"):
        SCALE.score(np.array(bad))


def test_non_finite_logit_is_refused():
    with pytest.raises(ValueError, match="got 2 bad value"):
        SCALE.score_from_logit(np.array([0.0, np.inf, np.nan]))


def test_points_and_base_points_add_up_to_the_score():
    phi = np.array([[0.3, -0.1, 0.05], [-0.2, 0.0, 0.4]])
    expected_logit = np.array([-3.2, -3.2])
    logit = expected_logit + phi.sum(1)
    total = SCALE.base_points(expected_logit) + SCALE.points_from_phi(phi).sum(1)
    np.testing.assert_allclose(total, SCALE.unclamped_score_from_logit(logit), atol=1e-9)
    assert SCALE.points_from_phi(1.0) == pytest.approx(-86.56170245333781, abs=1e-9)
    assert SCALE.base_points(math.log(1 / 30)) == pytest.approx(600, abs=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pdo=0), "pdo must be > 0"),
    (dict(pdo=-60), r"got -60"),
    (dict(base_good_odds=0), "base_good_odds must be > 0"),
    (dict(min_score=900), "min_score < max_score"),
    (dict(max_score=850.5), "whole number"),
    (dict(base_score=950), "outside"),
    (dict(pdo=float("nan")), "finite"),
    (dict(pdo="60"), "must be a number"),
])
def test_scale_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ScoreScale(**kwargs)


# ---------- master scale ----------
def _master(bounds=BOUNDS, default="D"):
    return MasterScale.from_config({"default_grade": default, "grades": [
        {"grade": str(i + 1), "pd_upper": b} for i, b in enumerate(bounds)]})


def test_grades_at_the_bounds():
    m = _master()
    pd = np.array([0.0, 0.0025, 0.0025000001, 0.005, 0.0099, 0.02, 0.035, 0.0351, 0.05, 0.08,
                   0.12, 0.2, 0.2000001, 0.9999, 1.0])
    assert m.grade(pd, np.zeros(len(pd), bool)).tolist() == [
        "1", "1", "2", "2", "3", "4", "5", "6", "6", "7", "8", "9", "10", "10", "10"]


def test_firms_in_default_get_D_whatever_their_pd():
    m = _master()
    got = m.grade(np.array([0.001, 0.3, 1.0, np.nan]), np.array([True, False, True, True]))
    assert got.tolist() == ["D", "10", "D", "D"]
    assert m.grade([0.03]).tolist() == ["5"]


def test_grade_refuses_bad_pd_of_performing_firms():
    with pytest.raises(ValueError, match="got 2 bad value"):
        _master().grade(np.array([0.1, np.nan, 1.2]), np.array([False, False, False]))


@pytest.mark.parametrize("bounds, message", [
    ((0.01, 0.005, 1.0), "strictly increasing"),
    ((0.01, 0.01, 1.0), "strictly increasing"),
    ((0.01, 0.5), "must be 1.0"),
    ((0.0, 0.5, 1.0), r"\(0, 1\]"),
    ((1.0,), "at least 2"),
])
def test_master_scale_validation(bounds, message):
    with pytest.raises(ConfigError, match=message):
        _master(bounds)


def test_master_scale_grade_names_and_default_grade():
    with pytest.raises(ConfigError, match="expected '2', got '3'"):
        MasterScale.from_config({"grades": [{"grade": "1", "pd_upper": 0.1},
                                            {"grade": "3", "pd_upper": 1.0}]})
    with pytest.raises(ConfigError, match="distinct"):
        _master(default="1")


# ---------- the packaged config ----------
def test_packaged_config_loads_frozen_with_fingerprint():
    cfg = load_scorecard_config()
    assert cfg.version == "2026.1"
    assert cfg.scale == ScoreScale(600, 30, 60, 300, 850)
    assert cfg.master_scale.pd_upper == BOUNDS
    assert cfg.master_scale.grades == tuple(str(i) for i in range(1, 11))
    assert len(cfg.fingerprint) == 64
    with pytest.raises(AttributeError):
        cfg.scale.pdo = 50


def test_fingerprint_ignores_formatting_but_not_content(tmp_path):
    packaged = load_scorecard_config()
    raw = json.loads(_packaged_text())
    p = tmp_path / "scorecard.json"
    p.write_text(json.dumps(raw, indent=7, ensure_ascii=True), encoding="utf-8")
    assert load_scorecard_config(p).fingerprint == packaged.fingerprint
    raw["score_scale"]["pdo"] = 40
    p.write_text(json.dumps(raw), encoding="utf-8")
    other = load_scorecard_config(str(p))
    assert other.scale.pdo == 40 and other.fingerprint != packaged.fingerprint
    assert other.fingerprint == config_fingerprint(raw)


def _packaged_text() -> str:
    from importlib import resources
    return resources.files("smescore.config").joinpath("scorecard.json").read_text(encoding="utf-8")


def test_config_file_errors_say_what_was_got(tmp_path):
    raw = json.loads(_packaged_text())
    raw["score_scale"]["pdO"] = 60
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['pdO'\]"):
        load_scorecard_config(p)
    p.write_text('{"version": "x", "score_scale": {"pdo": NaN}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="NaN is not allowed"):
        load_scorecard_config(p)

"""`smescore validate` on the session's book and model: the walk-forward rows are the nightly
model's scores of the point-in-time features, every figure of validation.json equals an
independent numpy/scipy/sklearn computation on those rows, the thresholds decide the checks, the
HTML report renders in headless Chromium, and promote reads the verdict."""
import datetime as dt
import json
import os
import re
import shutil
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import special
from scipy import stats as sstats
from sklearn.metrics import roc_auc_score

from models import lifecycle, metrics, validation
from models import registry as model_registry
from models.scorecard import ConfigError, load_scorecard_config
from beam_jobs import walk_forward
from beam_jobs.sources import data_extent
from models.train import add_months
from smescore import cli
from tests import monitoring_services as services
from transforms import book_relative, catalog, feeds as feed_contract, pit
from synth.truth import GROUND_TRUTH_DIR

REPLICATES = 200
LAST = dt.date(2026, 10, 31)
LABELLED = dt.date(2025, 10, 31)          # the last date with 12 observed months
PACKAGED = json.loads(resources.files("smescore.config").joinpath("validation.json").read_text())


def _config(tmp, **changes) -> str:
    path = os.path.join(str(tmp), f"validation-{len(os.listdir(str(tmp)))}.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({**PACKAGED, "bootstrap_replicates": REPLICATES, **changes}, fh)
    return path


@pytest.fixture(scope="module")
def validated(trained, small_feeds, tmp_path_factory):
    source, version, card = trained
    tmp = tmp_path_factory.mktemp("validate")
    registry = str(tmp / "registry")
    shutil.copytree(source, registry)
    result = walk_forward.validate(registry, version, small_feeds, out_dir=str(tmp / "report"),
                                 config=_config(tmp), n_shards=4, progress=lambda m: None)
    rows = pq.read_table(result["rows"]).to_pandas()
    rows["as_of_date"] = pd.to_datetime(rows["as_of_date"]).dt.date
    return {"result": result, "rows": rows, "registry": registry, "version": version,
            "card": card, "tmp": tmp,
            "json": json.load(open(result["validation_json"], encoding="utf-8"))}


@pytest.fixture(scope="module")
def direct(small_feeds, validated):
    """In-process point-in-time features of two dates, routed by hand, scored through the
    SavedModel's serving signature from pandas (not the Arrow path validate uses)."""
    from models import backtest
    tables = {name: pq.read_table(os.path.join(small_feeds, name)).cast(feed.schema)
              for name, feed in feed_contract.FEEDS.items()}
    frames = pit.FirmFrames.from_tables(tables)
    _, outcome_end = data_extent(small_feeds)
    path = model_registry.Registry(validated["registry"]).saved_model_path(validated["version"])
    out = {}
    for as_of in (LABELLED, LAST):
        table = pit.compute_features(frames, as_of, outcome_end)
        f = book_relative.adjust(table, book_relative.book_medians([table])).to_pandas()  # read against the book
        model = f[~f["in_default"] & (f["months_history"] >= 6)].sort_values("enterprise_id")
        model = model.reset_index(drop=True)
        out[as_of] = {"all": f, "model": model, "pd": backtest.rescore(path, model)}
    out["path"] = path
    return out


# ----------------------------------------------------------------------------- dates and rows

def test_walk_forward_dates_run_from_after_training_to_the_feeds_end(validated):
    r = validated["json"]
    dates = [dt.date.fromisoformat(d["as_of_date"]) for d in r["dates"]]
    assert dates[0] == add_months(dt.date.fromisoformat(
        validated["card"]["snapshot_dates"]["train"][-1]), 1) and dates[-1] == LAST
    assert all(add_months(a, 1) == b for a, b in zip(dates, dates[1:]))
    snap = validated["card"]["snapshot_dates"]
    assert [d["role"] for d in r["dates"]][:4] == ["valid"] * len(snap["valid"]) + \
        ["test"] * len(snap["test"]) and {d["role"] for d in r["dates"][4:]} == {"after_test"}
    complete = [d["as_of_date"] for d in r["dates"] if d["outcomes_complete"]]
    assert complete == [str(d) for d in dates if add_months(d, 12) <= LAST] == r["pooled"]["dates"]
    card = {"version": "x", "snapshot_dates": {"train": ["2025-04-30"]}}
    assert validation.walk_forward_dates(card, dt.date(2025, 9, 15)) == [
        dt.date(2025, 5, 31), dt.date(2025, 6, 30), dt.date(2025, 7, 31), dt.date(2025, 8, 31)]
    with pytest.raises(validation.ValidationError, match="nothing to validate"):
        validation.walk_forward_dates(card, dt.date(2025, 5, 30))


def test_the_rows_are_the_saved_models_scores_of_the_point_in_time_features(validated, direct):
    rows, r = validated["rows"], validated["json"]
    master = load_scorecard_config(None).master_scale
    for as_of in (LABELLED, LAST):
        mine = rows[rows["as_of_date"] == as_of].sort_values("enterprise_id").reset_index(drop=True)
        d = direct[as_of]
        assert list(mine["enterprise_id"]) == list(d["model"]["enterprise_id"])
        assert np.abs(mine["pd"].to_numpy() - d["pd"]).max() < 1e-6
        assert list(mine["grade"]) == list(master.grade(mine["pd"].to_numpy()))
        np.testing.assert_array_equal(mine["default"].to_numpy(),
                                      d["model"]["label_default_12m"].to_numpy(np.float64))
        counts = next(x for x in r["dates"] if x["as_of_date"] == str(as_of))
        f = d["all"]
        assert (counts["firms"], counts["model_scored"], counts["in_default"], counts["rules"]) == (
            len(f), len(d["model"]), int(f["in_default"].sum()),
            int((~f["in_default"] & (f["months_history"] < 6)).sum()))
    assert rows.loc[rows["as_of_date"] == LABELLED, "default"].notna().all()
    assert rows.loc[rows["as_of_date"] == LAST, "default"].isna().all()


# ----------------------------------------------------------------------------- figures

def _ks(y, p):
    return sstats.ks_2samp(p[y == 1], p[y == 0]).statistic


def _bootstrap(y, p, firms, seed):
    """The documented resampling, written out: firms drawn with replacement, all their rows kept."""
    ids = np.unique(firms)
    groups = [np.flatnonzero(firms == i) for i in ids]
    rng = np.random.default_rng(seed)
    aucs, kss = [], []
    for _ in range(REPLICATES):
        idx = np.concatenate([groups[c] for c in rng.integers(0, len(ids), len(ids))])
        if 0 < y[idx].sum() < len(idx):
            aucs.append(roc_auc_score(y[idx], p[idx]))
            kss.append(_ks(y[idx], p[idx]))
    return np.percentile(aucs, [2.5, 97.5]), np.percentile(kss, [2.5, 97.5])


def _close(figure, value, ci=None):
    assert figure["value"] == pytest.approx(value, abs=1e-12)
    if ci is not None:
        assert (figure["ci_low"], figure["ci_high"]) == pytest.approx(tuple(ci), abs=1e-12)
        assert figure["ci_low"] < figure["value"] < figure["ci_high"]


def test_auc_ks_gini_and_their_intervals_per_date_and_pooled(validated):
    rows, r = validated["rows"], validated["json"]
    seed = r["config"]["seed"]
    labelled = rows[rows["default"].notna()]
    for d in r["dates"]:
        part = labelled[labelled["as_of_date"] == dt.date.fromisoformat(d["as_of_date"])]
        if not d["outcomes_complete"]:
            assert d["auc"] is None and len(part) == 0
            continue
        y, p = part["default"].to_numpy(int), part["pd"].to_numpy()
        auc_ci, ks_ci = _bootstrap(y, p, part["enterprise_id"].to_numpy(), seed)
        _close(d["auc"], roc_auc_score(y, p), auc_ci)
        _close(d["ks"], _ks(y, p), ks_ci)
        _close(d["gini"], 2 * roc_auc_score(y, p) - 1, 2 * auc_ci - 1)
        assert d["n_defaults"] == y.sum() > 0
    y, p = labelled["default"].to_numpy(int), labelled["pd"].to_numpy()
    auc_ci, ks_ci = _bootstrap(y, p, labelled["enterprise_id"].to_numpy(), seed)
    pooled = r["pooled"]
    assert (pooled["n"], pooled["n_firms"], pooled["n_defaults"]) == (
        len(labelled), labelled["enterprise_id"].nunique(), y.sum())
    _close(pooled["auc"], roc_auc_score(y, p), auc_ci)
    _close(pooled["ks"], _ks(y, p), ks_ci)


def test_calibration_jeffreys_and_true_pd_per_date_and_grade(validated, small_feeds):
    rows, r = validated["rows"], validated["json"]
    truth = pq.read_table(os.path.join(small_feeds, GROUND_TRUTH_DIR)).to_pandas()
    truth["as_of_date"] = pd.to_datetime(truth["as_of_date"]).dt.date
    joined = rows.merge(truth, on=["enterprise_id", "as_of_date"], how="left")
    assert joined["true_pd_12m"].to_numpy() == pytest.approx(rows["true_pd"].to_numpy())
    for d in r["dates"]:
        part = joined[joined["as_of_date"] == dt.date.fromisoformat(d["as_of_date"])]
        cal = d["calibration"]
        assert cal["mean_pd"] == pytest.approx(part["pd"].mean(), abs=1e-12)
        assert cal["mean_true_pd"] == pytest.approx(part["true_pd_12m"].mean(), abs=1e-12)
        assert cal["pd_to_true_pd_deviation"] == pytest.approx(
            part["pd"].mean() / part["true_pd_12m"].mean() - 1, abs=1e-12)
        assert cal["spearman_pd_true_pd"] == pytest.approx(
            part["pd"].corr(part["true_pd_12m"], method="spearman"), abs=1e-12)
        for g in d["by_grade"]:
            cell = part[part["grade"] == g["grade"]]
            assert g["n"] == len(cell)
            if not len(cell):
                continue
            assert g["mean_true_pd"] == pytest.approx(cell["true_pd_12m"].mean(), abs=1e-12)
            if d["outcomes_complete"]:
                k, n, m = int(cell["default"].sum()), len(cell), cell["pd"].mean()
                assert (g["n_defaults"], g["observed_default_rate"]) == (k, pytest.approx(k / n))
                assert g["jeffreys_p_value"] == pytest.approx(special.betainc(k + .5, n - k + .5, m),
                                                              rel=1e-9, abs=1e-15)
            else:
                assert "jeffreys_p_value" not in g
        if d["outcomes_complete"]:
            assert cal["observed_default_rate"] == pytest.approx(part["default"].mean())


def test_auc_and_ks_of_weighted_rows_are_those_of_the_rows_repeated():
    """metrics.RankedScores: a bootstrap replicate read as row weights gives sklearn's AUC and
    the two-sample KS of the rows written out that many times, ties included."""
    rng = np.random.default_rng(5)
    for n in (7, 300, 2500):
        y = (rng.random(n) < 0.2).astype(int)
        y[:2] = (0, 1)
        score = np.round(rng.random(n) + 0.3 * y, 2)              # many ties
        ranked = metrics.RankedScores(score)
        assert ranked.auc(y) == pytest.approx(roc_auc_score(y, score), abs=1e-15)
        assert ranked.ks(y) == pytest.approx(_ks(y, score), abs=1e-15)
        weights = rng.integers(0, 4, n)
        weights[:2] = 1
        rows = np.repeat(np.arange(n), weights)
        assert ranked.auc(y, weights) == pytest.approx(roc_auc_score(y[rows], score[rows]),
                                                       abs=1e-15)
        assert ranked.ks(y, weights) == pytest.approx(_ks(y[rows], score[rows]), abs=1e-15)
    assert metrics.auc([0, 1, 1], [0.2, 0.9, 0.2]) == 0.75                # a tie counts half
    with pytest.raises(ValueError, match="both defaults and non-defaults"):
        metrics.auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1], [0.1, np.nan])


def test_the_paired_auc_difference_and_its_interval():
    """metrics.auc_difference: a copy of the model differs by exactly 0 on every resample; a
    better score is ahead with an interval that excludes 0; a mean over several scores."""
    rng = np.random.default_rng(3)
    firms = np.repeat(np.arange(400), 2)                      # two rows a firm, resampled together
    risk = np.repeat(rng.normal(size=400), 2)
    y = (risk + rng.normal(size=800) > 1.5).astype(int)
    model = risk + rng.normal(scale=1.5, size=800)
    same = metrics.auc_difference(y, model, [model.copy()], firms, 200, 7)
    assert (same["value"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    better = metrics.auc_difference(y, model, [risk], firms, 200, 7)
    assert better["value"] == pytest.approx(roc_auc_score(y, risk) - roc_auc_score(y, model))
    assert 0 < better["ci_low"] < better["value"] < better["ci_high"]
    both = metrics.auc_difference(y, model, [risk, model], firms, 200, 7)
    assert both["value"] == pytest.approx(better["value"] / 2)


def test_holm_keeps_a_dates_grades_one_family():
    rejected, thresholds = validation.holm_rejections([0.3, 0.004, 0.02], 0.05)
    np.testing.assert_allclose(thresholds, [0.05, 0.05 / 3, 0.05 / 2])
    assert rejected.tolist() == [False, True, True]
    # nine grades at p = 0.01: each would fail alone at 5%, none does as one family (0.05 / 9)
    rejected, _ = validation.holm_rejections([0.01] * 9, 0.05)
    assert not rejected.any()
    # the step-down stops at the first grade that passes: 0.02 > 0.05 / 3 keeps 0.024 from failing
    assert validation.holm_rejections([0.001, 0.02, 0.024, 0.9], 0.05)[0].tolist() == \
        [True, False, False, False]
    assert validation.holm_rejections([], 0.05)[0].size == 0


def test_the_jeffreys_test_flags_under_prediction_only():
    assert validation.jeffreys_p_value(0, 1000, 0.01) > 0.999          # no defaults at 1%: fine
    assert validation.jeffreys_p_value(30, 1000, 0.01) < 1e-6          # 3% observed at 1%: fails
    assert validation.jeffreys_p_value(5, 1000, 0.02) > 0.99           # over-prediction: not flagged
    assert validation.jeffreys_p_value(10, 1000, 0.01) == pytest.approx(0.5, abs=0.05)


def test_out_of_range_shares_of_every_numeric_input(validated, direct):
    r, dist = validated["json"], validated["card"]["training_distribution"]
    by_feature = {x["feature"]: x for x in r["out_of_range"]}
    numeric = [f.name for f in catalog.FEATURES if not f.is_categorical
               and dist[f.name]["min"] is not None and dist[f.name]["max"] > dist[f.name]["min"]]
    assert set(by_feature) == set(numeric)         # the inputs with spread in training
    for as_of in (LABELLED, LAST):
        model = direct[as_of]["model"]
        for name in numeric:
            v = model[name].to_numpy(np.float64)
            share = np.mean((v < dist[name]["min"]) | (v > dist[name]["max"]))
            assert by_feature[name]["by_date"][str(as_of)] == pytest.approx(share, abs=1e-12), name
    worst = r["out_of_range"][0]
    assert worst["max_share"] == max(worst["by_date"].values()) == max(
        x["max_share"] for x in r["out_of_range"])


def test_monotonicity_on_the_exported_saved_model(validated, direct):
    import tensorflow as tf
    from models import export
    signature = tf.saved_model.load(direct["path"]).signatures[export.SCORE_SIGNATURE]

    def rescore(frame):
        return signature(**export.raw_tensors(frame))["pd"].numpy().astype(np.float64)

    r, card = validated["json"], validated["card"]
    cfg = r["config"]
    model = direct[LAST]["model"]
    rng = np.random.default_rng(cfg["seed"])
    sample = model.iloc[np.sort(rng.choice(len(model), min(cfg["monotonicity_firms"], len(model)),
                                           replace=False))].reset_index(drop=True)
    base = rescore(sample)
    rows = {x["feature"]: x for x in r["monotonicity"]["features"]}
    directional = [f for f in catalog.FEATURES if not f.is_categorical and f.risk_direction]
    assert set(rows) == {f.name for f in directional}
    assert r["monotonicity"]["n_firms"] == len(sample)
    for f in directional:
        if not card["training_distribution"][f.name]["std"]:
            assert rows[f.name]["note"] == "no training spread"
            continue
        has = sample[f.name].notna().to_numpy()
        moved = sample[has].copy()
        moved[f.name] = moved[f.name] + f.risk_direction * card["training_distribution"][f.name]["std"]
        drop = base[has] - rescore(moved)
        assert (rows[f.name]["n_moved"], rows[f.name]["violations"]) == (
            has.sum(), int((drop > cfg["monotonicity_tolerance"]).sum())), f.name
    assert r["monotonicity"]["violations"] == sum(x["violations"] for x in rows.values())


def test_the_monotonicity_check_counts_a_feature_that_lowers_the_pd():
    """On a hand-made PD function: monotone in every declared direction but one, reversed."""
    directional = [f for f in catalog.FEATURES if not f.is_categorical and f.risk_direction]
    reversed_ = directional[0].name
    card = {"training_distribution": {f.name: {"std": 1.0} for f in directional}}
    rng = np.random.default_rng(0)
    sample = {f.name: rng.normal(size=50).astype(np.float32) for f in catalog.FEATURES
              if not f.is_categorical}
    sample[reversed_][:5] = np.nan                   # skipped: no value to move

    def score_pd(x):
        z = sum(f.risk_direction * x[f.name].astype(np.float64) * (-1 if f.name == reversed_ else 1)
                for f in directional)
        return 1 / (1 + np.exp(-np.nan_to_num(z) / 100))

    rows = {x["feature"]: x for x in validation.monotonicity(score_pd, sample, card, 1e-6)}
    assert (rows[reversed_]["n_moved"], rows[reversed_]["violations"]) == (45, 45)
    assert all(x["violations"] == 0 for name, x in rows.items() if name != reversed_)


# ----------------------------------------------------------------------------- checks and config

def _expected_pass(c, cfg, family=None):
    v, t = c["value"], c["threshold"]
    if c["check"] == "min_jeffreys_p_value":
        # Holm over the date's tested grades: the i-th smallest p of m (i = 0, 1, ...) against
        # alpha / (m - i), rejecting up to the first that passes
        ps = sorted(family)
        i = ps.index(v)
        assert t == pytest.approx(cfg[c["check"]] / (len(ps) - i))
        return not all(p < cfg[c["check"]] / (len(ps) - j) for j, p in enumerate(ps[:i + 1]))
    assert t == cfg[c["check"]]
    if c["check"] in ("min_auc", "min_spearman_pd_true_pd"):
        return v >= t
    if c["check"] == "max_mean_pd_to_true_pd_deviation":
        return abs(v) <= t
    if c["check"] == "min_auc_margin_over_challenger":
        return v >= t
    return v <= t


def test_every_check_applies_its_threshold_and_passed_is_their_conjunction(validated):
    r = validated["json"]
    cfg = {**r["config"], "min_auc_margin_over_challenger": r["config"]["min_auc_margin_over_challengers"]}
    families = {}
    for c in r["checks"]:
        if c["check"] == "min_jeffreys_p_value":
            families.setdefault(c["scope"].split(" grade ")[0], []).append(c["value"])
    for c in r["checks"]:
        if c["value"] is None:
            assert c["passed"] is None and c["note"]
        else:
            family = families.get(c["scope"].split(" grade ")[0])
            assert c["passed"] == _expected_pass(c, cfg, family), c
    assert r["passed"] == all(c["passed"] is not False for c in r["checks"])
    kinds = {c["check"] for c in r["checks"]}
    assert kinds == {"min_auc", "min_auc_margin_over_challenger",
                     "max_auc_gap_to_unconstrained_network", "max_mean_pd_to_true_pd_deviation",
                     "min_spearman_pd_true_pd", "min_jeffreys_p_value",
                     "max_true_pd_grade_inversions", "max_out_of_range_share",
                     "max_monotonicity_violations"}
    n_auc = sum(d["outcomes_complete"] for d in r["dates"]) + 1              # each date, pooled
    assert sum(c["check"] == "min_auc" for c in r["checks"]) == n_auc
    assert sum(c["check"] == "min_jeffreys_p_value" for c in r["checks"]) == sum(
        g["n"] >= cfg["jeffreys_min_firms"] for d in r["dates"] if d["outcomes_complete"]
        for g in d["by_grade"])
    lr = next(c for c in r["checks"] if c["scope"] == "logistic regression")
    m = validated["card"]["metrics"]
    assert lr["value"] == pytest.approx(m["test"]["auc"] - m["challenger_logistic_regression"]["auc"])
    gbm = next(c for c in r["checks"] if c["scope"] == "monotone gradient boosting")
    assert (gbm["passed"] is None) == ("challenger_monotone_gbm" not in m)


def test_thresholds_from_the_config_decide(validated):
    r = validated["json"]
    strict = validation.ValidationConfig.from_dict({**PACKAGED, "min_auc": 0.99})
    lenient = validation.ValidationConfig.from_dict({
        **PACKAGED, "min_auc": 0.5, "min_auc_margin_over_challengers": -1,
        "max_auc_gap_to_unconstrained_network": 1, "max_mean_pd_to_true_pd_deviation": 1,
        "min_spearman_pd_true_pd": -1, "max_true_pd_grade_inversions": 10,
        "min_jeffreys_p_value": 0, "max_out_of_range_share": 1,
        "max_monotonicity_violations": 10 ** 9})
    by = lambda checks, name: [c["passed"] for c in checks if c["check"] == name]  # noqa: E731
    assert set(by(validation.evaluate_checks(r, strict), "min_auc")) == {False}
    checks = validation.evaluate_checks(r, lenient)
    assert not validation.failed_checks(checks)
    assert sum(c["passed"] is True for c in checks) > 100


@pytest.mark.parametrize("change, message", [
    ({"min_auc_typo": 0.7}, r"unknown key\(s\) \['min_auc_typo'\]"),
    ({"min_auc": 1.5}, "min_auc must lie in"),
    ({"bootstrap_replicates": 0}, "bootstrap_replicates must be at least 1"),
    ({"jeffreys_min_firms": 2.5}, "jeffreys_min_firms must be a whole number"),
    ({"max_monotonicity_violations": "0"}, "must be a number"),
])
def test_a_bad_config_is_refused_with_the_key_named(change, message):
    with pytest.raises(ConfigError, match=message):
        validation.ValidationConfig.from_dict({**PACKAGED, **change})
    missing = {k: v for k, v in PACKAGED.items() if k != "seed"}
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['seed'\]"):
        validation.ValidationConfig.from_dict(missing)
    assert validation.load_config().min_auc == PACKAGED["min_auc"]


# ----------------------------------------------------------------------------- report

FIGURE = re.compile(r'<div id="(fig-[a-z0-9-]+)"')


def test_the_report_renders_every_plot_offline(validated, tmp_path):
    r, path = validated["json"], validated["result"]["report"]
    assert path == os.path.join(str(validated["tmp"] / "report"), validation.REPORT_NAME)
    page = open(path, encoding="utf-8").read()
    assert re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//",
                     page, re.IGNORECASE) is None
    assert page.count("<script") == len(FIGURE.findall(page)) + 1
    assert ("PASSED" if r["passed"] else "FAILED") in page
    pooled = r["pooled"]["auc"]
    assert f"{pooled['value']:.4f} [{pooled['ci_low']:.4f}, {pooled['ci_high']:.4f}]" in page
    gbm = next(x for x in r["challengers"] if x["key"] == "challenger_monotone_gbm")["auc_minus_model"]
    assert f"{gbm['value']:+.4f} [{gbm['ci_low']:+.4f}, {gbm['ci_high']:+.4f}]" in page
    dom, fetched = services.render(path, str(tmp_path))
    assert fetched == []
    starts = [(m.group(1), m.start()) for m in FIGURE.finditer(dom)]
    figures = {fid: dom[s:e] for (fid, s), e in zip(starts, [s for _, s in starts[1:]] + [len(dom)])}
    assert set(figures) == {"fig-discrimination", "fig-calibration-time", "fig-grades",
                            "fig-out-of-range", "fig-monotonicity", "fig-points", "fig-challengers"}
    for fid, chunk in figures.items():
        assert 'class="main-svg"' in chunk, fid
    bars = {fid: chunk.count('class="point"') for fid, chunk in figures.items()}
    assert bars["fig-monotonicity"] == len(r["monotonicity"]["features"])
    assert bars["fig-out-of-range"] == validation_report_top(r)
    assert bars["fig-challengers"] == sum(x["auc"] is not None for x in r["challengers"])
    assert figures["fig-discrimination"].count('class="trace scatter ') == 2     # AUC and KS


def validation_report_top(r):
    from smescore.monitoring import validation_report
    return min(validation_report.TOP_FEATURES, len(r["out_of_range"]))


# ----------------------------------------------------------------------------- promote

def test_validate_and_promote_from_the_command_line(validated, small_feeds, capsys):
    """A second registry version (a copy of the model): validated on one date with a strict
    threshold it fails, promote refuses it; --override promotes it and the audit log keeps why
    and the failed checks."""
    registry, version = validated["registry"], validated["version"]
    candidate = f"{version}-candidate"
    shutil.copytree(model_registry.Registry(registry).version_dir(version),
                    model_registry.Registry(registry).version_dir(candidate))
    os.remove(os.path.join(model_registry.Registry(registry).version_dir(candidate),
                           model_registry.VALIDATION))
    assert cli.main(["promote", candidate, "--registry", registry]) == 4      # a gate refused
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"smescore: promote: {candidate} has not been validated") and "\n" not in err
    strict = _config(validated["tmp"], min_auc=0.99)
    assert cli.main(["validate", "--version", candidate, "--registry", registry, "--feeds",
                     small_feeds, "--dates", str(LABELLED), "--config", strict,
                     "--n-shards", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False and out["dates"] == [str(LABELLED)]
    assert {"check": "min_auc", "scope": str(LABELLED)}.items() <= out["failed_checks"][0].items()
    assert out["report"] == os.path.join(model_registry.Registry(registry).version_dir(candidate),
                                         validation.REPORT_NAME) and os.path.exists(out["report"])
    assert cli.main(["promote", candidate, "--registry", registry]) == 4      # a gate refused
    err = capsys.readouterr().err.strip()
    assert f"{candidate} failed validation: {len(out['failed_checks'])} of" in err
    assert "min_auc[2025-10-31]" in err and "--override" in err and "\n" not in err
    assert lifecycle.current_champion(registry) == version
    assert cli.main(["promote", candidate, "--registry", registry, "--why", "pilot",
                     "--override", "the risk committee accepted the AUC for a pilot"]) == 0
    entry = lifecycle.read_audit(registry)[-1]
    assert (entry["action"], entry["to_version"], entry["why"], entry["override"]) == (
        "promote", candidate, "pilot", "the risk committee accepted the AUC for a pilot")
    assert entry["validation"]["status"] == "failed"
    assert entry["validation"]["failed_checks"] == [lifecycle.describe_check(c)
                                                    for c in out["failed_checks"]]
    assert lifecycle.current_champion(registry) == candidate

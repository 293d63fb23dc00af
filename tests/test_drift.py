"""Drift against the training baseline: PSI by hand, the combiner against an independent pandas
computation over the same firms, statuses and thresholds."""
import datetime as dt
import json
from importlib import resources

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from beam_jobs import build_features, drift, score_portfolio
from smescore import tables
from transforms import catalog

AS_OF = dt.date(2026, 10, 31)


def test_psi_matches_the_textbook_formula_by_hand():
    e, a = [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]
    by_hand = (0.4 - 0.5) * np.log(0.4 / 0.5) + (0.4 - 0.3) * np.log(0.4 / 0.3)
    assert drift.psi(e, a) == pytest.approx(by_hand, abs=1e-12)
    assert drift.psi(e, e) == 0.0
    # an empty bin is floored, not infinite
    assert drift.psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) == pytest.approx(
        2 * (0.4 - 0.5) * np.log(0.4 / 0.5) + (0.2 - 1e-4) * np.log(0.2 / 1e-4), rel=1e-12)


def test_counts_use_the_baseline_bins_and_a_missing_bin():
    edges = [1.0, 2.0]
    assert drift.numeric_counts(np.array([0.5, 1.0, 1.5, 2.0, 9.0, np.nan]), edges).tolist() == \
        [1, 2, 2, 1]                                    # [-inf,1), [1,2), [2,inf), missing
    assert drift.categorical_counts(["a", "b", "a", "", "zz"], ["", "a", "b"]).tolist() == \
        [1, 2, 1, 1]                                    # '', a, b, unseen


def test_thresholds_and_config():
    t = drift.Thresholds(0.10, 0.25)
    assert [t.status(v) for v in (0.0, 0.10, 0.11, 0.25, 0.26, -0.3)] == \
        ["ok", "ok", "warn", "warn", "alert", "alert"]
    cfg = drift.DriftConfig.load()
    assert (cfg.psi.warn, cfg.psi.alert) == (0.10, 0.25)


def test_config_errors_are_clear(tmp_path):
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps({"psi": {"warn": 0.3, "alert": 0.2},
                               "missing_rate_change": {"warn": 0.05, "alert": 0.1},
                               "attribution_drift": {"warn": 0.25, "alert": 0.5}}))
    with pytest.raises(ValueError, match="'psi' needs 0 <= warn <= alert"):
        drift.DriftConfig.load(str(bad))


def _psi_by_pandas(values: pd.Series, bins: dict) -> float:
    """An independent PSI: pandas binning with the baseline's edges/categories."""
    if bins["type"] == "numeric":
        edges = [-np.inf, *bins["edges"], np.inf]
        present = values.dropna()
        counts = pd.cut(present, edges, right=False).value_counts(sort=False).to_numpy()
        actual = np.append(counts, values.isna().sum()) / len(values)
        expected = np.append(bins["shares"], bins["missing_share"])
    else:
        v = values.fillna("").astype(str)
        cats = bins["categories"]
        actual = np.array([(v == c).sum() for c in cats] + [(~v.isin(cats)).sum()]) / len(v)
        expected = np.append(bins["shares"], bins["other_share"])
    e, a = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.fixture(scope="module")
def industries(small_feeds):
    firms = pq.read_table(f"{small_feeds}/enterprises").to_pandas()
    return firms[["enterprise_id", "industry"]].rename(columns={"industry": "ent_industry"})


@pytest.fixture(scope="module")
def run(small_feeds, trained, tmp_path_factory):
    registry, version, card = trained
    wh = tmp_path_factory.mktemp("wh") / "risk.duckdb"
    result = score_portfolio.run([f"--feeds={small_feeds}", f"--as_of={AS_OF}",
                                  f"--registry={registry}", f"--warehouse={wh}", "--n_shards=4"],
                                 save_main_session=False, progress=lambda m: None)
    with duckdb.connect(str(wh), read_only=True) as con:
        rows = con.execute("SELECT * FROM drift ORDER BY metric, feature").fetch_df()
        scores = con.execute("SELECT enterprise_id, score FROM scores "
                             "WHERE score_source = 'model'").fetch_df()
        points = con.execute("SELECT feature, AVG(ABS(points)) AS m FROM attributions "
                             "GROUP BY feature").fetch_df()
    return result, rows, scores, points, card


def test_every_feature_and_the_score_have_their_rows(run):
    result, rows, _, _, card = run
    assert set(rows["metric"]) == set(tables.DRIFT_METRICS)
    assert set(rows[rows.segment != "all"].feature) == {tables.SCORE_FEATURE}
    psi = rows[(rows.metric == "psi") & (rows.segment == "all")]
    assert sorted(psi["feature"]) == sorted([*catalog.NAMES, tables.SCORE_FEATURE])
    numeric = [f.name for f in catalog.FEATURES if not f.is_categorical]
    assert sorted(rows[rows.metric == "missing_rate_change"]["feature"]) == sorted(numeric)
    assert len(rows[rows.metric == "attribution_drift"]) == len(catalog.NAMES)
    assert (rows["model_version"] == result["model_version"]).all()
    assert (rows["run_id"] == result["run_id"]).all()
    for _, r in rows.iterrows():
        assert r.status == ("alert" if abs(r.value) > r.threshold else
                            "warn" if abs(r.value) > r.warn_threshold else "ok")
    # the model was trained as of this date on these feeds: its reference population is this book
    assert (rows.status == "ok").all()
    assert rows[rows.metric == "psi"].value.abs().max() < 1e-12
    assert result["drift"]["score_psi"] == pytest.approx(
        psi.loc[psi.feature == tables.SCORE_FEATURE, "value"].item())


def test_feature_psi_and_missing_rates_equal_an_independent_computation(run, small_feeds, tmp_path):
    _, rows, scores, _, card = run
    out = tmp_path / "f.parquet"
    build_features.run([f"--feeds={small_feeds}", f"--as_of={AS_OF}", f"--out={out}"],
                       save_main_session=False)
    frame = pq.read_table(out).to_pandas()
    model_firms = frame[frame.enterprise_id.isin(scores.enterprise_id)]
    assert len(model_firms) == len(scores)
    base = card["baseline"]["features"]
    got = rows[rows.segment == "all"].set_index(["metric", "feature"])["value"]
    for name in catalog.NAMES:
        assert got[("psi", name)] == pytest.approx(_psi_by_pandas(model_firms[name], base[name]),
                                                   abs=1e-12), name
        if base[name]["type"] == "numeric":
            assert got[("missing_rate_change", name)] == pytest.approx(
                model_firms[name].isna().mean() - base[name]["missing_share"], abs=1e-12)


def test_score_psi_and_attribution_drift_equal_the_published_rows(run, industries):
    _, rows, scores, points, card = run
    got = rows.set_index(["metric", "feature", "segment"])["value"]
    s = pd.Series(scores["score"].astype(float))
    assert got[("psi", tables.SCORE_FEATURE, "all")] == pytest.approx(
        _psi_by_pandas(s, card["baseline"]["score"]), abs=1e-12)
    # within each industry with enough firms now and at training, on that industry's baseline
    by_industry = card["baseline"]["score_by_industry"]
    segments = rows[(rows.feature == tables.SCORE_FEATURE) & (rows.segment != "all")]
    sizes = scores.merge(industries, on="enterprise_id").groupby("ent_industry").size()
    expected = sorted(f"industry={i}" for i, n in sizes.items()
                      if min(n, by_industry[i]["n"]) >= drift.DriftConfig.load().min_segment_firms)
    assert sorted(segments.segment) == expected
    merged = scores.merge(industries, on="enterprise_id")
    for seg in expected:
        ind = seg.split("=")[1]
        assert got[("psi", tables.SCORE_FEATURE, seg)] == pytest.approx(_psi_by_pandas(
            merged.loc[merged.ent_industry == ind, "score"].astype(float), by_industry[ind]),
            abs=1e-12)
    base = card["baseline"]["mean_abs_points"]
    for _, r in points.iterrows():
        assert got[("attribution_drift", r.feature, "all")] == pytest.approx(
            (r.m - base[r.feature]) / max(base[r.feature], 1.0), abs=1e-9)


# ----------------------------------------------------------------------------- injected shift

AFFECTED = {f.name for f in catalog.FEATURES if f.feed == "invoices"} | {"tax_inv_gap_3m"}


def test_an_invoice_outage_in_one_industry_alerts_on_its_features_and_its_score(
        trained, tmp_path):
    """The same portfolio as the session's (seed, size), but manufacturing (C) firms lose every
    e-invoice of the last 3 months. The model was trained on the unshifted book as of the same
    date, so without the shift every drift row is 0 and 'ok' (test above)."""
    from smescore.generate import InvoiceShift, generate
    from tests.conftest import END_DATE, FIRMS, MONTHS, SEED
    registry, _, _ = trained
    feeds = str(tmp_path / "feeds")
    summary = generate(feeds, firms=FIRMS, months=MONTHS, end_date=END_DATE, seed=SEED,
                       shift=InvoiceShift("C", drop=1.0, months=3))
    assert summary["shift"] == {"industry": "C", "drop": 1.0, "months": 3}
    wh = tmp_path / "risk.duckdb"
    config = json.loads(resources.files("smescore.config").joinpath("drift.json").read_text())
    (tmp_path / "drift.json").write_text(json.dumps({**config, "min_segment_firms": 100}))
    score_portfolio.run([f"--feeds={feeds}", f"--as_of={AS_OF}", f"--registry={registry}",
                         f"--warehouse={wh}", "--n_shards=4",
                         f"--drift_config={tmp_path / 'drift.json'}"],   # a small book
                        save_main_session=False, progress=lambda m: None)
    with duckdb.connect(str(wh), read_only=True) as con:
        rows = con.execute("SELECT * FROM drift").fetch_df()
    feature_rows = rows[(rows.feature != tables.SCORE_FEATURE) & (rows.metric != "attribution_drift")]
    flagged = set(feature_rows[feature_rows.status != "ok"].feature)
    assert len(flagged) >= 5 and flagged <= AFFECTED, flagged - AFFECTED
    score = rows[rows.feature == tables.SCORE_FEATURE].set_index("segment")
    assert len(score) >= 4 and score.loc["industry=C", "status"] in ("warn", "alert")
    assert (score.drop(index="industry=C").status == "ok").all()

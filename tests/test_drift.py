"""Drift against the training references: PSI by hand, the combiner against an independent pandas
computation over the same firms (against the book at the training date and the training sample,
and the shares outside the training range), statuses and thresholds, an older trainer's card."""
import datetime as dt
import json
import os
import shutil
from importlib import resources

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from beam_jobs import build_features, drift, publish, score_portfolio
from models import registry as model_registry
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


def test_out_of_range_counts_present_values_outside_the_closed_training_range():
    v = np.array([-0.5, 0.0, 3.0, 24.0, 24.0001, 36.0, np.nan, np.inf])
    assert drift.out_of_range_count(v, 0.0, 24.0).tolist() == [3]   # -0.5, 24.0001, 36; not NaN
    assert drift.out_of_range_count(v, -1.0, 40.0).tolist() == [0]
    # a training sample that never had a value: every present value is outside
    assert drift.out_of_range_count(v, None, None).tolist() == [6]


def test_thresholds_and_config():
    t = drift.Thresholds(0.10, 0.25)
    assert [t.status(v) for v in (0.0, 0.10, 0.11, 0.25, 0.26, -0.3)] == \
        ["ok", "ok", "warn", "warn", "alert", "alert"]
    cfg = drift.DriftConfig.load()
    assert (cfg.psi.warn, cfg.psi.alert) == (0.10, 0.25)
    assert cfg.psi_training_sample == cfg.psi                 # not in drift.json: psi's scale
    assert (cfg.out_of_range.warn, cfg.out_of_range.alert) == (0.01, 0.05)
    assert [cfg.out_of_range.status(v) for v in (0.0, 0.01, 0.0101, 0.05, 0.0501)] == \
        ["ok", "ok", "warn", "warn", "alert"]


def test_the_config_may_give_the_training_sample_psi_its_own_thresholds(tmp_path):
    path = tmp_path / "d.json"
    shipped = json.loads(resources.files("smescore.config").joinpath("drift.json").read_text())
    path.write_text(json.dumps({**shipped, "psi_training_sample": {"warn": 0.2, "alert": 0.5}}))
    cfg = drift.DriftConfig.load(str(path))
    assert (cfg.psi_training_sample.warn, cfg.psi_training_sample.alert) == (0.2, 0.5)
    assert (cfg.psi.warn, cfg.psi.alert) == (0.10, 0.25)
    del shipped["out_of_range"]
    path.write_text(json.dumps(shipped))
    with pytest.raises(ValueError,
                       match="'out_of_range' needs exactly 'warn' and 'alert', got None"):
        drift.DriftConfig.load(str(path))


def test_config_errors_are_clear(tmp_path):
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps({"psi": {"warn": 0.3, "alert": 0.2},
                               "out_of_range": {"warn": 0.01, "alert": 0.05},
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


NUMERIC = [f.name for f in catalog.FEATURES if not f.is_categorical]


def test_every_feature_and_the_score_have_their_rows(run):
    result, rows, _, _, card = run
    assert set(rows["metric"]) == set(tables.DRIFT_METRICS)
    assert set(rows[rows.segment != "all"].feature) == {tables.SCORE_FEATURE}
    assert set(rows[rows.segment != "all"].metric) == {"psi"}
    for metric in ("psi", "psi_training_sample"):
        assert sorted(rows[(rows.metric == metric) & (rows.segment == "all")]["feature"]) == \
            sorted([*catalog.NAMES, tables.SCORE_FEATURE]), metric
    assert sorted(rows[rows.metric == "missing_rate_change"]["feature"]) == sorted(NUMERIC)
    # out of range: every input with spread in training (the others are zeroed by the TFT graph)
    spread = [n for n in NUMERIC if card["training_distribution"][n]["min"] is not None
              and card["training_distribution"][n]["max"] > card["training_distribution"][n]["min"]]
    assert 0 < len(spread) < len(NUMERIC)        # the short book's year-on-year inputs have none
    assert sorted(rows[rows.metric == "out_of_range"]["feature"]) == sorted(spread)
    assert len(rows[rows.metric == "attribution_drift"]) == len(catalog.NAMES)
    assert (rows["model_version"] == result["model_version"]).all()
    assert (rows["run_id"] == result["run_id"]).all()
    for _, r in rows.iterrows():
        assert r.status == ("alert" if abs(r.value) > r.threshold else
                            "warn" if abs(r.value) > r.warn_threshold else "ok")
    # the model was trained as of this date on these feeds: the training-date book is this book
    same_book = rows[rows.metric.isin(["psi", "missing_rate_change", "attribution_drift"])]
    assert (same_book.status == "ok").all()
    assert rows[rows.metric == "psi"].value.abs().max() < 1e-12
    score = rows[(rows.feature == tables.SCORE_FEATURE) & (rows.segment == "all")
                 ].set_index("metric")["value"]
    assert result["drift"]["score_psi"] == score["psi"] == pytest.approx(0, abs=1e-12)
    assert result["drift"]["score_psi_training_sample"] == score["psi_training_sample"] > 0


@pytest.fixture(scope="module")
def model_features(run, small_feeds, tmp_path_factory):
    """The features of the model-scored firms, from the feature job on its own."""
    scores = run[2]
    out = tmp_path_factory.mktemp("features") / "f.parquet"
    build_features.run([f"--feeds={small_feeds}", f"--as_of={AS_OF}", f"--out={out}"],
                       save_main_session=False)
    frame = pq.read_table(out).to_pandas()
    model_firms = frame[frame.enterprise_id.isin(scores.enterprise_id)].reset_index(drop=True)
    assert len(model_firms) == len(scores)
    return model_firms


def test_feature_psi_and_missing_rates_equal_an_independent_computation(run, model_features):
    _, rows, scores, _, card = run
    model_firms = model_features
    base = card["baseline"]["features"]
    got = rows[rows.segment == "all"].set_index(["metric", "feature"])["value"]
    for name in catalog.NAMES:
        assert got[("psi", name)] == pytest.approx(_psi_by_pandas(model_firms[name], base[name]),
                                                   abs=1e-12), name
        if base[name]["type"] == "numeric":
            assert got[("missing_rate_change", name)] == pytest.approx(
                model_firms[name].isna().mean() - base[name]["missing_share"], abs=1e-12)


def test_training_sample_psi_and_out_of_range_equal_an_independent_computation(
        run, model_features):
    """Against the training sample: PSI on its own bins, and the share of model-scored firms
    whose present value lies outside its [min, max], by numpy over the same firms."""
    _, rows, scores, _, card = run
    sample, ranges = card["baseline"]["training_sample"], card["training_distribution"]
    got = rows[rows.segment == "all"].set_index(["metric", "feature"])["value"]
    n = len(model_features)
    outside = {}
    for name in catalog.NAMES:
        assert got[("psi_training_sample", name)] == pytest.approx(
            _psi_by_pandas(model_features[name], sample["features"][name]), abs=1e-12), name
        if name in NUMERIC and ("out_of_range", name) in got:
            v = model_features[name].to_numpy(np.float64, na_value=np.nan)
            lo, hi = ranges[name]["min"], ranges[name]["max"]
            k = int(np.sum(~np.isnan(v) & ((v < lo) | (v > hi))))
            assert got[("out_of_range", name)] == k / n, name     # counted exactly
            outside[name] = k
    assert got[("psi_training_sample", tables.SCORE_FEATURE)] == pytest.approx(
        _psi_by_pandas(pd.Series(scores["score"].astype(float)), sample["score"]), abs=1e-12)
    # The nightly book reaches beyond what the training snapshots saw: not a vacuous check.
    assert sum(outside.values()) > 0, outside


def test_out_of_range_statuses_follow_the_thresholds(trained):
    """drift_rows on made-up counts: 1.0% of 1,000 firms outside is ok, 3% warn, 7% alert."""
    card = trained[2]
    reference = drift.Reference.from_card(card)
    counts = {}
    for name in catalog.NAMES:
        for key, bins in ((name, reference.book["features"][name]),
                          ((drift.TRAINING_SAMPLE, name),
                           reference.training_sample["features"][name])):
            counts[key] = drift.bin_counts([] if bins["type"] == "categorical" else np.array([]),
                                           bins)        # no firm in any bin
        if name in NUMERIC:
            counts[(drift.OUT_OF_RANGE, name)] = np.array([0], np.int64)
    for key, bins in ((tables.SCORE_FEATURE, reference.book["score"]),
                      ((drift.TRAINING_SAMPLE, tables.SCORE_FEATURE),
                       reference.training_sample["score"])):
        counts[key] = drift.bin_counts(np.array([]), bins)
    a, b, c = NUMERIC[:3]
    for name, k in ((a, 10), (b, 30), (c, 70)):
        counts[(drift.OUT_OF_RANGE, name)] = np.array([k], np.int64)
    stats = {"n": 1000, "counts": counts, "mean_abs_points": np.zeros(len(catalog.NAMES))}
    rows = drift.drift_rows(stats, reference, drift.DriftConfig.load(), AS_OF, "v", "r")
    oor = {r["feature"]: (r["value"], r["warn_threshold"], r["threshold"], r["status"])
           for r in rows if r["metric"] == "out_of_range"}
    assert set(oor) == set(NUMERIC)
    assert [oor[f] for f in (a, b, c)] == [(0.01, 0.01, 0.05, "ok"), (0.03, 0.01, 0.05, "warn"),
                                           (0.07, 0.01, 0.05, "alert")]
    assert {oor[f][3] for f in NUMERIC[3:]} == {"ok"}


def test_an_input_without_spread_in_training_has_no_range(trained):
    """The TFT graph zeroes an input training saw no spread of (no value, or one): the network
    never reads it, so no value of it is out of the model's range."""
    card = json.loads(json.dumps(trained[2]))
    a, b, c = NUMERIC[:3]
    card["training_distribution"][a].update(min=None, max=None)
    card["training_distribution"][b].update(min=2.0, max=2.0)
    card["training_distribution"][c].update(min=0.0, max=5.0)
    ranges = drift.Reference.from_card(card).ranges
    assert a not in ranges and b not in ranges and ranges[c] == (0.0, 5.0)


def test_a_damaged_card_is_refused_rather_than_measured_in_part(trained):
    card = json.loads(json.dumps(trained[2]))
    del card["training_distribution"][NUMERIC[0]]
    with pytest.raises(ValueError, match=f"training_distribution has no range for "
                                         f"\\['{NUMERIC[0]}'\\]"):
        drift.Reference.from_card(card)


def test_an_older_trainers_card_measures_what_it_can_and_warns_once(run, trained, small_feeds,
                                                                   tmp_path, caplog):
    """A card without the training sample's bins (an older trainer; its training distribution,
    which the reasons need, is there): the run succeeds with every other row equal to the full
    run's, no psi_training_sample, and one warning (progress lines, log and run record)."""
    src, version, _ = trained
    registry = tmp_path / "registry"
    shutil.copytree(src, registry)
    path = os.path.join(model_registry.Registry(str(registry)).version_dir(version),
                        model_registry.MODEL_CARD)
    card = model_registry.read_json(path)
    del card["baseline"]["training_sample"]
    model_registry.write_json_atomically(path, card)
    wh, lines = tmp_path / "risk.duckdb", []
    with caplog.at_level("WARNING", logger=publish.__name__):
        result = score_portfolio.run([f"--feeds={small_feeds}", f"--as_of={AS_OF}",
                                      f"--registry={registry}", f"--warehouse={wh}",
                                      "--n_shards=4"], save_main_session=False,
                                     progress=lines.append)
    warned = [m for m in lines if "predates the training sample references" in m]
    assert len(warned) == 1 and "psi_training_sample" in warned[0]
    assert len([r for r in caplog.records if "predates" in r.getMessage()]) == 1
    with duckdb.connect(str(wh), read_only=True) as con:
        rows = con.execute("SELECT * FROM drift ORDER BY metric, feature, segment").fetch_df()
        (status, message), = con.execute("SELECT status, message FROM runs").fetchall()
    assert status == "succeeded" and "predates the training sample references" in message
    assert result["drift"]["score_psi_training_sample"] is None
    assert set(rows.metric) == {"psi", "missing_rate_change", "attribution_drift", "out_of_range"}
    full = run[1]
    full = full[full.metric.isin(set(rows.metric))].sort_values(["metric", "feature", "segment"])
    assert rows[["feature", "segment", "metric", "value", "status"]].to_dict("records") == \
        full[["feature", "segment", "metric", "value", "status"]].to_dict("records")


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
    from synth.generate import InvoiceShift, generate
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
    # against the book as of the training date (the training sample differs from it anyway)
    rows = rows[rows.metric.isin(["psi", "missing_rate_change"])]
    feature_rows = rows[rows.feature != tables.SCORE_FEATURE]
    flagged = set(feature_rows[feature_rows.status != "ok"].feature)
    assert len(flagged) >= 5 and flagged <= AFFECTED, flagged - AFFECTED
    score = rows[rows.feature == tables.SCORE_FEATURE].set_index("segment")
    assert len(score) >= 4 and score.loc["industry=C", "status"] in ("warn", "alert")
    assert (score.drop(index="industry=C").status == "ok").all()

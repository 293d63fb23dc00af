"""The nightly job end to end on DirectRunner: a real SavedModel, a real DuckDB file."""
import datetime as dt
import re
import json
import os
import shutil

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from beam_jobs import score_portfolio
from models import registry as model_registry
from models.reasons import MIN_POINTS, TypicalFirm, on_risky_side
from models.scorecard import ScoreScale
from smescore.errors import GateBreached
from transforms import catalog

AS_OF = dt.date(2026, 10, 31)


def _score(feeds, registry, warehouse, *extra):
    return score_portfolio.run([f"--feeds={feeds}", f"--as_of={AS_OF}", f"--registry={registry}",
                                f"--warehouse={warehouse}", "--n_shards=4", *extra],
                               save_main_session=False, progress=lambda m: None)


def _table(warehouse, sql, params=()):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetch_df()


@pytest.fixture(scope="module")
def scored(small_feeds, trained, tmp_path_factory):
    registry, version, _ = trained
    warehouse = tmp_path_factory.mktemp("wh") / "risk.duckdb"
    result = _score(small_feeds, registry, warehouse)
    return warehouse, result


def test_every_firm_gets_a_score(scored, small_feeds):
    warehouse, result = scored
    firms = pq.read_table(os.path.join(small_feeds, "enterprises")).to_pandas()
    established = (pd.to_datetime(firms["established_date"]).dt.date <= AS_OF).sum()
    scores = _table(warehouse, "SELECT * FROM scores WHERE as_of_date = ?", [AS_OF])
    assert len(scores) == established == result["firms"]
    assert scores["enterprise_id"].is_unique
    assert set(scores["score_source"]) <= {"model", "rules", "in_default"}
    assert {"model", "rules"} <= set(scores["score_source"])
    assert scores["score"].between(300, 850).all()
    assert (scores.loc[scores.score_source == "in_default", "grade"] == "D").all()
    assert set(scores.loc[scores.score_source != "in_default", "grade"]) <= {str(g) for g in range(1, 11)}


def test_beam_scores_equal_direct_saved_model_calls(scored, trained, small_feeds, tmp_path):
    import tensorflow as tf
    from beam_jobs import build_features
    from models import export
    warehouse, _ = scored
    registry, version, _ = trained
    feats = tmp_path / "f.parquet"
    build_features.run([f"--feeds={small_feeds}", f"--as_of={AS_OF}", f"--out={feats}"],
                       save_main_session=False)
    frame = pq.read_table(feats).to_pandas()
    model = tf.saved_model.load(model_registry.Registry(registry).saved_model_path(version))
    direct = model.signatures[export.SCORE_SIGNATURE](**export.raw_tensors(frame))["pd"].numpy()
    scores = _table(warehouse, "SELECT enterprise_id, pd FROM scores WHERE score_source = 'model'")
    joined = scores.merge(pd.DataFrame({"enterprise_id": frame.enterprise_id, "direct": direct}))
    assert len(joined) == len(scores) > 500
    assert np.max(np.abs(joined["pd"] - joined["direct"])) <= 1e-6


def test_points_add_up_to_the_unclamped_score(scored):
    warehouse, _ = scored
    scale = ScoreScale()
    s = _table(warehouse, "SELECT enterprise_id, pd, base_points FROM scores WHERE score_source='model'")
    pts = _table(warehouse, "SELECT enterprise_id, SUM(points) AS points, COUNT(*) AS n "
                            "FROM attributions GROUP BY enterprise_id")
    j = s.merge(pts, on="enterprise_id")
    assert len(j) == len(s) and (j["n"] == len(catalog.NAMES)).all()
    unclamped = scale.unclamped_score(j["pd"].to_numpy())
    assert np.max(np.abs(j["base_points"] + j["points"] - unclamped)) < 0.01


def _typical(trained) -> TypicalFirm:
    _, version, card = trained
    return TypicalFirm.from_card(card, version)


def _attributions(warehouse, typical: TypicalFirm) -> pd.DataFrame:
    """Every model-scored firm's points per feature, with whether the feature may be a reason."""
    pts = _table(warehouse, "SELECT enterprise_id, feature, value, value_text, points FROM attributions")
    feature = pts["feature"].map(catalog.BY_NAME)
    median = pts["feature"].map(typical.values)
    direction = feature.map(lambda f: f.risk_direction)
    categorical = feature.map(lambda f: f.is_categorical)
    value = pts["value"].astype(float)
    risky = np.where(direction > 0, value > median.where(~categorical).astype(float),
                     value < median.where(~categorical).astype(float))
    pts["eligible"] = np.where(categorical, pts["value_text"].notna(),
                               value.notna() & ((direction == 0) | risky))
    pts["family"] = feature.map(lambda f: f.family)
    pts["order"] = pts["feature"].map(catalog.NAMES.index)
    return pts


def test_reasons_are_the_biggest_negative_points_where_worse_than_typical_one_per_family(
        scored, trained):
    warehouse, _ = scored
    s = _table(warehouse, "SELECT enterprise_id, reasons FROM scores WHERE score_source='model'")
    pts = _attributions(warehouse, _typical(trained))
    assert 0 < (~pts["eligible"] & (pts["points"] <= -MIN_POINTS)).sum()   # the rule drops some
    eligible = pts[pts["eligible"]]
    best = eligible.sort_values(["points", "order"]).groupby(["enterprise_id", "family"]).head(1)
    by_firm = {k: g for k, g in best.groupby("enterprise_id")}     # one reason per risk family
    n_checked = 0
    for firm, reasons in zip(s["enterprise_id"], s["reasons"]):
        reasons = list(reasons)
        assert len(reasons) <= 4
        assert all(r["points"] < 0 for r in reasons)
        families = [catalog.BY_NAME[r["feature"]].family for r in reasons]
        assert len(set(families)) == len(families)
        mine = by_firm.get(firm, best.iloc[:0])
        expected = mine[mine["points"] <= -MIN_POINTS].head(4)
        assert [r["feature"] for r in reasons] == list(expected["feature"])
        for r in reasons:
            assert r["code"] == catalog.BY_NAME[r["feature"]].code
        n_checked += 1
    assert n_checked > 500


def test_every_reason_is_worse_than_typical_and_says_both_values_in_chinese_and_english(
        scored, trained):
    """The acceptance figures for reasons (README "The model"), on a real run of the fixture book."""
    warehouse, _ = scored
    typical = _typical(trained)
    s = _table(warehouse, "SELECT enterprise_id, reasons FROM scores WHERE score_source='model'")
    pts = _attributions(warehouse, typical).set_index(["enterprise_id", "feature"])
    n = directional = risky = 0
    for firm, reasons in zip(s["enterprise_id"], s["reasons"]):
        for r in reasons:
            f = catalog.BY_NAME[r["feature"]]
            row = pts.loc[(firm, f.name)]
            value = row["value_text"] if f.is_categorical else row["value"]
            if f.risk_direction:
                directional += 1
                risky += bool(on_risky_side(f, [value], typical.value(f.name))[0])
            assert not re.search(r"[A-Za-z]{3,}", r["text_zh"]), r["text_zh"]
            for lang in ("zh", "en"):
                text = r[f"text_{lang}"]
                assert catalog.render_value(f, value, lang) in text, text
                assert catalog.typical_clause(f, typical.value(f.name), lang, value) in text, text
            n += 1
    assert n > 1000 and directional > 500
    assert risky / directional >= 0.99
    assert risky == directional               # by construction


def test_categorical_values_are_stored_as_text(scored, small_feeds):
    warehouse, _ = scored
    attr = _table(warehouse, "SELECT enterprise_id, feature, value, value_text FROM attributions")
    categorical = attr["feature"].isin(catalog.CATEGORICAL)
    assert attr.loc[~categorical, "value_text"].isna().all()
    assert attr.loc[categorical, "value"].isna().all()
    firms = pq.read_table(os.path.join(small_feeds, "enterprises")).to_pandas().set_index("enterprise_id")
    for feature, column in (("ent_industry", "industry"), ("ent_province", "province"),
                            ("ent_legal_form", "legal_form")):
        got = attr[attr["feature"] == feature].set_index("enterprise_id")["value_text"]
        assert len(got) > 500 and got.notna().all()
        assert (got == firms.loc[got.index, column]).all()


def test_cold_start_firms_go_to_the_rules(scored, small_feeds):
    warehouse, _ = scored
    rules = _table(warehouse, "SELECT * FROM scores WHERE score_source = 'rules'")
    assert len(rules) > 10
    assert rules["model_version"].notna().all()
    runs = _table(warehouse, "SELECT * FROM runs")
    assert runs.loc[0, "firms_scored_rules"] == len(rules)


def test_rerun_replaces_the_date_without_duplicates(scored, trained, small_feeds):
    warehouse, first = scored
    registry, _, _ = trained
    before = _table(warehouse, "SELECT * FROM scores ORDER BY enterprise_id")
    second = _score(small_feeds, registry, warehouse)
    after = _table(warehouse, "SELECT * FROM scores ORDER BY enterprise_id")
    assert second["run_id"] == first["run_id"]            # derived, not random
    pd.testing.assert_frame_equal(before, after)
    n_attr = _table(warehouse, "SELECT COUNT(*) AS n FROM attributions")["n"][0]
    assert n_attr == len(before[before.score_source == "model"]) * len(catalog.NAMES)


MALFORMED = {
    "invoices": [
        {"invoice_id": "", "enterprise_id": "E0000001", "invoice_date": "2026-09-01",
         "direction": "sales", "amount": "10", "counterparty_id": "K", "status": "normal"},
        {"invoice_id": "X2", "enterprise_id": "E0000001", "invoice_date": "2026-09-01",
         "direction": "sales", "amount": "-10", "counterparty_id": "K", "status": "normal"},
        {"invoice_id": "X3", "enterprise_id": "E0000001", "invoice_date": "2026-02-30",
         "direction": "sales", "amount": "10", "counterparty_id": "K", "status": "normal"},
        {"invoice_id": "X4", "enterprise_id": "E0000001", "invoice_date": "2026-09-01",
         "direction": "refund", "amount": "10", "counterparty_id": "K", "status": "normal"},
        {"invoice_id": "X5", "enterprise_id": "E0000001", "invoice_date": "2026-09-01",
         "direction": "sales", "amount": "NaN", "counterparty_id": "K", "status": "normal"},
        {"invoice_id": "X6", "enterprise_id": "E0000001", "invoice_date": "2026-09-01",
         "direction": "sales", "amount": "-inf", "counterparty_id": "K", "status": "normal"},
        {"invoice_id": "X7", "enterprise_id": "NOPE", "invoice_date": "2026-09-01",
         "direction": "sales", "amount": "10", "counterparty_id": "K", "status": "normal"},
        {"invoice_id": "X8", "enterprise_id": "E0000001", "invoice_date": "2026-09-01",
         "direction": "sales", "amount": "10", "counterparty_id": "K", "status": "lost"},
    ],
    "tax_filings": [
        {"enterprise_id": "E0000001", "period_month": "2026-08-01", "filed_date": "yesterday",
         "taxable_sales": "1", "vat_paid": "1", "filed_late": "false", "si_headcount": "3"},
        {"enterprise_id": "E0000001", "period_month": "2026-08-01", "filed_date": "2026-09-10",
         "taxable_sales": "1", "vat_paid": "1", "filed_late": "maybe", "si_headcount": "3"},
    ],
    "registry_events": [
        {"event_id": "Q1", "enterprise_id": "E0000001", "event_date": "2026-09-01",
         "event_type": "merger", "amount": ""},
    ],
}


def test_malformed_records_land_in_rejected_records_and_the_rest_is_unchanged(
        scored, trained, small_feeds, tmp_path):
    warehouse, _ = scored
    registry, _, _ = trained
    feeds = tmp_path / "feeds"
    shutil.copytree(small_feeds, feeds)
    for feed, rows in MALFORMED.items():
        pacsv.write_csv(pa.Table.from_pylist(rows), str(feeds / feed / "malformed.csv"))
    bad_wh = tmp_path / "risk.duckdb"
    _score(feeds, registry, bad_wh)
    rejected = _table(bad_wh, "SELECT feed, reason FROM rejected_records")
    assert len(rejected) == 11 and rejected["reason"].nunique() >= 10
    assert "unknown enterprise_id" in set(rejected["reason"])
    clean = _table(warehouse, "SELECT enterprise_id, pd, score, grade FROM scores ORDER BY 1")
    dirty = _table(bad_wh, "SELECT enterprise_id, pd, score, grade FROM scores ORDER BY 1")
    pd.testing.assert_frame_equal(clean, dirty)


def test_too_many_rejects_fail_before_publishing_and_keep_the_previous_partition(
        scored, trained, small_feeds, tmp_path):
    warehouse, _ = scored
    registry, _, _ = trained
    wh = tmp_path / "risk.duckdb"
    shutil.copy(warehouse, wh)
    before = _table(wh, "SELECT * FROM scores ORDER BY enterprise_id")
    feeds = tmp_path / "feeds"
    shutil.copytree(small_feeds, feeds)
    pacsv.write_csv(pa.Table.from_pylist(MALFORMED["invoices"] * 50), str(feeds / "invoices" / "bad.csv"))
    with pytest.raises(GateBreached, match=r"gate rejected_share breached for invoices: .*"
                                           r"nothing published"):
        _score(feeds, registry, wh, "--max_rejected_share=0.0001")
    pd.testing.assert_frame_equal(before, _table(wh, "SELECT * FROM scores ORDER BY enterprise_id"))
    runs = _table(wh, "SELECT status, message FROM runs ORDER BY finished_at")
    assert runs["status"].iloc[-1] == "failed" and "rejected_share" in runs["message"].iloc[-1]


def test_run_summary_reports_the_published_portfolio(scored):
    from smescore import report
    warehouse, result = scored
    text = report.run_summary(str(warehouse), AS_OF)
    assert f"{result['firms']:,} firms scored" in text
    grades = _table(warehouse, "SELECT grade, COUNT(*) AS n FROM scores GROUP BY grade")
    for g, n in zip(grades["grade"], grades["n"]):
        assert re.search(rf"^\s*{g}\s+{n}\s", text, re.MULTILINE), (g, n)
    assert str(warehouse) in text


def test_a_model_trained_on_another_catalogue_is_refused_before_anything_runs(
        trained, small_feeds, tmp_path):
    registry, version, _ = trained
    stale = tmp_path / "registry"
    shutil.copytree(registry, stale)
    card_path = stale / "versions" / version / "model_card.json"
    card = json.loads(card_path.read_text())
    card["features"] = card["features"][:-3]                 # as if trained before 3 features
    card_path.write_text(json.dumps(card))
    with pytest.raises(score_portfolio.publish.RunFailed, match="another feature catalogue"):
        _score(small_feeds, stale, tmp_path / "risk.duckdb")

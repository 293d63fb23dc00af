"""Champion/challenger: a second real model version scores in shadow, the canary share gets its
score officially, the same firms on every re-run, and the comparison equals scipy's on the rows."""
import datetime as dt
import json
import os
import shutil

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from beam_jobs import champion_challenger, drift, score_portfolio
from models import score_rows
from models import registry as model_registry
from models.rules import load_rules_config
from models.scorecard import load_scorecard_config
from smescore.errors import BadInput
from transforms import catalog

AS_OF = dt.date(2026, 10, 31)


def test_canary_choice_is_a_fixed_share_of_ids():
    ids = [f"91{i:016d}" for i in range(200_000)]
    mask = champion_challenger.canary_mask(ids, 0.10)
    assert abs(mask.mean() - 0.10) < 0.003
    assert (champion_challenger.canary_mask(ids[::-1], 0.10)[::-1] == mask).all()   # per firm, not per order
    assert not champion_challenger.canary_mask(ids[:1000], 0.0).any()
    assert champion_challenger.canary_mask(ids[:1000], 1.0).all()
    # a 20% canary contains the 10% one: raising the share only adds firms
    assert (champion_challenger.canary_mask(ids, 0.20) | ~mask).all()


def test_spearman_from_counts_equals_scipy_with_ties():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 40, 5000)
    b = np.clip(a + rng.integers(-8, 9, 5000), 0, 49)
    joint = np.zeros((40, 50), np.int64)
    np.add.at(joint, (a, b), 1)
    assert champion_challenger.spearman_from_counts(joint) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)


def _run(feeds, reg, wh, *extra):
    return score_portfolio.run([f"--feeds={feeds}", f"--as_of={AS_OF}", f"--registry={reg}",
                                f"--warehouse={wh}", "--n_shards=4", *extra],
                               save_main_session=False, progress=lambda m: None)


def _dump(wh):
    with duckdb.connect(str(wh), read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetch_df()
                for t in ("scores", "scores_shadow", "challenger_comparison", "drift",
                          "attributions")}


@pytest.fixture(scope="module")
def shadow_run(registry_with_challenger, small_feeds, tmp_path_factory):
    reg, champion, challenger = registry_with_challenger
    wh = tmp_path_factory.mktemp("wh") / "risk.duckdb"
    result = _run(small_feeds, reg, wh)
    return result, _dump(wh), champion, challenger


def test_challenger_scores_every_model_firm_in_shadow(shadow_run):
    result, t, champion, challenger = shadow_run
    scores, sh = t["scores"], t["scores_shadow"]
    model = scores[scores.score_source == "model"]
    chall = sh[sh.model_version == challenger]
    assert result["challengers"] == [challenger]
    assert (chall.model_role == "challenger").all() and len(chall) == len(model)
    assert set(chall.enterprise_id) == set(model.enterprise_id)
    assert (chall.pd != chall.merge(model, on="enterprise_id").pd_y.to_numpy()).any()


def test_canary_firms_get_the_challengers_official_score(shadow_run):
    result, t, champion, challenger = shadow_run
    scores, sh = t["scores"], t["scores_shadow"]
    model = scores[scores.score_source == "model"]
    expected = champion_challenger.canary_mask(model.enterprise_id.tolist(), 0.10)
    canary = model[expected]
    assert (model.model_role == np.where(expected, "canary", "champion")).all()
    assert (canary.model_version == challenger).all()
    assert (model[~expected].model_version == champion).all()
    assert (scores[scores.score_source != "model"].model_role == "champion").all()
    assert result["firms_canary"] == len(canary) > 0
    # the canary's official score is the challenger's shadow score; the champion's is in shadow
    chall = sh[sh.model_role == "challenger"].set_index("enterprise_id")
    np.testing.assert_array_equal(canary.set_index("enterprise_id").pd,
                                  chall.loc[canary.enterprise_id].pd)
    champ_shadow = sh[sh.model_role == "champion"]
    assert sorted(champ_shadow.enterprise_id) == sorted(canary.enterprise_id)
    assert (champ_shadow.model_version == champion).all()
    # official attributions follow the official score
    attr = t["attributions"].groupby("enterprise_id").model_version.first()
    assert (attr.loc[canary.enterprise_id] == challenger).all()


def test_comparison_equals_scipy_and_pandas_on_the_published_rows(shadow_run):
    _, t, champion, challenger = shadow_run
    scores, sh, cmp_ = t["scores"], t["scores_shadow"], t["challenger_comparison"]
    champ = pd.concat([scores[(scores.score_source == "model") & (scores.model_role == "champion")],
                       sh[sh.model_role == "champion"]])
    pair = champ.merge(sh[sh.model_role == "challenger"], on="enterprise_id",
                       suffixes=("_a", "_b"))
    metrics = cmp_[cmp_.from_grade.isna()].set_index("metric").value
    assert (cmp_.champion_version == champion).all() and (cmp_.challenger_version == challenger).all()
    assert metrics["n_firms"] == len(pair)
    assert metrics["rank_correlation"] == pytest.approx(
        stats.spearmanr(pair.score_a, pair.score_b)[0], abs=1e-12)
    assert metrics["mean_score_change"] == pytest.approx((pair.score_b - pair.score_a).mean(), abs=1e-9)
    edges = [-np.inf, 350, 400, 450, 500, 550, 600, 650, 700, 750, 800, np.inf]

    def shares(s):
        return pd.cut(s.astype(float), edges, right=False).value_counts(sort=False).to_numpy() / len(s)
    assert metrics["psi"] == pytest.approx(drift.psi(shares(pair.score_a), shares(pair.score_b)),
                                           abs=1e-12)
    migration = cmp_[cmp_.metric == "grade_migration"]
    expected = pair.groupby(["grade_a", "grade_b"]).size()
    got = migration.set_index(["from_grade", "to_grade"]).value
    assert got.sort_index().to_dict() == {k: float(v) for k, v in expected.sort_index().items()}


def test_a_rerun_chooses_the_same_canary_and_writes_the_same_rows(shadow_run,
                                                                   registry_with_challenger,
                                                                   small_feeds, tmp_path):
    result, t, _, _ = shadow_run
    reg, _, _ = registry_with_challenger
    again = _run(small_feeds, reg, tmp_path / "again.duckdb")
    assert again["run_id"] == result["run_id"]
    for name, frame in _dump(tmp_path / "again.duckdb").items():
        pd.testing.assert_frame_equal(frame, t[name], check_exact=True, obj=name)


def test_canary_share_zero_keeps_every_official_score_with_the_champion(
        registry_with_challenger, small_feeds, tmp_path):
    reg, champion, challenger = registry_with_challenger
    result = _run(small_feeds, reg, tmp_path / "r.duckdb", "--canary_share=0")
    t = _dump(tmp_path / "r.duckdb")
    assert result["firms_canary"] == 0 and set(t["scores"].model_version) == {champion}
    assert set(t["scores_shadow"].model_version) == {challenger}


def test_canary_share_is_validated(trained, small_feeds, tmp_path):
    reg, _, _ = trained
    with pytest.raises(ValueError, match="--canary_share must be in"):
        _run(small_feeds, reg, tmp_path / "x.duckdb", "--canary_share=1.5")


def test_each_version_states_its_reasons_beside_its_own_training_sample(registry_with_challenger):
    reg, champion, challenger = registry_with_challenger
    cards = {v: model_registry.Registry(reg).model_card(v) for v in (champion, challenger)}
    scorecard = load_scorecard_config(None)
    scoring = score_rows.Scoring(scorecard.scale, scorecard.master_scale,
                                 load_rules_config(None, scorecard.scale).rules, champion, "run",
                                 score_rows.typical_firms(cards))
    scoring_as = champion_challenger.scoring_as
    assert scoring.typical.version == champion
    assert scoring_as(scoring, challenger).typical.version == challenger   # the canary's reasons
    assert scoring_as(scoring, challenger).typical.values == {
        f.name: cards[challenger]["training_distribution"][f.name]["mode" if f.is_categorical else "median"]
        for f in catalog.FEATURES}
    with pytest.raises(ValueError, match="no typical firm for model v0"):
        scoring_as(scoring, "v0").typical


def test_a_challenger_card_without_a_training_distribution_stops_the_run(
        registry_with_challenger, small_feeds, tmp_path):
    src, _, challenger = registry_with_challenger
    reg = str(tmp_path / "registry")
    shutil.copytree(src, reg)
    card_path = os.path.join(reg, "versions", challenger, "model_card.json")
    with open(card_path) as f:
        card = json.load(f)
    del card["training_distribution"]
    with open(card_path, "w") as f:
        json.dump(card, f)
    with pytest.raises(BadInput, match=f"model {challenger}: its model card has no training_distribution"):
        _run(small_feeds, reg, tmp_path / "x.duckdb")

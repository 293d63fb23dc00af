"""The Python API as a notebook would use it: records or a DataFrame of features in, the nightly
job's `scores` and `attributions` rows out, equal to what the nightly run published."""
import datetime as dt
import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_jobs import score_portfolio
from smescore import api
from smescore.errors import BadInput
from transforms import feeds

AS_OF = dt.date(2026, 10, 31)


@pytest.fixture(scope="module")
def nightly(small_feeds, trained, tmp_path_factory):
    """The nightly job's published scores and attributions of the fixture book."""
    registry, version, _ = trained
    warehouse = tmp_path_factory.mktemp("api-wh") / "risk.duckdb"
    score_portfolio.run([f"--feeds={small_feeds}", f"--as_of={AS_OF}", f"--registry={registry}",
                         f"--warehouse={warehouse}", "--n_shards=4"],
                        save_main_session=False, progress=lambda m: None)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {"scores": con.execute("SELECT * EXCLUDE (run_id) FROM scores ORDER BY ALL").fetch_arrow_table(),
                "attributions": con.execute("SELECT * FROM attributions ORDER BY ALL").fetch_arrow_table()} | {
            "run_id": con.execute("SELECT DISTINCT run_id FROM scores").fetchall()}


@pytest.fixture(scope="module")
def records(small_feeds):
    return {feed: pq.read_table(os.path.join(small_feeds, feed)) for feed in feeds.FEEDS}


def _published(table: pa.Table) -> pa.Table:
    """The API's rows as DuckDB returns the published ones (run_id aside), in the same order."""
    with duckdb.connect() as con:
        con.register("t", table.drop(["run_id"]) if "run_id" in table.column_names else table)
        return con.execute("SELECT * FROM t ORDER BY ALL").fetch_arrow_table()


def test_records_in_nightly_rows_out_to_the_last_digit(nightly, records, trained):
    registry, version, _ = trained
    model = api.load_model(registry)
    assert model.version == version
    features, rejected = api.compute_features(records, AS_OF)
    assert rejected == []
    scored = api.score(model, features)
    assert scored.scores.column_names == nightly["scores"].column_names + ["run_id"]
    assert set(scored.scores.column("run_id").to_pylist()) == {"api"}
    for name in ("scores", "attributions"):
        got = _published(getattr(scored, name))
        assert got.num_rows == nightly[name].num_rows > 1000
        assert got.schema == nightly[name].schema
        # every value to its last digit (repr: the shortest exact form, NaN equal to NaN)
        assert repr(got.to_pylist()) == repr(nightly[name].to_pylist()), name
    assert {"model", "rules"} <= set(scored.scores.column("score_source").to_pylist())


def test_a_dataframe_of_features_scores_the_same(nightly, records, trained):
    """The notebook case: a pandas DataFrame of raw feature values, no label column."""
    registry, version, _ = trained
    model = api.load_model(registry, version, run_id=nightly["run_id"][0][0])
    frame = api.compute_features(records, AS_OF).features.to_pandas().drop(
        columns="label_default_12m")
    scored = api.score(model, frame)
    assert set(scored.scores.column("run_id").to_pylist()) == {nightly["run_id"][0][0]}
    assert repr(_published(scored.scores).to_pylist()) == repr(nightly["scores"].to_pylist())
    one = scored.scores.filter(pc.equal(scored.scores.column("score_source"), "model")).slice(0, 1)
    row = one.to_pylist()[0]
    points = scored.attributions.filter(pc.equal(scored.attributions.column("enterprise_id"),
                                                 row["enterprise_id"]))
    # base points + the features' points = the unclamped score (PDO scale, DESIGN of the scores)
    assert row["base_points"] + pc.sum(points.column("points")).as_py() == pytest.approx(
        model.scoring.scale.score_from_logit(np.log(row["pd"] / (1 - row["pd"]))), abs=1.0)
    assert 1 <= len(row["reasons"]) <= 4


def test_bad_records_are_rejected_with_a_reason_and_the_rest_scored(records, trained):
    registry, _, _ = trained
    invoices = records["invoices"].slice(0, 5).to_pandas()
    invoices.loc[0, "amount"] = -1.0
    invoices.loc[1, "enterprise_id"] = "E-nobody"
    few = {feed: (invoices if feed == "invoices" else t.slice(0, 0))
           for feed, t in records.items()}
    few["enterprises"] = records["enterprises"]
    features, rejected = api.compute_features(few, AS_OF)
    reasons = sorted(r["reason"] for r in rejected)
    assert len(reasons) == 2 and reasons[1] == "unknown enterprise_id"
    assert "amount" in reasons[0] and "negative" in reasons[0]
    scored = api.score(api.load_model(registry), features)
    assert scored.scores.num_rows == features.num_rows > 0


def test_refusals_name_what_is_wrong(records, trained, tmp_path):
    registry, _, _ = trained
    with pytest.raises(BadInput, match="unknown model version 'v0'"):
        api.load_model(registry, "v0")
    with pytest.raises(ValueError, match=r"records of feeds \['loans'\] are missing"):
        api.compute_features({f: t for f, t in records.items() if f != "loans"}, AS_OF)
    with pytest.raises(BadInput, match=r"the features lack columns \['months_history'\]"):
        api.score(api.load_model(registry), api.compute_features(records, AS_OF).features
                  .drop(["months_history"]))

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
        read = {"scores": "SELECT * EXCLUDE (run_id) FROM scores ORDER BY ALL",
                "attributions": "SELECT * FROM attributions ORDER BY ALL",
                "run_id": "SELECT DISTINCT run_id FROM scores"}
        out = {name: con.execute(sql).fetch_arrow_table() for name, sql in read.items()}
    out["run_id"] = out["run_id"].column("run_id")[0].as_py()
    return out


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
    features = api.compute_features(records, AS_OF, n_shards=4)     # the nightly's --n_shards
    assert features.rejected == [] and len(features.shards) == 4
    scored = api.score(model, features)
    assert scored.scores.column_names == nightly["scores"].column_names + ["run_id"]
    assert set(scored.scores.column("run_id").to_pylist()) == {"api"}
    for name in ("scores", "attributions"):
        got = _published(getattr(scored, name))
        assert got.num_rows == nightly[name].num_rows > 1000
        assert got.schema == nightly[name].schema
        # every value to its last digit (repr: the shortest exact form)
        assert repr(got.to_pylist()) == repr(nightly[name].to_pylist()), name
    assert {"model", "rules"} <= set(scored.scores.column("score_source").to_pylist())


def test_a_dataframe_of_features_scores_the_same(nightly, records, trained):
    """The notebook case: a pandas DataFrame of raw feature values, no label column. Scored in
    one model call it gets the same scores, grades and reasons, and PDs and points within the
    float32 rounding of another batch; cut as the nightly's shards, the same rows to the digit."""
    registry, version, _ = trained
    model = api.load_model(registry, version, run_id=nightly["run_id"])
    features = api.compute_features(records, AS_OF, n_shards=4)
    frame = features.features.to_pandas().drop(columns="label_default_12m")
    whole = api.score(model, frame)
    assert set(whole.scores.column("run_id").to_pylist()) == {nightly["run_id"]}
    got, want = _published(whole.scores).to_pandas(), nightly["scores"].to_pandas()
    assert (got[["enterprise_id", "score_source", "score", "grade"]]
            .equals(want[["enterprise_id", "score_source", "score", "grade"]]))
    assert got["reasons"].map(repr).equals(want["reasons"].map(repr))
    assert np.nanmax(np.abs(got["pd"] - want["pd"])) < 1e-6
    points = _published(whole.attributions).to_pandas()["points"]
    assert np.max(np.abs(points - nightly["attributions"].to_pandas()["points"])) < 1e-3
    by_shard = api.score(model, [t.to_pandas() for t in features.shards])
    assert repr(_published(by_shard.attributions).to_pylist()) == repr(
        nightly["attributions"].to_pylist())
    row = whole.scores.filter(pc.equal(whole.scores.column("score_source"), "model")).to_pylist()[0]
    firm = whole.attributions.filter(pc.equal(whole.attributions.column("enterprise_id"),
                                              row["enterprise_id"]))
    # base points + the features' points = the unclamped score (the PDO scale)
    assert row["base_points"] + pc.sum(firm.column("points")).as_py() == pytest.approx(
        model.scoring.scale.score_from_logit(np.log(row["pd"] / (1 - row["pd"]))), abs=1.0)
    assert 1 <= len(row["reasons"]) <= 4


def test_a_few_firms_read_against_their_book_get_the_books_features(records):
    """One controller group scored alone: its changes read against the whole book's medians
    (`book_medians_of`) equal the book's own rows; read against the group itself they do not
    (every change would be its gap to two or three firms)."""
    book = api.compute_features(records, AS_OF).features
    ent = records["enterprises"].to_pandas()
    controller = ent["controller_id"].value_counts().index[0]         # the largest group
    firms = set(ent.loc[ent["controller_id"] == controller, "enterprise_id"])
    few = {feed: t.filter(pc.is_in(t.column("enterprise_id"), value_set=pa.array(sorted(firms))))
           for feed, t in records.items()}
    alone = api.compute_features(few, AS_OF, n_shards=1,
                                 book_medians=api.book_medians_of(records, AS_OF)).features
    mine = book.filter(pc.is_in(book.column("enterprise_id"), value_set=pa.array(sorted(firms))))
    assert alone.num_rows == mine.num_rows == len(firms) >= 2
    assert repr(alone.to_pylist()) == repr(mine.to_pylist())
    unanchored = api.compute_features(few, AS_OF, n_shards=1).features
    assert (unanchored.column("inv_sales_chg_3m").to_pylist()
            != mine.column("inv_sales_chg_3m").to_pylist())


def test_bad_records_are_rejected_with_a_reason_and_the_rest_scored(records, trained):
    registry, _, _ = trained
    invoices = records["invoices"].slice(0, 5).to_pandas()
    invoices.loc[0, "amount"] = -1.0
    invoices.loc[1, "enterprise_id"] = "E-nobody"
    few = {feed: (invoices if feed == "invoices" else t.slice(0, 0))
           for feed, t in records.items()}
    few["enterprises"] = records["enterprises"]
    features, rejected, _ = api.compute_features(few, AS_OF)
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

"""The nightly job's composites (beam_jobs/stages.py) on TestPipeline, with a model handler of the
test's own: a real ModelHandler whose "model" is a known function, so no trained model is needed
and every output can be worked out beside the pipeline."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from beam_jobs import champion_challenger as cc
from beam_jobs import drift, sorted_runs, stages
from models import baseline, eligibility, score_rows
from models.rules import load_rules_config
from models.scorecard import load_scorecard_config
from smescore import tables
from transforms import catalog, featurize

AS_OF = dt.date(2026, 10, 31)
DRIVER = "inv_sales_chg_3m"            # the one feature the known function reads
OFFSETS = {"v-champion": -3.4, "v-challenger": -3.0}
FAILING_FIRM = "E0013"


def model_outputs(table: pa.Table, offset: float) -> pa.Table:
    """The columns signature.with_model_outputs appends, from logit = offset + tanh(driver):
    expected_logit is the offset and the driver's attribution is all the rest."""
    x = pc.fill_null(table.column(DRIVER).cast(pa.float64()), 0.0).to_numpy()
    logit = offset + np.tanh(x)
    phi = np.zeros((table.num_rows, len(catalog.NAMES)), np.float32)
    phi[:, catalog.NAMES.index(DRIVER)] = np.tanh(x)
    return (table.append_column("pd", pa.array(1 / (1 + np.exp(-logit))))
            .append_column("logit", pa.array(logit))
            .append_column("expected_logit", pa.array(np.full(table.num_rows, offset)))
            .append_column("phi", pa.FixedSizeListArray.from_arrays(
                pa.array(phi.reshape(-1)), phi.shape[1])))


class LoadedOffsets(dict):
    """version -> offset: the loaded "models"."""


class KnownFunctionHandler(ModelHandler[pa.Table, dict, dict]):
    """{version: outputs} per feature table, as ChampionChallengersHandler yields them; a table
    holding the `failing` firm fails (RunInference's dead-letter path)."""

    def __init__(self, failing: str | None = FAILING_FIRM):
        super().__init__()
        self.failing = failing

    def load_model(self) -> dict:
        return LoadedOffsets(OFFSETS)        # Beam's shared model cache keeps a weak reference

    def run_inference(self, batch, model, inference_args=None):
        for table in [batch] if isinstance(batch, pa.Table) else batch:
            if self.failing in table.column("enterprise_id").to_pylist():
                raise ValueError("a planted failure")
            yield {version: model_outputs(table, offset) for version, offset in model.items()}

    def should_skip_batching(self) -> bool:
        return True


def book(n: int = 60, seed: int = 3) -> pa.Table:
    """n firms' features: 4 in default, 8 with a short history, the rest for the model."""
    rng = np.random.default_rng(seed)
    cols = {"enterprise_id": [f"E{i:04d}" for i in range(n)], "as_of_date": [AS_OF] * n}
    for f in catalog.FEATURES:
        cols[f.name] = (rng.choice(["C", "F", "I"], n) if f.is_categorical else
                        np.where(rng.random(n) < 0.1, np.nan, rng.normal(0, 1, n)))
    cols["in_default"] = np.arange(n) < 4
    cols["months_history"] = np.where((np.arange(n) >= 4) & (np.arange(n) < 12), 3, 24)
    cols["label_default_12m"] = np.full(n, np.nan)
    return featurize.features_to_arrow(pd.DataFrame(cols))


def card_of(model_firms: pa.Table, offset: float, scale) -> dict:
    """A model card whose references are the model firms themselves, scored by the function."""
    out = model_outputs(model_firms, offset)
    frame = model_firms.to_pandas()
    phi = np.asarray(out.column("phi").combine_chunks().flatten(), np.float64).reshape(
        out.num_rows, -1)
    reference = baseline.training_baseline(
        frame, scale.score_from_logit(out.column("logit").to_numpy()),
        dict(zip(catalog.NAMES, np.abs(scale.points_from_phi(phi)).mean(axis=0))))
    return {"baseline": {**reference, "training_sample": reference},
            "training_distribution": baseline.training_distribution(frame)}


@pytest.fixture(scope="module")
def night():
    features = book()
    scorecard = load_scorecard_config(None)
    rules = load_rules_config(None, scorecard.scale)
    routes = eligibility.route(features)
    cards = {v: card_of(routes[eligibility.MODEL], off, scorecard.scale)
             for v, off in OFFSETS.items()}
    scoring = score_rows.Scoring(scorecard.scale, scorecard.master_scale, rules.rules,
                                 "v-champion", "run-1", score_rows.typical_firms(cards))
    return {"features": features, "routes": routes, "scoring": scoring, "cards": cards,
            "roles": cc.Roles("v-champion", ("v-challenger",), 0.0)}


def tables_equal(expected: pa.Table, keys):
    """assert_that matcher: the PCollection's tables, concatenated and sorted, equal `expected`."""
    def match(actual):
        got = pa.concat_tables(actual) if actual else expected.slice(0, 0)
        order = [(k, "ascending") for k in keys]
        got, want = (t.take(pc.sort_indices(t, order)) for t in (got, expected))
        if got.schema != want.schema or repr(got.to_pylist()) != repr(want.to_pylist()):
            differ = [c for c in want.column_names
                      if repr(got.column(c).to_pylist()) != repr(want.column(c).to_pylist())]
            raise BeamAssertException(f"{got.num_rows} rows, {want.num_rows} expected; columns "
                                      f"{differ} differ")   # repr: NaN equals NaN, every digit
    return match


def test_score_firms_routes_scores_and_dead_letters(night):
    s, routes = night["scoring"], night["routes"]
    model = routes[eligibility.MODEL]
    # the book arrives as two tables; the model firms of the one holding FAILING_FIRM fail
    parts = [night["features"].slice(0, 30), night["features"].slice(30, 30)]
    lost = set(parts[0].column("enterprise_id").to_pylist()) & set(
        model.column("enterprise_id").to_pylist())
    assert FAILING_FIRM in lost and len(lost) == 18
    kept = model.filter(pc.invert(pc.is_in(model.column("enterprise_id"), pa.array(sorted(lost)))))
    expected_model, expected_points = score_rows.model_rows(
        model_outputs(kept, OFFSETS["v-champion"]), s)
    expected = pa.concat_tables([expected_model, score_rows.rules_rows(routes[eligibility.RULES], s),
                                 score_rows.in_default_rows(routes[eligibility.IN_DEFAULT], s)])
    challenger = score_rows.model_rows(model_outputs(kept, OFFSETS["v-challenger"]),
                                       dataclasses.replace(s, model_version="v-challenger"),
                                       "challenger",
                                       with_attributions=False)[0]
    with TestPipeline() as p:
        firms = (p | beam.Create(parts).with_output_types(pa.Table)
                 | stages.ScoreFirms(KnownFunctionHandler(), night["roles"], s))
        assert_that(firms.scores | "AllScores" >> beam.Flatten(),
                    tables_equal(expected, ["enterprise_id"]), label="Scores")
        # The attributions come as the part files the scoring step wrote, each a sorted run
        parts = firms.attribution_parts | beam.Map(lambda path: pa.ipc.open_file(path).read_all())
        assert_that(parts | "SortedRuns" >> beam.Map(
                        lambda t: t.equals(t.sort_by([("enterprise_id", "ascending"),
                                                      ("feature", "ascending")]))),
                    equal_to([True]), label="EachSorted")   # the other table failed
        assert_that(parts, tables_equal(expected_points, ["enterprise_id", "feature"]),
                    label="Attributions")
        assert_that(firms.shadow_scores, tables_equal(challenger, ["enterprise_id"]),
                    label="Shadow")
        assert_that(firms.rejected | beam.Map(lambda r: (r["feed"], "a planted failure" in
                                                         r["reason"])),
                    equal_to([("scoring", True)] * len(lost)), label="DeadLetters")


def test_attribution_rows_in_key_order_are_the_same_rows_sorted_as_staged(night):
    """The scoring workers make the official attributions in the staged table's order, so that
    the part writer need not sort them: the same rows, bit for bit, as firm by firm in catalogue
    order, then sorted."""
    s = night["scoring"]
    model = night["routes"][eligibility.MODEL]
    shuffled = model.take(np.random.default_rng(2).permutation(model.num_rows))
    outputs = model_outputs(shuffled, OFFSETS["v-champion"])
    scores, by_firm = score_rows.model_rows(outputs, s)
    scores_keyed, keyed = score_rows.model_rows(outputs, s, key_order=True)
    keys = ["enterprise_id", "feature"]
    assert scores_keyed.equals(scores)
    assert by_firm.column("feature").to_pylist()[:len(catalog.NAMES)] == list(catalog.NAMES)
    assert not sorted_runs.in_order(by_firm, keys) and sorted_runs.in_order(keyed, keys)
    assert keyed.equals(by_firm.sort_by([(k, "ascending") for k in keys]))


def test_score_portfolio_measures_no_drift_on_its_own_reference_and_compares_challengers(night):
    s = night["scoring"]
    model = night["routes"][eligibility.MODEL]
    reference = drift.Reference.from_card(night["cards"]["v-champion"])

    def no_drift(actual):
        rows = [r for t in actual for r in t.to_pylist()]
        psi = {r["feature"]: r["value"] for r in rows if r["metric"] == "psi"}
        if set(psi) != {tables.SCORE_FEATURE, *catalog.NAMES}:
            raise BeamAssertException(f"psi rows for {sorted(psi)}")
        if max(abs(v) for v in psi.values()) > 1e-12:     # the book is its own reference
            raise BeamAssertException(f"psi {max(psi.values())} on an unchanged book")
        if any(r["status"] != "ok" for r in rows):
            raise BeamAssertException("a drift alert on an unchanged book")

    def comparison(actual):
        rows = {r["metric"]: r["value"] for t in actual for r in t.to_pylist()
                if r["metric"] != "grade_migration"}
        # the same function shifted: the same order of firms, but for ties of whole points
        if rows["n_firms"] != model.num_rows or not rows["rank_correlation"] > 0.99:
            raise BeamAssertException(f"comparison {rows}")

    with TestPipeline() as p:
        night_out = (p | beam.Create([night["features"]]).with_output_types(pa.Table)
                     | stages.ScorePortfolio(KnownFunctionHandler(failing=None), night["roles"],
                                             s, AS_OF,
                                             reference, drift.DriftConfig.load(None)))
        assert_that(night_out.drift, no_drift, label="Drift")
        assert_that(night_out.comparison, comparison, label="Comparison")
        assert_that(night_out.rejected, equal_to([]), label="NothingRejected")


def test_stage_risk_tables_writes_one_sorted_file_per_table(night, tmp_path):
    s, routes = night["scoring"], night["routes"]
    scores, points = score_rows.model_rows(model_outputs(routes[eligibility.MODEL], -3.4), s)
    rules = score_rows.rules_rows(routes[eligibility.RULES], s)
    rejected = [{"feed": "invoices", "record_json": "{}", "reason": "negative amount"},
                {"feed": "enterprises", "record_json": "{}", "reason": "duplicate"}]
    with TestPipeline() as p:
        backwards = scores.take(pa.array(np.arange(scores.num_rows)[::-1]))
        staged = {"scores": p | "Scores" >> beam.Create([rules, backwards]),
                  "attributions": p | "Points" >> beam.Create([points]),
                  "rejected": p | "Rejected" >> beam.Create(rejected)}
        _ = staged | stages.StageRiskTables(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["attributions.parquet", "rejected.parquet",
                                            "scores.parquet"]
    got = pq.read_table(tmp_path / "scores.parquet")
    assert got.column("enterprise_id").to_pylist() == sorted(
        scores.column("enterprise_id").to_pylist() + rules.column("enterprise_id").to_pylist())
    assert got.schema.equals(tables.arrow_schema("scores"))
    assert pq.read_table(tmp_path / "attributions.parquet").num_rows == points.num_rows
    assert pq.read_table(tmp_path / "rejected.parquet").column("feed").to_pylist() == [
        "enterprises", "invoices"]

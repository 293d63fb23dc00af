"""The nightly job's stages as named composites over the scoring core.

    features ── ScorePortfolio ──► ScoredPortfolio(scores, shadow_scores, attribution_parts,
                                                   drift, comparison, rejected)
       ScoreFirms: Route (models/eligibility.py) ─► RunInference[champion+challengers]
                   ─► official / shadow (champion_challenger.py), ColdStartRules, GradeD
       then Drift (drift.py) on the champion's outputs, CompareWithChampion per challenger
    {table: rows} ── StageRiskTables ──► one sorted Parquet file per table in the staging folder,
                     the portfolio summary from those files; on BigQuery, the per-firm tables
                     loaded by the workers (Parquet load jobs)

beam_jobs/score_portfolio.py composes them; bench/scoring_stage.py runs ScoreFirms and
StageRiskTables alone. Each takes its model handler from the caller, so the tests run them with a
small handler of their own (tests/test_stages.py).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.ml.inference.base import RunInference

from beam_jobs import champion_challenger as cc
from beam_jobs import drift, publish, risk_sinks, sinks
from models import eligibility, score_rows
from models.eligibility import IN_DEFAULT, MODEL, RULES
from smescore import tables
from transforms import arrow_coder  # noqa: F401  (the pa.Table coder of score_rows' outputs)
from transforms import shard_files
from transforms.process_pool import InWorkerProcesses, workers_for

# Each staged table's sort order (the staged files, and so the published rows, never depend on
# how the runner split the work).
SORT_KEYS = {"scores": ["enterprise_id"], "scores_shadow": ["model_version", "enterprise_id"],
             "attributions": ["enterprise_id", "feature"],
             "drift": ["metric", "feature", "segment"],
             "challenger_comparison": ["challenger_version", "metric", "from_grade", "to_grade"],
             "firm_segments": ["enterprise_id"]}


class RouteFirms(beam.DoFn):
    """Split a feature table by models/eligibility.py: firms in default (grade D), thin history
    (rules), the rest (model, the main output)."""

    def __init__(self, min_history_months: int):
        self.min_history = min_history_months

    def process(self, table):
        for tag, part in eligibility.route(table, self.min_history).items():
            yield part if tag == MODEL else beam.pvalue.TaggedOutput(tag, part)


def failed_batch_records(failure):
    """A batch RunInference could not score: every firm in it becomes a rejected record."""
    table, error = failure
    ids = table.column("enterprise_id").to_pylist()
    for firm in ids:
        yield {"feed": "scoring", "record_json": score_rows.firm_json(firm),
               "reason": f"inference failed: {type(error).__name__}: {error}"[:500]}


class FirmScores(NamedTuple):
    # Official `scores` rows: model (champion/canary), rules, D. Three PCollections, each staged
    # where it is made (StageRiskTables): on DirectRunner a Flatten of them would hold a night's
    # scores in memory (2.8 GB for a moment at 1M firms).
    scores: tuple[beam.PCollection, beam.PCollection, beam.PCollection]
    shadow_scores: beam.PCollection     # `scores_shadow` rows
    attribution_parts: beam.PCollection  # the official `attributions` rows, as the file names
                                         # of their parts (sinks.PartWriter)
    champion_outputs: beam.PCollection  # feature tables + the champion's pd, logit, phi
    pairs: beam.PCollection             # (challenger, its and the champion's scores and grades)
    rejected: beam.PCollection          # firms a model could not score (rejected-record dicts)


class ScoreFirms(beam.PTransform):
    """Feature tables -> FirmScores: route, score with every model version in one RunInference
    pass (`handler` yields {version: output table}), official and shadow rows, rules, grade D."""

    def __init__(self, handler, roles: cc.Roles, scoring: score_rows.Scoring,
                 min_history_months: int = eligibility.MIN_HISTORY_MONTHS):
        super().__init__()
        self.handler, self.roles, self.scoring = handler, roles, scoring
        self.min_history = min_history_months

    def expand(self, features) -> FirmScores:
        s, champion = self.scoring, self.roles.champion
        routed = features | "Route" >> beam.ParDo(RouteFirms(self.min_history)).with_output_types(
            pa.Table).with_outputs(RULES, IN_DEFAULT, main=MODEL)
        inferred, dead = (routed[MODEL] | f"RunInference[{'+'.join(self.versions)}]"
                          >> RunInference(self.handler).with_exception_handling())
        # Score rows and reasons in worker processes; the attributions are written there as
        # part files of the staged table, and only their names come back.
        parts = sinks.PartWriter(
            shard_files.folder_for(features.pipeline, "smescore-attributions-"),
            tables.arrow_schema("attributions"), tuple(SORT_KEYS["attributions"]))
        split = inferred | "ScoreAndExplain" >> beam.ParDo(InWorkerProcesses(
            cc.split_official_and_shadow, self.roles, s, parts,
            workers=workers_for(features.pipeline))
        ).with_output_types(tuple[pa.Table, str]).with_outputs(
            cc.SHADOW, cc.SHADOW_FAILED, cc.PAIRS, main=cc.OFFICIAL)
        official = split[cc.OFFICIAL]
        # pa.Table declared: an undeclared table would be pickled whole for Beam's byte counters
        model_scores = beam.Map(lambda st: st[0]).with_output_types(pa.Table)
        scores = (official | "ModelScores" >> model_scores,
                  routed[RULES] | "ColdStartRules" >> beam.Map(score_rows.rules_rows, s),
                  routed[IN_DEFAULT] | "GradeD" >> beam.Map(score_rows.in_default_rows, s))
        rejected = ((dead.failed_inferences | "DeadLetter" >> beam.FlatMap(failed_batch_records),
                     split[cc.SHADOW_FAILED]) | "Unscored" >> beam.Flatten())
        return FirmScores(scores, split[cc.SHADOW],
                          official | "Attributions" >> beam.Map(lambda st: st[1]),
                          inferred | "ChampionOutputs" >> beam.Map(
                              lambda out: out[champion]).with_output_types(pa.Table),
                          split[cc.PAIRS], rejected)

    @property
    def versions(self) -> tuple[str, ...]:
        return (self.roles.champion, *self.roles.challengers)


class ScoredPortfolio(NamedTuple):
    scores: tuple                      # `scores` tables, in FirmScores' three parts
    shadow_scores: beam.PCollection    # `scores_shadow` tables
    attribution_parts: beam.PCollection  # `attributions` part files (FirmScores')
    drift: beam.PCollection            # `drift` tables
    comparison: beam.PCollection       # `challenger_comparison` tables
    rejected: beam.PCollection         # rejected-record dicts of firms no model could score


class ScorePortfolio(beam.PTransform):
    """Feature tables -> ScoredPortfolio: ScoreFirms, the champion's drift against the model
    card's references and each challenger's comparison with the champion."""

    def __init__(self, handler, roles: cc.Roles, scoring: score_rows.Scoring, as_of,
                 drift_reference: drift.Reference, drift_config: drift.DriftConfig,
                 min_history_months: int = eligibility.MIN_HISTORY_MONTHS):
        super().__init__()
        self.firms = ScoreFirms(handler, roles, scoring, min_history_months)
        self.roles, self.scoring, self.as_of = roles, scoring, as_of
        self.drift_reference, self.drift_config = drift_reference, drift_config

    def expand(self, features) -> ScoredPortfolio:
        s, run_id = self.scoring, self.scoring.run_id
        firms = features | "ScoreFirms" >> self.firms
        drift_rows = (firms.champion_outputs
                      | "Drift" >> drift.MeasureDrift(self.drift_reference, s.scale,
                                                      self.drift_config, self.as_of,
                                                      self.roles.champion, run_id)
                      | "DriftTable" >> beam.Map(cc.rows_table, "drift"))
        comparison = (firms.pairs
                      | "CompareWithChampion" >> cc.CompareWithChampion(self.roles, s, self.as_of,
                                                                        run_id)
                      | "ComparisonTable" >> beam.Map(cc.rows_table, "challenger_comparison"))
        return ScoredPortfolio(firms.scores, firms.shadow_scores, firms.attribution_parts,
                               drift_rows, comparison, firms.rejected)


def _load(_rows_written, loader, name: str, path: str) -> dict:
    return loader(name, path)


class StageRiskTables(beam.PTransform):
    """{name: PCollection, or a tuple of them} -> one sorted Parquet file per name in `staging`
    (`<name>.parquet`), which the driver publishes after the pipeline
    (publish.RunContext.publish). Names: the risk tables of SORT_KEYS (tables, or the file names
    of parts already written: sinks.PartWriter), `rejected` (dicts) and `rows_in` (the feeds'
    coverage counts).

    `summary` (as_of_date, model_version): once `scores` and `firm_segments` are written, a worker
    computes `portfolio_summary` and `score_counts` from those files (publish.stage_summary), so
    the driver reads no per-firm rows. `loader` (risk_sinks.ParquetLoader, on BigQuery): the
    workers load the tables of risk_sinks.WORKER_LOADED from their files into the run's staging
    tables, and `prestaged.parquet` gets their row counts and load bytes."""

    def __init__(self, staging: str, summary: tuple | None = None, loader=None):
        super().__init__()
        self.staging, self.summary, self.loader = staging, summary, loader

    def path(self, name: str) -> str:
        return os.path.join(self.staging, f"{name}.parquet")

    def expand(self, staged: dict):
        first = next(iter(staged.values()))
        pipeline = (first[0] if isinstance(first, (tuple, list)) else first).pipeline
        written = {}
        for name, rows in sorted(staged.items()):
            if name == "rejected":
                rows | f"Stage[{name}]" >> sinks.WriteRejected(self.path(name))
            elif name == "rows_in":
                (rows | f"Collect[{name}]" >> beam.combiners.ToList()
                 | f"Stage[{name}]" >> beam.Map(publish.write_counts, self.path(name)))
            else:
                written[name] = rows | f"Stage[{name}]" >> sinks.WriteSortedParquet(
                    self.path(name), tables.arrow_schema(name), SORT_KEYS[name])
        if self.summary and {"scores", "firm_segments"} <= set(written):
            side = {k: beam.pvalue.AsSingleton(written[k]) for k in ("scores", "firm_segments")}
            written["portfolio_summary"] = (
                pipeline | "SummaryInputs" >> beam.Create([self.staging])
                | "Summarise" >> beam.Map(publish.stage_summary, *self.summary,
                                          scores_rows=side["scores"],
                                          segment_rows=side["firm_segments"]))
        if self.loader:
            loaded = [written[name] | f"Load[{name}]" >> beam.Map(
                          _load, self.loader, name, self.path(name))
                      for name in risk_sinks.WORKER_LOADED if name in written]
            (loaded | "AllLoaded" >> beam.Flatten()
             | "CollectLoaded" >> beam.combiners.ToList()
             | "Prestaged" >> beam.Map(risk_sinks.write_loaded, self.path("prestaged")))
        return beam.pvalue.PDone(pipeline)

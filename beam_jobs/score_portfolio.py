"""The nightly job: feeds as of D -> features -> champion model (or cold-start rules) -> scores,
grades, SHAP points and reasons -> risk tables; challengers in shadow (and the canary), drift
against the champion's training references (the book at the training date, the training sample).

`python -m beam_jobs.score_portfolio --feeds DIR --as_of D --registry DIR --warehouse FILE.duckdb
[--pushgateway HOST:PORT] [--report_dir DIR] [Beam flags]` (also `smescore score`). The warehouse
is checked and locked first (beam_jobs/preflight.py). The pipeline stages its outputs as Parquet;
the driver then publishes them into the warehouse in one transaction, after the publication gates
(beam_jobs/gates.py), so a bad night never replaces a good partition. Every attempt records its own
`runs` row; then (or after a failure) beam_jobs/monitor.py pushes the attempt's metrics and writes
the HTML run report.
"""
from __future__ import annotations

import json
import logging
import os
import sys

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from beam_jobs import (dataflow, drift, entry, gates, monitor, preflight, publish, risk_sinks,
                       score_rows, shadow, sinks)
from beam_jobs.inference import ChampionChallengersHandler
from beam_jobs.options import ScoreConfig, config
from beam_jobs.sources import feed_source
from smescore import retention, tables
from smescore.errors import BadInput, SmescoreError
from transforms import feeds as feed_contract
from transforms.beam_features import ComputeFeatures

MODEL, RULES, IN_DEFAULT = "model", "rules", "in_default"


class RouteFirms(beam.DoFn):
    """Split a feature table: firms in default (grade D), thin history (rules), the rest (model)."""

    def __init__(self, min_history_months: int):
        self.min_history = min_history_months

    def process(self, table):
        import pyarrow.compute as pc
        in_default = table.column("in_default").to_numpy(zero_copy_only=False)
        thin = pc.less(table.column("months_history"), self.min_history).to_numpy(
            zero_copy_only=False) & ~in_default
        model = ~in_default & ~thin
        for tag, mask in ((IN_DEFAULT, in_default), (RULES, thin)):
            if mask.any():
                yield beam.pvalue.TaggedOutput(tag, table.filter(mask))
        if model.any():
            yield table.filter(model)


def failed_batch_records(failure):
    """A batch RunInference could not score: every firm in it becomes a rejected record."""
    table, error = failure
    ids = table.column("enterprise_id").to_pylist()
    for firm in ids:
        yield {"feed": "scoring", "record_json": score_rows.firm_json(firm),
               "reason": f"inference failed: {type(error).__name__}: {error}"[:500]}


def build_pipeline(p, cfg: ScoreConfig, source, run_ctx: publish.RunContext, staging: str) -> None:
    scoring, roles = run_ctx.scoring, run_ctx.roles
    feeds = source.read(p)
    counts = [feeds[f] | f"Coverage[{f}]" >> gates.FeedCoverage(f, cfg.as_of)
              for f in feed_contract.FEEDS]
    features, rejected = feeds | "Features" >> ComputeFeatures([cfg.as_of], cfg.n_shards)
    routed = features | "Route" >> beam.ParDo(RouteFirms(cfg.min_history_months)).with_outputs(
        RULES, IN_DEFAULT, main=MODEL)
    handler = ChampionChallengersHandler(run_ctx.model_paths, cfg.require_gpu)
    inferred, dead = (routed[MODEL] | f"RunInference[{'+'.join(run_ctx.model_paths)}]"
                      >> RunInference(handler).with_exception_handling())
    model_out = inferred | "ScoreAndExplain" >> beam.ParDo(
        shadow.SplitOfficialAndShadow(roles, scoring)).with_outputs(
        shadow.SHADOW, shadow.SHADOW_FAILED, shadow.PAIRS, main=shadow.OFFICIAL)
    official = model_out[shadow.OFFICIAL]
    scores = [official | "ModelScores" >> beam.Map(lambda st: st[0]),
              routed[RULES] | "ColdStartRules" >> beam.Map(score_rows.rules_rows, scoring),
              routed[IN_DEFAULT] | "GradeD" >> beam.Map(score_rows.in_default_rows, scoring)]
    attributions = official | "Attributions" >> beam.Map(lambda st: st[1])
    dead_rows = dead.failed_inferences | "DeadLetter" >> beam.FlatMap(failed_batch_records)
    drift_rows = (inferred | "ChampionOutputs" >> beam.Map(lambda out: out[roles.champion])
                  | "Drift" >> drift.MeasureDrift(run_ctx.drift_reference, scoring.scale,
                                                  run_ctx.drift_config, cfg.as_of,
                                                  roles.champion, scoring.run_id))
    comparison = model_out[shadow.PAIRS] | "CompareWithChampion" >> shadow.CompareWithChampion(
        roles, scoring, cfg.as_of, scoring.run_id)

    def stage(name):
        return os.path.join(staging, f"{name}.parquet")

    (scores | "AllScores" >> beam.Flatten() | "StageScores" >> sinks.WriteSortedParquet(
        stage("scores"), tables.arrow_schema("scores"), ["enterprise_id"]))
    model_out[shadow.SHADOW] | "StageShadowScores" >> sinks.WriteSortedParquet(
        stage("scores_shadow"), tables.arrow_schema("scores_shadow"),
        ["model_version", "enterprise_id"])
    if cfg.sink == "bigquery":   # ~100 rows a firm: the workers load them, never the driver
        (attributions | "StageAttributions" >> risk_sinks.StageToBigQuery(
            risk_sinks.risk_sink(cfg), "attributions", cfg.as_of, scoring.run_id,
            [roles.champion, *roles.challengers])
         | "StageAttributionRows" >> beam.Map(publish.write_prestaged, "attributions",
                                              stage("prestaged")))
    else:
        attributions | "StageAttributions" >> sinks.WriteSortedParquet(
            stage("attributions"), tables.arrow_schema("attributions"),
            ["enterprise_id", "feature"])
    (drift_rows | "DriftTable" >> beam.Map(shadow.rows_table, "drift")
     | "StageDrift" >> sinks.WriteSortedParquet(stage("drift"), tables.arrow_schema("drift"),
                                                ["metric", "feature", "segment"]))
    (comparison | "ComparisonTable" >> beam.Map(shadow.rows_table, "challenger_comparison")
     | "StageComparison" >> sinks.WriteSortedParquet(
         stage("challenger_comparison"), tables.arrow_schema("challenger_comparison"),
         ["challenger_version", "metric", "from_grade", "to_grade"]))
    ((rejected, dead_rows, model_out[shadow.SHADOW_FAILED]) | "AllRejected" >> beam.Flatten()
     | "StageRejected" >> sinks.WriteRejected(stage("rejected")))
    (counts | "AllCounts" >> beam.Flatten() | "CollectCounts" >> beam.combiners.ToList()
     | "StageCounts" >> beam.Map(publish.write_counts, stage("rows_in")))
    (features | "Firmographics" >> beam.Map(publish.segments_of)
     | "StageSegments" >> sinks.WriteSortedParquet(stage("segments"), publish.SEGMENT_SCHEMA,
                                                   ["enterprise_id"]))


def parse(argv=None, save_main_session=True):
    options = PipelineOptions(entry.job_argv(argv, "score_portfolio"))
    options.view_as(SetupOptions).save_main_session = save_main_session
    dataflow.check_runner(options)
    return options, config(ScoreConfig, options)


def start(options, cfg, progress=print, started_at=None):
    """Everything decided before the pipeline exists: source and run context.
    A Dataflow dry run touches no service: it neither checks nor stages the feeds."""
    source = feed_source(cfg)
    if dataflow.is_dry_run(options):
        return source, publish.RunContext.start(cfg, progress, "dry-run", dry_run=True)
    try:
        source.check()
        return source, publish.RunContext.start(cfg, progress, source.fingerprint(),
                                                started_at=started_at)
    except SmescoreError:
        raise
    except (FileNotFoundError, json.JSONDecodeError) as err:   # a feed or registry entry
        raise BadInput(f"cannot start the run of {cfg.as_of} (feeds {cfg.feeds}, registry "
                       f"{cfg.registry}): {type(err).__name__}: {str(err).splitlines()[0]}") \
            from None


def prepare(argv=None, save_main_session=True, progress=print):
    """(options, config, source, run context) of a run, without the warehouse lock."""
    options, cfg = parse(argv, save_main_session)
    return (options, cfg, *start(options, cfg, progress))


def build(options, cfg, source, run_ctx, staging: str) -> beam.Pipeline:
    """The nightly pipeline, built but not run (a Dataflow dry run turns it into a job offline)."""
    p = beam.Pipeline(options=options)
    build_pipeline(p, cfg, source, run_ctx, staging)
    return p


def run(argv=None, save_main_session=True, progress=print):
    """One attempt: the warehouse checked and locked first, then the run context, the pipeline,
    the gates and the publication. Every attempt that gets as far as a config leaves its own
    `runs` row and pushes its metrics, however early it fails."""
    options, cfg = parse(argv, save_main_session)
    if dataflow.is_dry_run(options):      # the Dataflow job is built offline; nothing runs
        source, run_ctx = start(options, cfg, progress)
        staging = dataflow.staging_folder(options, run_ctx.scoring.run_id)
        return dataflow.dry_run_summary(build(options, cfg, source, run_ctx, staging).run().job)
    started_at = publish._now()
    lock = None
    try:
        lock = preflight.warehouse_first(cfg, progress)
        source, run_ctx = start(options, cfg, progress, started_at)
    except BaseException as err:
        record = publish.record_unstarted(cfg, err, started_at, progress)
        monitor.attempt_failed(cfg, record, err, progress)
        if lock:
            lock.release()
        raise
    try:
        return _run_started(options, cfg, source, run_ctx)
    finally:
        if lock:
            lock.release()


def _run_started(options, cfg, source, run_ctx):
    staging = dataflow.staging_folder(options, run_ctx.scoring.run_id)
    prestaged = risk_sinks.prestaged_tables(cfg)
    try:
        source.check_files()      # an unreadable feed file: a failed run, recorded and pushed
        if prestaged:
            risk_sinks.risk_sink(cfg).create_staging(run_ctx.scoring.run_id, prestaged)
        build(options, cfg, source, run_ctx, staging).run().wait_until_finish()
        result = run_ctx.publish(staging)
    except BaseException as err:
        run_ctx.fail(err)
        monitor.run_failed(cfg, run_ctx, err)
        raise
    finally:
        dataflow.remove_staging(staging)
        source.cleanup()
        if prestaged:
            try:
                risk_sinks.risk_sink(cfg).drop_staging(run_ctx.scoring.run_id, prestaged)
            except Exception as err:  # noqa: BLE001 - they expire in a day; the run's error matters
                run_ctx.progress(f"[score] could not drop the staging tables {prestaged}: {err}")
    # Outside the try: the tables are published, so nothing monitoring or retention does can mark
    # the run failed.
    result["retention"] = retention.after_publish(
        cfg.warehouse if cfg.sink == "duckdb" else None, run_ctx.progress)
    return monitor.run_succeeded(cfg, run_ctx, result)


if __name__ == "__main__":
    from smescore import runtime
    sys.exit(entry.main("score_portfolio", lambda argv: run(argv, progress=runtime.progress),
                        doc=__doc__))

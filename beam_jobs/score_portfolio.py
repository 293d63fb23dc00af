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
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from beam_jobs import (dataflow, entry, gates, monitor, preflight, publish, risk_sinks,
                       stages)
from beam_jobs.inference import ChampionChallengersHandler
from beam_jobs.options import ScoreConfig, config
from beam_jobs.sources import feed_source
from smescore import retention, runtime
from smescore.errors import BadInput, SmescoreError
from transforms import feeds as feed_contract
from transforms.beam_features import ComputeFeatures


def build_pipeline(p, cfg: ScoreConfig, source, run_ctx: publish.RunContext, staging: str) -> None:
    """Feeds -> features -> ScorePortfolio -> StageRiskTables (beam_jobs/stages.py); the driver
    publishes the staged tables after the pipeline (publish.RunContext.publish)."""
    scoring, roles = run_ctx.scoring, run_ctx.roles
    feeds = source.read(p)
    counts = [feeds[f] | f"Coverage[{f}]" >> gates.FeedCoverage(f, cfg.as_of)
              for f in feed_contract.FEEDS]
    features, rejected = feeds | "Features" >> ComputeFeatures([cfg.as_of], cfg.n_shards)
    night = features | "ScorePortfolio" >> stages.ScorePortfolio(
        ChampionChallengersHandler(run_ctx.model_paths, cfg.require_gpu), roles, scoring,
        cfg.as_of, run_ctx.drift_reference, run_ctx.drift_config, cfg.min_history_months)
    versions = [roles.champion, *roles.challengers]
    loader = (risk_sinks.open_risk_tables(cfg).loader(cfg.as_of, scoring.run_id, versions)
              if cfg.sink == "bigquery" else None)
    staged = {"scores": night.scores, "scores_shadow": night.shadow_scores,
              "attributions": night.attribution_parts, "drift": night.drift,
              "challenger_comparison": night.comparison,
              "rejected": (rejected, night.rejected) | "AllRejected" >> beam.Flatten(),
              "rows_in": counts | "AllCounts" >> beam.Flatten(),
              "firm_segments": features | "Firmographics" >> beam.Map(
                  publish.firm_segments_of, cfg.as_of, scoring.run_id)}
    _ = staged | "StageRiskTables" >> stages.StageRiskTables(
        staging, (cfg.as_of, scoring.model_version), loader)


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
            risk_sinks.open_risk_tables(cfg).create_staging(run_ctx.scoring.run_id, prestaged)
        build(options, cfg, source, run_ctx, staging).run().wait_until_finish()
        run_ctx.progress(f"[score] pipeline finished; publishing {staging}")
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
                risk_sinks.open_risk_tables(cfg).drop_staging(run_ctx.scoring.run_id, prestaged)
            except Exception as err:  # noqa: BLE001 - they expire in a day; the run's error matters
                run_ctx.progress(f"[score] could not drop the staging tables {prestaged}: {err}")
    # Outside the try: the tables are published, so nothing monitoring or retention does can mark
    # the run failed.
    result["retention"] = retention.after_publish(
        cfg.warehouse if cfg.sink == "duckdb" else None, run_ctx.progress)
    return monitor.run_succeeded(cfg, run_ctx, result)


if __name__ == "__main__":
    sys.exit(entry.main("score_portfolio", lambda argv: run(argv, progress=runtime.progress),
                        doc=__doc__))

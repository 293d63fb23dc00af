"""`smescore backtest --as-of D`: the training-snapshot job as of D over the feeds, then the
figures of models/backtest.py, written into `performance` and `backtest_roc`."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile

import apache_beam as beam
import pandas as pd
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import training_snapshots
from beam_jobs.sources import LocalFilesSource
from models.backtest import BacktestError, check_outcomes_observed, evaluate, published_scores
from smescore.warehouse import reader


def source_of(feeds):
    """A feeds folder becomes its LocalFilesSource; a feed source is returned as it is."""
    return LocalFilesSource(feeds) if isinstance(feeds, (str, os.PathLike)) else feeds


def labelled_features(source, as_of: dt.date, n_shards: int, beam_args=()
                      ) -> tuple[pd.DataFrame, int]:
    """Features and 12-month label of every firm as of D (the training-snapshot job over the
    feeds `source` reads, through the outcome window), and how many records it rejected."""
    source.check()
    source.check_files()
    work = tempfile.mkdtemp(prefix="smescore-backtest-")
    try:
        source.stage()
        out = os.path.join(work, "features.parquet")
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
            training_snapshots.build_pipeline(p, source, [as_of], out, n_shards)
        rejected = pq.read_metadata(out[: -len(".parquet")] + ".rejected.parquet").num_rows
        return pq.read_table(out).to_pandas(), rejected
    finally:
        shutil.rmtree(work, ignore_errors=True)
        source.cleanup()


def run_backtest(as_of: dt.date, feeds, warehouse, registry: str | None = None,
                 n_shards: int = 16, beam_args=(), progress=print) -> dict:
    """`feeds`: a feeds folder or a feed source (beam_jobs.sources; a BigQuery one reads through
    the outcome window, outcome_end(as_of)); `warehouse`: a DuckDB file or a risk-table sink that
    reads too (a Warehouse, beam_jobs.risk_sinks.BigQueryRiskSink)."""
    wh, source = reader(warehouse), source_of(feeds)
    check_outcomes_observed(source, as_of)
    scores = published_scores(wh, as_of)
    if scores.empty:
        raise BacktestError(f"no model scores of {as_of} in {wh!r}: run `smescore score "
                            f"--as-of {as_of}` first")
    features, n_rejected = labelled_features(source, as_of, n_shards, beam_args)
    rows, summary = evaluate(as_of, scores, features, registry, progress)
    written = wh.replace_partitions(as_of, rows)
    head = ("as_of_date", "outcome_months", "cohort_firms", "cohort_defaults",
            "left_out_in_default_at_as_of")
    return {**{k: summary[k] for k in head}, "feed_records_rejected": n_rejected,
            "versions": summary["versions"], "not_scored": summary["not_scored"],
            "rows": written, "warehouse": getattr(wh, "path", repr(wh))}

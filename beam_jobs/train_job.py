"""`smescore train`: the training-snapshot job over the feeds, then the trainer (models/train.py).

The pipeline layer drives the core: this module reads the feeds through a feed source, the same
ones the nightly job reads (local files, or BigQuery with `--feeds-dataset`), builds the labelled
monthly snapshots with Beam, and hands the frame to `Trainer.train_on`, which knows nothing of
Beam.
"""
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
from beam_jobs.sources import BigQueryFeedSource, LocalFilesSource
from models.train import Trainer, TrainConfig, snapshot_dates, split_dates


def snapshots(trainer: Trainer, source, work: str) -> tuple[pd.DataFrame, dict]:
    """Labelled snapshots at every month-end with 12 months of history before and 12 months of
    outcomes after it, plus the training date itself (no labels yet: the drift reference);
    and the out-of-time split of those dates."""
    cfg = trainer.cfg
    first, last = source.loan_month_range()
    as_of = cfg.as_of or last
    dates = snapshot_dates(first, as_of)
    train_d, valid_d, test_d = split_dates(dates, cfg.valid_dates, cfg.test_dates)
    trainer.log(f"{len(dates)} monthly snapshots {dates[0]}..{dates[-1]} "
                f"(train {len(train_d)}, valid {len(valid_d)}, test {len(test_d)})")
    out = os.path.join(work, "snapshots.parquet")
    source.check()
    source.check_files()
    source.stage()
    with beam.Pipeline(options=PipelineOptions(list(cfg.beam_args))) as p:
        training_snapshots.build_pipeline(p, source, [*dates, as_of], out, cfg.n_shards)
    frame = pq.read_table(out).to_pandas()
    frame["as_of_date"] = pd.to_datetime(frame["as_of_date"]).dt.date
    n_rejected = pq.read_table(out[: -len(".parquet")] + ".rejected.parquet").num_rows
    trainer.log(f"snapshots: {len(frame):,} firm-dates, {n_rejected:,} feed records rejected")
    split = {"as_of": as_of, "train": train_d, "valid": valid_d, "test": test_d,
             "reference": as_of, "rejected_records": n_rejected}
    return frame, split


def bigquery_source(bq, as_of=None, conn=None) -> BigQueryFeedSource:
    """The feeds in BigQuery (beam_jobs/options.py BigQueryConfig) as of the training date, by
    default the loans table's last report month; the feed queries stage into the risk dataset
    under their own names (purpose 'training')."""
    if as_of is None:
        as_of = BigQueryFeedSource(bq, dt.date.max, conn).loan_month_range()[1]
    return BigQueryFeedSource(bq, as_of, conn, purpose="training")


def train(cfg: TrainConfig, progress=print, source=None) -> tuple[str, dict]:
    """One training run -> (published version, model card). `source`: a feed source
    (beam_jobs/sources.py); by default the local files in `cfg.feeds`."""
    trainer = Trainer(cfg, progress=progress)
    source = source if source is not None else LocalFilesSource(cfg.feeds)
    work = tempfile.mkdtemp(prefix="smescore-train-")
    try:
        frame, split = snapshots(trainer, source, work)
        return trainer.train_on(frame, split, oracle_feeds=getattr(source, "feeds_dir", None))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        source.cleanup()

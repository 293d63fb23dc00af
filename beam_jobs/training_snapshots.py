"""Labelled feature snapshots for training: the nightly ComputeFeatures at many as-of dates.

`python -m beam_jobs.training_snapshots --feeds DIR --as_of_dates 2025-01-31,2025-02-28 --out F`
(`smescore train` runs it for you).
"""
from __future__ import annotations

import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from beam_jobs import sinks
from beam_jobs.options import parse_date, require
from beam_jobs.sources import LocalFilesSource
from transforms.beam_features import FEATURE_SCHEMA, ComputeFeatures


class SnapshotOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--feeds", help="Feeds folder")
        parser.add_argument("--as_of_dates", help="Comma-separated month-end dates")
        parser.add_argument("--out", help="Snapshot table to write (.parquet)")
        parser.add_argument("--snapshot_shards", type=int, default=16)


def build_pipeline(p, source, as_of_dates, out: str, n_shards: int = 16) -> None:
    feeds = source.read(p)
    features, rejected = feeds | "Snapshots" >> ComputeFeatures(as_of_dates, n_shards,
                                                                with_labels=True)
    features | "WriteSnapshots" >> sinks.WriteSortedParquet(out, FEATURE_SCHEMA,
                                                            ["as_of_date", "enterprise_id"])
    rejected | "WriteRejected" >> sinks.WriteRejected(out[: -len(".parquet")] + ".rejected.parquet")


def run(argv=None, save_main_session=True):
    options = PipelineOptions(argv)
    options.view_as(SetupOptions).save_main_session = save_main_session
    o = options.view_as(SnapshotOptions)
    require(o, "feeds", "as_of_dates", "out")
    dates = [parse_date(d.strip(), "--as_of_dates") for d in o.as_of_dates.split(",")]
    source = LocalFilesSource(o.feeds)
    source.check()
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, source, dates, o.out, o.snapshot_shards)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run(sys.argv[1:])

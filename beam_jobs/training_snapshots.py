"""Labelled feature snapshots for training: the nightly ComputeFeatures at many as-of dates.

`python -m beam_jobs.training_snapshots --feeds DIR --as_of_dates 2025-01-31,2025-02-28 --out F`
(`smescore train` runs it for you).
"""
from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from beam_jobs import entry, sinks
from beam_jobs.options import SnapshotConfig, config
from beam_jobs.sources import LocalFilesSource
from transforms.beam_features import ComputeFeatures
from transforms.featurize import FEATURE_SCHEMA


def build_pipeline(p, source, as_of_dates, out: str, n_shards: int = 16) -> None:
    feeds = source.read(p)
    features, rejected = feeds | "Snapshots" >> ComputeFeatures(as_of_dates, n_shards,
                                                                with_labels=True)
    features | "WriteSnapshots" >> sinks.WriteSortedParquet(out, FEATURE_SCHEMA,
                                                            ["as_of_date", "enterprise_id"])
    rejected | "WriteRejected" >> sinks.WriteRejected(out[: -len(".parquet")] + ".rejected.parquet")


def run(argv=None, save_main_session=True):
    options = PipelineOptions(entry.job_argv(argv, "training_snapshots"))
    options.view_as(SetupOptions).save_main_session = save_main_session
    cfg = config(SnapshotConfig, options)
    source = LocalFilesSource(cfg.feeds)
    source.check()
    source.check_files()
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, source, cfg.as_of_dates, cfg.out, cfg.n_shards)


if __name__ == "__main__":
    sys.exit(entry.main("training_snapshots", run, doc=__doc__))

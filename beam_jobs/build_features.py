"""Per-firm feature table as of a date: `python -m beam_jobs.build_features --feeds DIR --as_of D
--out FILE.parquet [Beam flags]` (also `smescore features`). The nightly scoring job and the
training snapshots use the same ComputeFeatures transform."""
from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from beam_jobs import entry, sinks
from beam_jobs.options import FeaturesConfig, config
from beam_jobs.sources import LocalFilesSource
from transforms.beam_features import ComputeFeatures
from transforms.featurize import FEATURE_SCHEMA


def build_pipeline(p: beam.Pipeline, cfg: FeaturesConfig, source) -> None:
    feeds = source.read(p)
    features, rejected = feeds | "Features" >> ComputeFeatures([cfg.as_of], cfg.n_shards)
    features | "WriteFeatures" >> sinks.WriteSortedParquet(
        cfg.out, FEATURE_SCHEMA, ["as_of_date", "enterprise_id"])
    rejected | "WriteRejected" >> sinks.WriteRejected(cfg.rejected_out)


def run(argv=None, save_main_session=True):
    options = PipelineOptions(entry.job_argv(argv, "build_features"))
    options.view_as(SetupOptions).save_main_session = save_main_session
    cfg = config(FeaturesConfig, options)
    source = LocalFilesSource(cfg.feeds)
    source.check()
    source.check_files()
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, cfg, source)
    return cfg


def _result(argv) -> dict:
    cfg = run(argv)
    return {"features": cfg.out, "rejected_file": cfg.rejected_out}


if __name__ == "__main__":
    sys.exit(entry.main("build_features", _result, doc=__doc__))

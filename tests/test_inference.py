"""RunInference over feature tables: batches in, a dead-letter row per firm of a failing batch."""
import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import build_features
from beam_jobs.inference import FeatureTableModelHandler
from beam_jobs.stages import failed_batch_records
from models import registry as model_registry
from transforms import catalog


def _rows_and_width(table):
    return table.num_rows, len(table.column("phi")[0])


def test_each_element_is_a_batch_and_a_broken_batch_goes_to_the_dead_letter(
        trained, small_feeds, tmp_path):
    reg_dir, version, _ = trained
    out = tmp_path / "f.parquet"
    build_features.run([f"--feeds={small_feeds}", "--as_of=2026-09-30", f"--out={out}"],
                       save_main_session=False)
    good = pq.read_table(out).slice(0, 700)
    broken = good.slice(0, 3).drop(["inv_sales_chg_3m"])          # a feature column is missing
    handler = FeatureTableModelHandler(
        model_registry.Registry(reg_dir).saved_model_path(version), version)
    with TestPipeline() as p:
        scored, dead = (p | beam.Create([good, broken], reshuffle=False)
                        | RunInference(handler).with_exception_handling())
        assert_that(scored | beam.Map(_rows_and_width),
                    equal_to([(700, len(catalog.NAMES))]), label="OneScoredBatch")
        reasons = (dead.failed_inferences | beam.FlatMap(failed_batch_records)
                   | beam.Map(lambda r: r["reason"].split(":")[0]))
        assert_that(reasons, equal_to(["inference failed"] * 3), label="ThreeDeadLetters")

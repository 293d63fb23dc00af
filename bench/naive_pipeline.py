"""What the batched design saves: a naive row-at-a-time scoring pipeline against the nightly one.

    python -m bench.naive_pipeline [--firms 1000] [--max-batch-size 1] [Beam flags]

Both pipelines run on DirectRunner over the same `smescore features` Parquet (the firms routed to
the model), with the same champion model, and write the same sorted scores/attributions Parquet:

  naive:   one element = one firm (a dict) -> RunInference with a per-row handler whose batches
           are --max-batch-size rows (default 1): per row, the SavedModel's `serving_default`
           signature gives pd and logit; the TFT layer of the version's transform_fn + the
           network's input assembly give the row's transformed vector; shap.DeepExplainer on the
           Keras network `network.keras` (the card's calibration appended as Dense layers,
           as bench/bench_attributions.py does) with the version's background.parquet firms,
           transformed the same way, gives phi, summed back to business features
           -> score_rows.model_rows on a one-row table -> the same sinks.
  batched: bench/scoring_stage.py's Beam path (feature tables of what the nightly shards hold ->
           RunInference(FeatureTableModelHandler) with the in-graph DeepLIFT attributions).

Prints both wall times, the time ratio naive/batched, and max |Δpd|, max |Δphi| and how many
scores, grades and reason lists differ between the two outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from bench import _common  # noqa: F401  (sets the TF environment first)
from bench._common import (add_common_args, count_model_rows, ensure_features, ensure_feeds,
                           ensure_model, log, make_scoring, model_routed, nightly_batch_rows,
                           write_json)
from bench.scoring_stage import compare_outputs, run_beam, stage_model_outputs

from apache_beam.ml.inference.base import ModelHandler  # noqa: E402


class NaiveModel:
    """Everything the per-row handler needs, loaded once per worker."""

    def __init__(self, version_dir: str):
        import numpy as np
        import pyarrow.parquet as pq
        import shap
        import tensorflow as tf
        import tensorflow_transform as tft
        import tf_keras as keras

        from bench.bench_attributions import calibrated
        from models.calibration import LogitCalibration
        from models.signature import raw_inputs
        from models import export, network, registry
        from transforms import preprocessing

        with open(os.path.join(version_dir, registry.MODEL_CARD), encoding="utf-8") as fh:
            cal = json.load(fh)["calibration"]
        self.saved = tf.saved_model.load(os.path.join(version_dir, registry.SAVED_MODEL))
        self.serve = self.saved.signatures[export.SCORE_SIGNATURE]
        tft_output = tft.TFTransformOutput(os.path.join(version_dir, registry.TRANSFORM_FN))
        self.tft_layer = tft_output.transform_features_layer()
        self.columns = preprocessing.input_columns(tft_output)
        self.groups = network.column_groups(self.columns)
        background = pq.read_table(os.path.join(version_dir, registry.BACKGROUND))
        self.background_x = self.transform({k: tf.constant(v) for k, v in raw_inputs(background).items()})
        net = keras.models.load_model(os.path.join(version_dir, registry.NETWORK), compile=False)
        self.explainer = shap.DeepExplainer(
            calibrated(net, LogitCalibration.from_card(cal)), self.background_x)
        self.expected_logit = float(np.asarray(self.explainer.expected_value).reshape(-1)[0])

    def transform(self, raw) -> "np.ndarray":
        from models import network
        return network.assemble(self.tft_layer(raw), self.columns).numpy()


class PerRowHandler(ModelHandler):
    """Examples are single firms (dicts of feature values); every firm is scored and explained
    on its own, the way a first version of the job would call a model service and SHAP."""

    def __init__(self, version_dir: str, max_batch_size: int = 1):
        super().__init__()
        self.version_dir = version_dir
        self.max_batch_size = max_batch_size

    def load_model(self):
        return NaiveModel(self.version_dir)

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.max_batch_size}

    def run_inference(self, batch, model, inference_args=None):
        import numpy as np
        import pyarrow as pa
        import tensorflow as tf

        from models.signature import raw_inputs
        from models.explain import group_attributions
        from transforms import catalog, progress
        from transforms.featurize import FEATURE_SCHEMA

        position = {name: i for i, name in enumerate(catalog.NAMES)}
        for row in batch:
            table = pa.Table.from_pylist([row], schema=FEATURE_SCHEMA)
            raw = {k: tf.constant(v) for k, v in raw_inputs(table).items()}
            out = model.serve(**raw)
            x = model.transform(raw)
            phi_columns = np.asarray(model.explainer.shap_values(x))[..., 0].reshape(1, -1)
            names, grouped = group_attributions(phi_columns.astype(np.float64), model.groups)
            phi = np.zeros(len(catalog.NAMES))
            for name, value in zip(names, grouped[0]):
                phi[position[name]] = value
            progress.advance("firms scored[naive]", 1)
            yield dict(row, pd=float(out["pd"].numpy()[0]), logit=float(out["logit"].numpy()[0]),
                       expected_logit=model.expected_logit, phi=phi.astype(np.float32).tolist())

    def get_metrics_namespace(self) -> str:
        return "smescore_naive"


def one_row_table(result: dict):
    """A scored firm (dict) as the one-row table model_rows takes."""
    import numpy as np
    import pyarrow as pa

    from transforms.featurize import FEATURE_SCHEMA
    table = pa.Table.from_pylist([{k: result[k] for k in FEATURE_SCHEMA.names}], schema=FEATURE_SCHEMA)
    phi = np.asarray(result["phi"], np.float32)
    return (table.append_column("pd", pa.array([result["pd"]], pa.float64()))
            .append_column("logit", pa.array([result["logit"]], pa.float64()))
            .append_column("expected_logit", pa.array([result["expected_logit"]], pa.float64()))
            .append_column("phi", pa.FixedSizeListArray.from_arrays(pa.array(phi), len(phi))))


def read_rows(path: str):
    import pyarrow.parquet as pq
    yield from model_routed(pq.read_table(path)).to_pylist()


def run_naive(features_path, version_dir, scoring, out_dir, beam_args, max_batch_size=1) -> float:
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    from models import score_rows

    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        rows = (p | "FeaturesFile" >> beam.Create([features_path])
                | "ReadRows" >> beam.FlatMap(read_rows) | "OneFirmPerElement" >> beam.Reshuffle())
        scored, dead = rows | "RunInferencePerRow" >> RunInference(
            PerRowHandler(version_dir, max_batch_size)).with_exception_handling()
        _ = dead.failed_inferences | "FailLoudly" >> beam.Map(_raise_failed_row)
        model_out = (scored | "OneRowTable" >> beam.Map(one_row_table)
                     | "ScoreAndExplainRow" >> beam.Map(score_rows.model_rows, scoring))
        stage_model_outputs(model_out, out_dir)
    return time.perf_counter() - start


def _raise_failed_row(failure):
    rows, error = failure
    raise RuntimeError(f"per-row inference failed on {len(rows)} firm(s): {error}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--firms", type=int, default=1_000, help="firms in the scored portfolio")
    parser.add_argument("--max-batch-size", type=int, default=1,
                        help="rows per RunInference call in the naive pipeline (each still explained alone)")
    parser.add_argument("--batched-repeats", type=int, default=2, help="runs of the batched job; best counts")
    args, beam_args = parser.parse_known_args(argv)

    registry, version = ensure_model(args.work, args.registry, args.train_firms, args.seed)
    feeds = ensure_feeds(args.work, args.firms, args.months, args.seed)
    features = ensure_features(args.work, feeds, args.as_of)
    from models.registry import Registry
    reg = Registry(registry)
    scoring = make_scoring(reg, version)
    n_rows = count_model_rows(features)
    batch_rows = nightly_batch_rows(n_rows)
    out_root = os.path.join(args.work, "naive_pipeline")
    batched_dir, naive_dir = os.path.join(out_root, "batched"), os.path.join(out_root, "naive")

    print(f"naive vs batched: {args.firms:,} firms x {args.months} months, {n_rows:,} routed to the "
          f"model {version}; background {reg.model_card(version)['shap_background']['n_firms']} firms")
    batched = []
    for r in range(args.batched_repeats):
        log(f"[naive_pipeline] batched run {r + 1}/{args.batched_repeats}")
        batched.append(run_beam(features, batch_rows, reg.saved_model_path(version), scoring,
                                batched_dir, beam_args))
    log("[naive_pipeline] naive run (one firm per element, shap.DeepExplainer per row)")
    naive = run_naive(features, reg.version_dir(version), scoring, naive_dir, beam_args,
                      args.max_batch_size)
    diff = compare_outputs(naive_dir, batched_dir)
    best = min(batched)
    print(f"  batched (tables of {batch_rows} rows)  {best:8.2f} s  {n_rows / best:9,.0f} rows/s   "
          f"(runs: {', '.join(f'{t:.2f}' for t in batched)})")
    print(f"  naive (RunInference batches of {args.max_batch_size}, DeepExplainer per row) "
          f"{naive:8.2f} s  {n_rows / naive:9,.1f} rows/s")
    print(f"  time ratio naive/batched {naive / best:.1f}x")
    print(f"  outputs naive vs batched: max |Δpd| {diff.get('max_abs_dpd', float('nan')):.2e}, "
          f"max |Δphi| {diff.get('max_abs_dphi', float('nan')):.2e}, scores differ "
          f"{diff.get('scores_differ')}, grades differ {diff.get('grades_differ')}, reason lists "
          f"differ {diff.get('reasons_differ')} (of {diff.get('rows')} firms)")
    results = {"firms": args.firms, "model_rows": n_rows, "model_version": version,
               "batched_batch_rows": batch_rows, "batched_s": batched, "naive_s": naive,
               "naive_max_batch_size": args.max_batch_size, "ratio_naive_over_batched": naive / best,
               "outputs": diff}
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()

"""The one shared TensorFlow Transform graph: raw catalogue features in, model inputs out.

Training analyses this graph once, on the training split only; the exported SavedModel embeds it
(`TFTransformOutput.transform_features_layer()`), so training, evaluation and nightly scoring all
apply exactly the same arithmetic with exactly the same analysed constants.

Raw inputs (one row per firm and as-of date), declared by `transforms.catalog`:
- numeric features: float32 scalars, NaN (or +-inf) = missing;
- categorical features: strings, '' = missing.

Transformed outputs (names are a contract: the Keras model and the SHAP grouping read them):
- `{f}__z`       float32, numeric f: the catalogue treatment, then a z-score whose mean and
                 variance are analysed over PRESENT values only, then missing -> 0 (the mean).
                 This is the only place in the project where a missing value is imputed.
- `{f}__q`       float32, numeric f: the present value's position among QUANTILES analysed
                 quantiles of the training sample, interpolated linearly between them and mapped
                 to [-1, 1]; 0 where missing. Non-decreasing in the raw value like `__z`, but
                 evenly spread whatever the tails: a monotone network reads thresholds at small
                 counts (0 vs 1 lawsuit) as easily as at large amounts.
- `{f}__missing` float32, numeric f: 1.0 where the raw value was NaN/+-inf, else 0.0.
- `{f}__id`      int64, categorical f: vocabulary id. Missing ('' or null) has its own id, 0: the
                 reserved token MISSING_TOKEN heads every vocabulary whether or not training saw a
                 missing value. Seen categories follow by frequency, ties by value (descending).
                 A category never seen in training gets the single OOV id, V =
                 `vocabulary_size_by_name(...)` (which counts the reserved token); depth V + 1.
- `{f}__bucket`  int64, f in BUCKETIZED: quantile bucket of the present raw value in [0, n), and
                 n (= BUCKETIZED[f]) when missing; depth n + 1. For non-monotone effects (young
                 firms AND very old ones; very young AND very old legal representatives).
                 Boundaries are on the raw value (years), which reads better and is equivalent:
                 quantiles do not change under the monotone log treatment.

Treatments before the z-score:
- 'log':        log1p(max(x, 0)) (amounts, counts, kWh: heavy right tails, >= 0 by definition);
- 'signed_log': sign(x) * log1p(|x|);
- 'z':          x itself, except kinds listed in Z_CLIP_BY_KIND, clipped to fixed bounds.
  Why fixed bounds and only pct_change: a relative change has a tiny base now and then and can
  reach +100000%; one such firm inflates the variance and squashes every other firm's z to ~0.
  The catalogue defines these changes as floored at -100% and capped at +1000% (transforms.pit
  caps them there); the graph clips them to [-1, 1]: a doubling is already as telling as a
  tenfold rise, and the long right tail otherwise squashes the falls that carry the risk. Every other 'z' kind is bounded by its
  window (counts, months, days in a window, shares, a 12-month CV). Analysed-quantile
  winsorisation was rejected: at the 99.5th percentile it would flatten rare but telling counts
  (lawsuits, penalties, defaults of related firms) to zero, and it costs a second analysis pass.

Analysers never see a missing value: each numeric feature's present values are handed to
`tft.mean` / `tft.var` / `tft.bucketize` as a SparseTensor holding only those values.
A feature with no present value (or a single repeated value) in training has no usable variance;
its `__z` is then 0 everywhere rather than an unscaled number the network never saw.

Feeding data: the trainer passes Arrow RecordBatches with flat columns (float32 / string). TFXIO
wants each column as a list of length 1 per row; `to_tfxio_batch` wraps them (zero-copy for the
values) and `raw_tensor_adapter_config` describes the result, so TFT runs on its RecordBatch path
rather than the ~10x slower instance-dict path.
"""
from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform import schema_inference
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
from tfx_bsl.tfxio import tensor_adapter

from transforms import catalog

# Quantile buckets, in addition to `__z`, where risk is not monotone in the value. Only features
# without a declared risk direction: a free one-hot would break the network's monotonicity.
BUCKETIZED: dict[str, int] = {"ent_rep_age": 6}
# Fixed clipping bounds for 'z' features of these kinds (see the module docstring).
Z_CLIP_BY_KIND: dict[str, tuple[float, float]] = {"pct_change": (-1.0, 1.0)}
# Analysed quantiles behind every numeric feature's `__q` column.
QUANTILES = 20
# Missing categories map to this reserved token, which always holds vocabulary id 0.
MISSING_TOKEN = "__missing__"
NUM_OOV_BUCKETS = 1
SUFFIXES = ("z", "q", "missing", "id", "bucket")
NUMERIC_SUFFIXES = ("z", "q", "missing")
# Private passthrough column that lets analyze_and_transform return rows in input order.
_ROW_INDEX = "__row_index"


# ---------- names: the contract with the model builder and SHAP grouping ----------
def transformed_name(feature: str, suffix: str) -> str:
    """'{feature}__{suffix}', the name of one transformed column."""
    if suffix not in SUFFIXES:
        raise ValueError(f"suffix must be one of {SUFFIXES}, got {suffix!r}")
    return f"{feature}__{suffix}"


def business_feature(column: str) -> str:
    """The catalogue feature a transformed column came from (SHAP sums attributions by it)."""
    feature, sep, suffix = column.rpartition("__")
    if not sep or suffix not in SUFFIXES:
        raise ValueError(f"not a transformed column name: {column!r}")
    return feature


def vocab_filename(feature: str) -> str:
    """The vocabulary asset name of a categorical feature, for `vocabulary_size_by_name`."""
    return f"vocab_{feature}"


def _numeric(features: Sequence[catalog.Feature]) -> list[str]:
    return [f.name for f in features if not f.is_categorical]


def _categorical(features: Sequence[catalog.Feature]) -> list[str]:
    return [f.name for f in features if f.is_categorical]


def _bucketized(features: Sequence[catalog.Feature], bucketized: dict[str, int]) -> list[str]:
    """Bucketized features in catalogue order (never in dict order)."""
    return [f.name for f in features if f.name in bucketized]


def transformed_columns(features: Sequence[catalog.Feature] = catalog.FEATURES,
                        bucketized: dict[str, int] | None = None) -> list[str]:
    """Every output column of the graph, in model-input order (see `input_columns`)."""
    bucketized = BUCKETIZED if bucketized is None else bucketized
    return ([transformed_name(f, s) for f in _numeric(features) for s in NUMERIC_SUFFIXES]
            + [transformed_name(f, "id") for f in _categorical(features)]
            + [transformed_name(f, "bucket") for f in _bucketized(features, bucketized)])


TRANSFORMED_NUMERIC: list[str] = [
    transformed_name(f, s) for f in catalog.NUMERIC for s in NUMERIC_SUFFIXES]
TRANSFORMED_CATEGORICAL: list[str] = [transformed_name(f, "id") for f in catalog.CATEGORICAL]
TRANSFORMED_BUCKETS: list[str] = [
    transformed_name(f, "bucket") for f in _bucketized(catalog.FEATURES, BUCKETIZED)]
TRANSFORMED_COLUMNS: list[str] = TRANSFORMED_NUMERIC + TRANSFORMED_CATEGORICAL + TRANSFORMED_BUCKETS


def input_columns(tft_output: tft.TFTransformOutput,
                  features: Sequence[catalog.Feature] = catalog.FEATURES,
                  bucketized: dict[str, int] | None = None) -> list[tuple[str, str, int]]:
    """(column, business feature, one-hot depth) for every model input, in a fixed order.

    Order: for each numeric feature in catalogue order its `__z`, `__q`, `__missing` (depth 1);
    then each categorical `__id` (depth = vocabulary size incl. the reserved missing token, + OOV);
    then each `__bucket` (depth = buckets + 1 for missing). Depths come from the analysed
    artefacts, so a model built from them always matches the graph it was trained with.
    """
    bucketized = BUCKETIZED if bucketized is None else bucketized
    out = []
    for col in transformed_columns(features, bucketized):
        feature = business_feature(col)
        if col.endswith("__id"):
            depth = tft_output.vocabulary_size_by_name(vocab_filename(feature)) + NUM_OOV_BUCKETS
        elif col.endswith("__bucket"):
            depth = tft_output.num_buckets_for_transformed_feature(col)
        else:
            depth = 1
        out.append((col, feature, depth))
    return out


# ---------- the graph ----------
def _treat(feature: catalog.Feature, x: tf.Tensor) -> tf.Tensor:
    """The catalogue treatment before z-scoring (values at missing rows are ignored later)."""
    if feature.transform == "log":
        return tf.math.log1p(tf.maximum(x, 0.0))
    if feature.transform == "signed_log":
        return tf.sign(x) * tf.math.log1p(tf.abs(x))
    if feature.transform == "z":
        bounds = Z_CLIP_BY_KIND.get(feature.kind)
        return x if bounds is None else tf.clip_by_value(x, *bounds)
    raise ValueError(f"{feature.name}: no numeric treatment for transform {feature.transform!r}")


def _present_only(x: tf.Tensor, present: tf.Tensor) -> tf.SparseTensor:
    """The present values of `x` as a SparseTensor of the same shape, so analysers never see NaN."""
    indices = tf.where(present)
    values = tf.SparseTensor(indices, tf.gather_nd(x, indices), tf.shape(x, out_type=tf.int64))
    values.set_shape(x.shape)  # keep the static column count: per-column analysers need it
    return values


def _z_scores(treated: tf.Tensor, present: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(z, usable): column-wise (x - mean) / std over present values, 0 (the mean) where missing
    or where the column has no spread in training (usable False).

    All numeric features go through as one [batch, k] matrix: one mean and one variance analyser
    for the whole catalogue instead of two per feature, which keeps the Beam graph (and the time
    spent building it) small.
    """
    values = _present_only(treated, present)
    mean = tft.mean(values, reduce_instance_dims=False)
    var = tft.var(values, reduce_instance_dims=False)
    usable = tf.math.is_finite(mean) & tf.math.is_finite(var) & (var > 0.0)
    z = (treated - mean) * tf.math.rsqrt(tf.where(usable, var, tf.ones_like(var)))
    return tf.where(present & usable, z, tf.zeros_like(z)), usable


def _quantile_positions(raw: tf.Tensor, present: tf.Tensor, num_quantiles: int) -> tf.Tensor:
    """[-1, 1] per column: each present value's position among its column's analysed quantiles,
    interpolated linearly between them; 0 where missing.

    One quantiles analyser for the whole [batch, k] matrix: missing values enter as NaN, which
    the quantile sketch skips. A value equal to a run of tied quantiles (most firms have no
    lawsuit: every quantile is 0) sits at the middle of the run, so 0 and 1 lawsuits still land
    far apart; the position never decreases as the value grows."""
    # plus one row of zeros weighing next to nothing, so a feature training never saw still has
    # quantiles (all 0) instead of an empty sketch
    values = tf.concat([tf.where(present, raw, tf.fill(tf.shape(raw), float("nan"))),
                        tf.zeros_like(raw[:1])], axis=0)
    weights = tf.concat([tf.ones_like(raw[:, 0]), tf.constant([1e-9])], axis=0)
    boundaries = tft.quantiles(values, num_quantiles, epsilon=0.001, weights=weights,
                               reduce_instance_dims=False)
    return _positions(raw, present, tf.reshape(boundaries, [raw.shape[1], -1]))


def _positions(raw: tf.Tensor, present: tf.Tensor, boundaries: tf.Tensor) -> tf.Tensor:
    """The interpolation of `_quantile_positions` for analysed boundaries [k, m]."""
    m = tf.shape(boundaries)[1]
    values = tf.transpose(tf.where(present, raw, tf.zeros_like(raw)))          # [k, batch]
    left = tf.searchsorted(boundaries, values, side="left")
    right = tf.searchsorted(boundaries, values, side="right")
    lower = tf.gather(boundaries, tf.maximum(left - 1, 0), batch_dims=1)
    upper = tf.gather(boundaries, tf.minimum(left, m - 1), batch_dims=1)
    between = tf.clip_by_value(tf.math.divide_no_nan(values - lower, upper - lower), 0.0, 1.0)
    left_f, right_f, m_f = (tf.cast(t, tf.float32) for t in (left, right, m))
    inside = tf.where(left == 0, tf.zeros_like(left_f),
                      tf.where(left == m, m_f * tf.ones_like(left_f), left_f - 0.5 + between))
    rank = tf.where(left == right, inside, (left_f + right_f) / 2.0)
    position = tf.transpose(rank) / tf.maximum(m_f, 1.0) * 2.0 - 1.0
    return tf.where(present, position, tf.zeros_like(position))


def _bucket(x: tf.Tensor, present: tf.Tensor, num_buckets: int) -> tf.Tensor:
    """Quantile bucket of each present value in [0, num_buckets); num_buckets when missing."""
    buckets = tft.bucketize(_present_only(x, present), num_buckets)
    dense = tf.sparse.to_dense(buckets, default_value=tf.constant(num_buckets, tf.int64))
    # The missing id is ours, so declare the full range [0, n] in the transformed schema
    # (read back by TFTransformOutput.num_buckets_for_transformed_feature).
    schema_inference.set_tensor_schema_override(
        dense, tf.constant(0, tf.int64), tf.constant(num_buckets, tf.int64))
    return dense


def _category_id(name: str, x: tf.Tensor) -> tf.Tensor:
    """Vocabulary id: frequency then value order; missing = reserved id 0; unseen = OOV."""
    filled = tf.where(tf.equal(x, ""), tf.constant(MISSING_TOKEN), x)
    return tft.compute_and_apply_vocabulary(
        filled, num_oov_buckets=NUM_OOV_BUCKETS, vocab_filename=vocab_filename(name),
        reserved_tokens=[MISSING_TOKEN])


def _check_inputs(inputs: dict[str, tf.Tensor], features: Sequence[catalog.Feature]) -> None:
    absent = [f.name for f in features if f.name not in inputs]
    if absent:
        raise KeyError(f"preprocessing_fn inputs lack catalogue features: {absent}")


def _transform(inputs: dict[str, tf.Tensor], features: Sequence[catalog.Feature],
               bucketized: dict[str, int]) -> dict[str, tf.Tensor]:
    _check_inputs(inputs, features)
    numeric = [f for f in features if not f.is_categorical]
    outputs = {}
    if numeric:
        raw = tf.stack([inputs[f.name] for f in numeric], axis=1)
        present = tf.math.is_finite(raw)
        treated = tf.stack([_treat(f, inputs[f.name]) for f in numeric], axis=1)
        z, usable = _z_scores(treated, present)
        z = tf.unstack(z, axis=1)
        # a feature without spread in training has untrained weights: like __z, __q stays 0
        positions = _quantile_positions(raw, present, QUANTILES)
        q = tf.unstack(tf.where(usable, positions, tf.zeros_like(positions)), axis=1)
        missing = tf.unstack(1.0 - tf.cast(present, tf.float32), axis=1)
        for i, feature in enumerate(numeric):
            outputs[transformed_name(feature.name, "z")] = z[i]
            outputs[transformed_name(feature.name, "q")] = q[i]
            outputs[transformed_name(feature.name, "missing")] = missing[i]
            if feature.name in bucketized:
                outputs[transformed_name(feature.name, "bucket")] = _bucket(
                    raw[:, i], present[:, i], bucketized[feature.name])
    for feature in features:
        if feature.is_categorical:
            outputs[transformed_name(feature.name, "id")] = _category_id(
                feature.name, inputs[feature.name])
    return outputs


def make_preprocessing_fn(features: Sequence[catalog.Feature] = catalog.FEATURES,
                          bucketized: dict[str, int] | None = None):
    """A preprocessing_fn over a subset of the catalogue (tests use a handful of features).

    `bucketized` defaults to BUCKETIZED restricted to `features`.
    """
    features = tuple(features)
    names = {f.name for f in features}
    bucketized = {k: v for k, v in (BUCKETIZED if bucketized is None else bucketized).items()
                  if k in names}
    for name, n in bucketized.items():
        if catalog.BY_NAME[name].is_categorical or not isinstance(n, int) or n < 2:
            raise ValueError(f"bucketized[{name!r}] must be a numeric feature with int n >= 2, "
                             f"got {n!r} for a {catalog.BY_NAME[name].transform!r} feature")

    def fn(inputs):
        return _transform(inputs, features, bucketized)

    return fn


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The production graph: every catalogue feature, BUCKETIZED as declared."""
    return _transform(inputs, catalog.FEATURES, BUCKETIZED)


# ---------- raw input specs: tf.Example, flat Arrow, TFXIO Arrow ----------
def raw_feature_spec(features: Sequence[catalog.Feature] = catalog.FEATURES
                     ) -> dict[str, tf.io.FixedLenFeature]:
    """One scalar per row: float32 for numeric features, string for categorical ones."""
    return {f.name: tf.io.FixedLenFeature([], tf.string if f.is_categorical else tf.float32)
            for f in features}


def raw_arrow_schema(features: Sequence[catalog.Feature] = catalog.FEATURES) -> pa.Schema:
    """The flat schema the trainer and scorer produce: float32 (NaN = missing) / string."""
    return pa.schema([pa.field(f.name, pa.string() if f.is_categorical else pa.float32())
                      for f in features])


def tfxio_arrow_schema(features: Sequence[catalog.Feature] = catalog.FEATURES) -> pa.Schema:
    """The same columns as TFXIO wants them: a list of exactly one value per row."""
    return pa.schema([pa.field(f.name, pa.large_list(
        pa.large_binary() if f.is_categorical else pa.float32())) for f in features])


def _tensor_representations(features: Sequence[catalog.Feature]
                            ) -> dict[str, schema_pb2.TensorRepresentation]:
    """Each column -> a dense [batch] tensor (shape () per row, no default: never absent)."""
    return {f.name: schema_pb2.TensorRepresentation(
        dense_tensor=schema_pb2.TensorRepresentation.DenseTensor(
            column_name=f.name, shape=schema_pb2.FixedShape()))
        for f in features}


def raw_tensor_adapter_config(features: Sequence[catalog.Feature] = catalog.FEATURES
                              ) -> tensor_adapter.TensorAdapterConfig:
    """TFT's input metadata for batches made by `to_tfxio_batch`."""
    return tensor_adapter.TensorAdapterConfig(
        tfxio_arrow_schema(features), _tensor_representations(features))


def _numeric_column(batch: pa.RecordBatch, name: str) -> pa.Array:
    """float32 values; Arrow nulls become NaN, the project's one marker of 'missing'."""
    col = batch.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise ValueError(f"column {name!r} must be numeric (float32), got {col.type}")
    return pc.fill_null(pc.cast(col, pa.float32(), safe=False), float("nan"))


def _string_column(batch: pa.RecordBatch, name: str) -> pa.Array:
    """large_binary values; Arrow nulls become '', the marker of a missing category."""
    col = batch.column(name)
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            or pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        raise ValueError(f"column {name!r} must be a string column, got {col.type}")
    return pc.cast(pc.fill_null(col, ""), pa.large_binary())


def _check_columns(batch: pa.RecordBatch, names: Iterable[str]) -> None:
    absent = [n for n in names if n not in batch.schema.names]
    if absent:
        raise ValueError(f"batch lacks feature columns {absent} (has {len(batch.schema)} columns)")


def to_tfxio_batch(batch: pa.RecordBatch,
                   features: Sequence[catalog.Feature] = catalog.FEATURES) -> pa.RecordBatch:
    """A flat feature batch (see `raw_arrow_schema`) as TFXIO wants it; other columns dropped."""
    _check_columns(batch, [f.name for f in features])
    offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int64))
    values = [_string_column(batch, f.name) if f.is_categorical else _numeric_column(batch, f.name)
              for f in features]
    columns = [pa.LargeListArray.from_arrays(offsets, v) for v in values]
    return pa.RecordBatch.from_arrays(columns, schema=tfxio_arrow_schema(features))


# ---------- analysing (training split) and applying (eval / test splits) ----------
def _with_row_index(batch: pa.RecordBatch, start: int) -> pa.RecordBatch:
    """Append the passthrough row index (large_list<int64>, one per row)."""
    offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int64))
    rows = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))
    return batch.append_column(_ROW_INDEX, pa.LargeListArray.from_arrays(offsets, rows))


def _stage(batches: Sequence[pa.RecordBatch], directory: str) -> list[str]:
    """Write the input batches as Arrow IPC files for the pipeline to read.

    `beam.Create` over the batches themselves would pickle and bz2-compress every value into the
    pipeline proto: 18 of the 40 seconds of a 50,000-row run. Reading files keeps the graph small.
    """
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, batch in enumerate(batches):
        path = os.path.join(directory, f"train-{i:05d}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        paths.append(path)
    return paths


def _read_staged(path: str) -> list[pa.RecordBatch]:
    """The batches of one staged file, read into memory (no memory map outliving its file)."""
    with pa.OSFile(path, "rb") as source:
        reader = pa.ipc.open_file(source)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]


def _flat_output_schema(columns: Sequence[str]) -> pa.Schema:
    """Transformed columns as flat Parquet columns, plus the row index."""
    return pa.schema(
        [pa.field(c, pa.int64() if c.endswith(("__id", "__bucket")) else pa.float32())
         for c in columns] + [pa.field(_ROW_INDEX, pa.int64())])


def _flatten_transformed(transformed: tuple[pa.RecordBatch, dict], schema: pa.Schema) -> pa.Table:
    """TFT's output (one-value lists per row) -> a flat table in `schema`'s column order."""
    batch, _ = transformed
    return pa.Table.from_arrays(
        [batch.column(field.name).flatten().cast(field.type) for field in schema], schema=schema)


def _indexed_inputs(train_batches: Sequence[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """TFXIO batches with a running row index, so output rows can be put back in input order."""
    inputs, start = [], 0
    for batch in train_batches:
        inputs.append(_with_row_index(to_tfxio_batch(batch), start))
        start += batch.num_rows
    return inputs


def _read_transformed(prefix: str, schema: pa.Schema, num_rows: int) -> dict[str, np.ndarray]:
    """The Parquet shards written by the pipeline, sorted back into input order."""
    shards = sorted(glob.glob(prefix + "-*"))
    table = pa.concat_tables(pq.read_table(path, schema=schema) for path in shards)
    if table.num_rows != num_rows:
        raise RuntimeError(f"read {table.num_rows} transformed training rows from {len(shards)} "
                           f"shards under {prefix!r}, expected {num_rows}")
    table = table.sort_by(_ROW_INDEX)
    return {name: table.column(name).to_numpy() for name in schema.names if name != _ROW_INDEX}


def analyze_and_transform(train_batches: list[pa.RecordBatch], output_dir: str, temp_dir: str,
                          pipeline_options: PipelineOptions | None = None) -> dict[str, np.ndarray]:
    """Analyse the training split once and transform it, in one tft_beam pipeline (DirectRunner).

    Writes to `output_dir`: `transform_fn/` and `transformed_metadata/` (TFT publishes them through
    a temp folder and a rename), then `metadata/` with the raw input schema (so
    `TFTransformOutput.raw_feature_spec()` works). The transformed training rows go to Parquet
    under a fresh `temp_dir/analyze-*/` folder and come back as {column: numpy array} in
    TRANSFORMED_COLUMNS order, row i being row i of the concatenated `train_batches` (a passthrough
    row index restores the order Beam does not keep), so the trainer can line them up with labels.
    `temp_dir` must be a local folder the workers share (true of DirectRunner).
    """
    num_rows = sum(b.num_rows for b in train_batches)
    if num_rows == 0:
        raise ValueError(f"analyze_and_transform needs training rows, got {len(train_batches)} "
                         "batches with none")
    inputs = _indexed_inputs(train_batches)
    config = tensor_adapter.TensorAdapterConfig(
        inputs[0].schema, _tensor_representations(catalog.FEATURES))
    out_schema = _flat_output_schema(TRANSFORMED_COLUMNS)
    os.makedirs(temp_dir, exist_ok=True)
    run_dir = tempfile.mkdtemp(prefix="analyze-", dir=temp_dir)  # never read a past run's shards
    prefix = os.path.join(run_dir, "transformed_train")
    with beam.Pipeline(options=pipeline_options) as pipeline:
        with tft_beam.Context(temp_dir=temp_dir, passthrough_keys={_ROW_INDEX}):
            raw = (pipeline
                   | "ListTrain" >> beam.Create(_stage(inputs, os.path.join(run_dir, "raw")))
                   | "ReadTrain" >> beam.FlatMap(_read_staged))
            (transformed, _), transform_fn = (
                (raw, config) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
                    preprocessing_fn, output_record_batches=True))
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output_dir)
            _ = (transformed
                 | "Flatten" >> beam.Map(_flatten_transformed, out_schema)
                 | "WriteTransformed" >> beam.io.WriteToParquetBatched(prefix, out_schema))
    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata.from_feature_spec(raw_feature_spec()),
        os.path.join(output_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return _read_transformed(prefix, out_schema, num_rows)


def _to_raw_tensors(batch: pa.RecordBatch, raw_spec: dict[str, tf.io.FixedLenFeature]
                    ) -> dict[str, tf.Tensor]:
    """The raw dense [batch] tensors the transform layer takes, nulls normalised as in training."""
    _check_columns(batch, raw_spec)
    tensors = {}
    for name, spec in raw_spec.items():
        if spec.dtype == tf.string:
            values = _string_column(batch, name).to_numpy(zero_copy_only=False)
        else:
            values = _numeric_column(batch, name).to_numpy(zero_copy_only=False)
        tensors[name] = tf.constant(values, dtype=spec.dtype)
    return tensors


def transform_batches(tft_output: str | tft.TFTransformOutput,
                      batches: pa.RecordBatch | pa.Table | Iterable[pa.RecordBatch]
                      ) -> dict[str, np.ndarray]:
    """Apply the analysed graph to other splits, in memory, through the SavedModel's own layer.

    Uses `TFTransformOutput.transform_features_layer()` (what the exported model embeds), so eval
    and test rows see exactly what scoring will. Rows come back in input order. Pass the same
    TFTransformOutput for several splits: it loads its layer once (a few seconds each time).
    """
    if isinstance(batches, pa.Table):
        batches = batches.to_batches()
    elif isinstance(batches, pa.RecordBatch):
        batches = [batches]
    if isinstance(tft_output, str):
        tft_output = tft.TFTransformOutput(tft_output)
    layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        if batch.num_rows == 0:
            continue
        for name, value in layer(_to_raw_tensors(batch, raw_spec)).items():
            parts.setdefault(name, []).append(value.numpy())
    if not parts:
        raise ValueError("transform_batches got no rows")
    return {name: np.concatenate(values) for name, values in parts.items()}

"""The scoring SavedModel's interface, named once: its two signatures and the raw inputs they take.

models/export.py writes the signatures; the nightly model handler (beam_jobs/inference.py),
validation, backtests, the trainer's checks and the Python API call them through this module.
Inputs are the catalogue's features as raw values: float32 with NaN for a missing number,
strings with '' for a missing category.

TensorFlow is imported inside `with_model_outputs`, not at the top: Beam unpickles the nightly
handler (which imports this module) on every worker, and the worker sets TensorFlow's
environment (smescore/runtime.py) before TensorFlow loads.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from transforms import catalog

SCORE_SIGNATURE = "serving_default"          # pd, logit
EXPLAIN_SIGNATURE = "score_and_explain"      # pd, logit, expected_logit, phi (one per feature)


def numeric_values(column, dtype=np.float32) -> np.ndarray:
    """A numeric Arrow column as numpy, nulls as NaN. A float column takes Arrow's own conversion,
    which gives NaN for a null: 3 us a column against 55 for a fill_null and a cast, which one firm
    scored on demand pays for each of its ~100 features, in several places."""
    if not pa.types.is_floating(column.type):
        column = pc.fill_null(column.cast(pa.float64()), np.nan)
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def raw_inputs(table: pa.Table) -> dict[str, np.ndarray]:
    """Signature inputs from an Arrow feature table."""
    out = {}
    for f in catalog.FEATURES:
        col = table.column(f.name)
        if f.is_categorical:
            out[f.name] = np.asarray(pc.fill_null(col.cast(pa.string()), "").to_pylist(), dtype=object)
        else:
            out[f.name] = numeric_values(col, np.float32)
    return out


def frame_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Signature inputs from a pandas frame of features (the trainer's snapshots)."""
    out = {}
    for f in catalog.FEATURES:
        col = frame[f.name]
        if f.is_categorical:
            out[f.name] = col.fillna("").astype(str).to_numpy(object)
        else:
            out[f.name] = col.to_numpy(np.float32, na_value=np.nan)
    return out


# A firm's float32 PD must not depend on which firms share its batch (the scoring service scores
# a firm in a batch of one to a few hundred, the nightly job in a shard of thousands, and both
# must publish the same digits). Measured on CPU: rows are computed in blocks of 8, the rows left
# over at the end of a batch by another kernel; and below about 70 rows the matrix products take
# another path (one thread) than above. Either moved a PD by up to 6e-8. Padding every call to a
# whole number of blocks and to at least MIN_ROWS rows keeps every firm on the same path; the
# padding rows (copies of the last firm) are dropped from the outputs. Some CPUs do not honour
# that (an AMD EPYC host: 1-7 rows in 1,008 moved at batch sizes 128, 136, 152, 176...), so models
# exported since compute their logit in fixed chunks (models/explain.py DeepLiftExplainer.logit:
# no row moved there at any batch size or offset tried); the padding stays for older versions.
ROW_BLOCK = 8
MIN_ROWS = 128


def padded_inputs(table: pa.Table, min_rows: int = MIN_ROWS) -> dict[str, np.ndarray]:
    """raw_inputs with the last row repeated up to max(min_rows, whole ROW_BLOCKs) rows."""
    return _padded(raw_inputs(table), table.num_rows, min_rows)


def _padded(inputs: dict[str, np.ndarray], n: int, min_rows: int) -> dict[str, np.ndarray]:
    extra = _padding(n, min_rows)
    return {k: _repeat_last(v, extra) for k, v in inputs.items()} if extra else inputs


def _padding(n: int, min_rows: int) -> int:
    """Rows to add to n rows: up to min_rows and to whole ROW_BLOCKs (none to an empty batch)."""
    return max(min_rows - n, -n % ROW_BLOCK) if n else 0


def with_model_outputs(table: pa.Table, model) -> pa.Table:
    """The feature table with the loaded SavedModel's `pd`, `logit`, `expected_logit` and `phi`
    appended (one call of the explain signature, padded: see ROW_BLOCK)."""
    import tensorflow as tf
    inputs = {k: tf.constant(v) for k, v in padded_inputs(table).items()}
    return append_outputs(table, model.signatures[EXPLAIN_SIGNATURE](**inputs))


def append_outputs(table: pa.Table, out) -> pa.Table:
    """`table` with the explain signature's outputs for its rows appended (the padding rows
    dropped): pd, logit, expected_logit as float64, phi as a fixed-size float32 list."""
    n = table.num_rows
    phi = out["phi"].numpy()[:n].astype(np.float32)
    return (table
            .append_column("pd", pa.array(out["pd"].numpy()[:n].astype(np.float64)))
            .append_column("logit", pa.array(out["logit"].numpy()[:n].astype(np.float64)))
            .append_column("expected_logit",
                           pa.array(out["expected_logit"].numpy()[:n].astype(np.float64)))
            .append_column("phi", pa.FixedSizeListArray.from_arrays(
                pa.array(phi.reshape(-1)), phi.shape[1])))


# The scoring service answers one firm, or a few dozen, at a time. The explain signature's DeepLIFT
# step pads every batch to whole 64-row chunks (models/explain.py, which also keeps a row's bits
# independent of its neighbours), so padding it further to MIN_ROWS would only add cost. Measured
# on both models of the 10k book (every firm, alone and in the whole book): phi and
# expected_logit are the same digits padded to whole ROW_BLOCKs only; pd and logit are those of
# the score signature padded to MIN_ROWS (3 ms), which equal the explain signature's bit for bit.
# So the service calls:
#   - `scores` for every firm of every version (the shadow scores need nothing more), and
#   - `attributions` for the firms a version scores officially, padded to ROW_BLOCKs only,
# and `with_outputs` gives the columns `with_model_outputs` gives, to the digit (tests/test_serve.py
# checks it against the nightly tables). Models whose explain signature pads its own network pass
# to MIN_ROWS (`explains_pd`) give that pd in the one explain call: `scores_and_attributions`.

def scores(table: pa.Table, model, inputs: dict[str, np.ndarray] | None = None) -> dict:
    """{'pd', 'logit'} (float64) of every row: one call of the score signature padded to
    MIN_ROWS. `inputs`: raw_inputs(table), when the caller has them already."""
    out = _call_padded(model.signatures[SCORE_SIGNATURE], table, inputs, MIN_ROWS)
    return _score_outputs(out, table.num_rows)


def attributions(table: pa.Table, model, inputs: dict[str, np.ndarray] | None = None) -> dict:
    """{'expected_logit' (float64), 'phi' (float32 [n, features])} of every row: one call of the
    explain signature padded to whole ROW_BLOCKs only (its pd is not used: see above)."""
    out = _call_padded(model.signatures[EXPLAIN_SIGNATURE], table, inputs, ROW_BLOCK)
    return _attribution_outputs(out, table.num_rows)


def explains_pd(model) -> bool:
    """Whether the model's explain signature gives the score signature's PD at any batch size
    (exports since models/export.py's `pd_min_rows`): then one call padded to ROW_BLOCKs gives
    the score signature's pd and logit too, and `scores_and_attributions` needs no second call."""
    known = getattr(model, "_smescore_explains_pd", None)
    if known is None:                # read once: a variable read is a TensorFlow op (0.3 ms)
        rows = getattr(model, "pd_min_rows", None)
        known = model._smescore_explains_pd = rows is not None and int(rows.numpy()) == MIN_ROWS
    return known


def scores_and_attributions(table: pa.Table, model,
                            inputs: dict[str, np.ndarray] | None = None) -> tuple[dict, dict]:
    """(`scores`, `attributions`) of every row: one explain call padded to whole ROW_BLOCKs where
    the model `explains_pd`, else the two calls."""
    if not explains_pd(model):
        return scores(table, model, inputs), attributions(table, model, inputs)
    out = _call_padded(model.signatures[EXPLAIN_SIGNATURE], table, inputs, ROW_BLOCK)
    return _score_outputs(out, table.num_rows), _attribution_outputs(out, table.num_rows)


def _call_padded(fn, table: pa.Table, inputs: dict[str, np.ndarray] | None, min_rows: int) -> dict:
    """fn on the table's inputs (or `inputs`, its raw_inputs) padded as `_padded` pads them."""
    return _call(fn, raw_inputs(table) if inputs is None else inputs,
                 _padding(table.num_rows, min_rows))


def _score_outputs(out, n: int) -> dict:
    return {k: out[k].numpy()[:n].astype(np.float64) for k in ("pd", "logit")}


def _attribution_outputs(out, n: int) -> dict:
    return {"expected_logit": out["expected_logit"].numpy()[:n].astype(np.float64),
            "phi": out["phi"].numpy()[:n].astype(np.float32)}


def with_outputs(table: pa.Table, scored: dict, explained: dict) -> pa.Table:
    """`table` with `scores`' and `attributions`' outputs of its rows appended, in the columns
    and types `append_outputs` makes."""
    phi = explained["phi"]
    return (table
            .append_column("pd", pa.array(scored["pd"]))
            .append_column("logit", pa.array(scored["logit"]))
            .append_column("expected_logit", pa.array(explained["expected_logit"]))
            .append_column("phi", pa.FixedSizeListArray.from_arrays(
                pa.array(phi.reshape(-1)), phi.shape[1])))


def _call(fn, inputs: dict[str, np.ndarray], extra: int = 0) -> dict:
    """fn(**inputs), each input with its last row repeated `extra` times (the padding), for a
    loaded signature, without TensorFlow binding ~100 keyword arguments to its signature on
    every call (1-2 ms of Python a call, three calls a request): the signature's own flat order,
    read once from its input placeholders, then its flat call. A signature whose placeholders do
    not name its inputs is called the ordinary way."""
    import tensorflow as tf
    order = getattr(fn, "_smescore_flat_order", ())
    if order == ():
        names = tuple(t.name.split(":")[0] for t in fn.inputs[:len(inputs)])
        order = names if sorted(names) == sorted(inputs) else None
        fn._smescore_flat_order = order
    if order is None:
        return fn(**{k: tf.constant(_repeat_last(v, extra)) for k, v in inputs.items()})
    return fn._call_flat(_tensors([inputs[k] for k in order], extra), fn.captured_inputs)


def _repeat_last(v: np.ndarray, extra: int, axis: int = 0) -> np.ndarray:
    if not extra:
        return v
    last = np.take(v, [-1], axis=axis)
    return np.concatenate([v, np.repeat(last, extra, axis=axis)], axis=axis)


def _tensors(values: list[np.ndarray], extra: int = 0) -> list:
    """One eager tensor per array, the same values, each padded by `extra` copies of its last
    row: the float32 columns stacked, padded and made a tensor once, then unstacked (~0.3 ms)
    instead of a concatenate and a constant each (~60 us each, ~100 a call)."""
    import tensorflow as tf
    tensors = [None] * len(values)
    floats = [i for i, v in enumerate(values) if v.dtype == np.float32 and v.ndim == 1]
    if len(floats) > 1 and len({len(values[i]) for i in floats}) == 1:
        stacked = _repeat_last(np.stack([values[i] for i in floats]), extra, axis=1)
        for i, t in zip(floats, tf.unstack(tf.constant(stacked))):
            tensors[i] = t
    return [tf.constant(_repeat_last(v, extra)) if t is None else t
            for v, t in zip(values, tensors)]

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


def raw_inputs(table: pa.Table) -> dict[str, np.ndarray]:
    """Signature inputs from an Arrow feature table."""
    out = {}
    for f in catalog.FEATURES:
        col = table.column(f.name)
        if f.is_categorical:
            out[f.name] = np.asarray(pc.fill_null(col.cast(pa.string()), "").to_pylist(), dtype=object)
        else:
            out[f.name] = pc.fill_null(col.cast(pa.float32()), np.nan).to_numpy(zero_copy_only=False)
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
# padding rows (copies of the last firm) are dropped from the outputs.
ROW_BLOCK = 8
MIN_ROWS = 128


def padded_inputs(table: pa.Table) -> dict[str, np.ndarray]:
    """raw_inputs with the last row repeated up to max(MIN_ROWS, whole ROW_BLOCKs) rows."""
    inputs = raw_inputs(table)
    n = table.num_rows
    extra = max(MIN_ROWS - n, -n % ROW_BLOCK)
    if extra and n:
        inputs = {k: np.concatenate([v, np.repeat(v[-1:], extra)]) for k, v in inputs.items()}
    return inputs


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

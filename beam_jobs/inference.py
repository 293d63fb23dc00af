"""RunInference over feature tables: each element is a batch of thousands of firms, not one row.

The handler loads the hermetic SavedModel with `tf.saved_model.load` (no Keras involved, so the
Keras 3 / legacy SavedModel problem does not arise) once per worker, calls the
`score_and_explain` signature once per table and returns the table with `pd`, `logit`,
`expected_logit` and `phi` (one attribution per catalogue feature) appended.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.ml.inference.base import ModelHandler

from smescore import runtime
from smescore.errors import ServiceUnavailable
from transforms import catalog, progress

EXPLAIN_SIGNATURE = "score_and_explain"


class NoGpuError(ServiceUnavailable, RuntimeError):
    """--require_gpu on a machine without a GPU (exit 5)."""


def check_gpu(where: str = "this worker") -> None:
    """--require_gpu: fail fast rather than score a night's portfolio on a CPU."""
    runtime.tf_environment()
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        raise NoGpuError(f"--require_gpu is set but TensorFlow sees no GPU on {where}; check "
                         f"--dataflow_service_options=worker_accelerator=... and the worker image "
                         f"(infra/Dockerfile)")


def raw_inputs(table: pa.Table) -> dict[str, np.ndarray]:
    """Signature inputs from a feature table: float32 with NaN for missing, strings with ''."""
    out = {}
    for f in catalog.FEATURES:
        col = table.column(f.name)
        if f.is_categorical:
            out[f.name] = np.asarray(pc.fill_null(col.cast(pa.string()), "").to_pylist(), dtype=object)
        else:
            out[f.name] = pc.fill_null(col.cast(pa.float32()), np.nan).to_numpy(zero_copy_only=False)
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
    """The feature table with the model's `pd`, `logit`, `expected_logit` and `phi` appended."""
    import tensorflow as tf
    inputs = {k: tf.constant(v) for k, v in padded_inputs(table).items()}
    out = model.signatures[EXPLAIN_SIGNATURE](**inputs)
    n = table.num_rows
    phi = out["phi"].numpy()[:n].astype(np.float32)
    return (table
            .append_column("pd", pa.array(out["pd"].numpy()[:n].astype(np.float64)))
            .append_column("logit", pa.array(out["logit"].numpy()[:n].astype(np.float64)))
            .append_column("expected_logit",
                           pa.array(out["expected_logit"].numpy()[:n].astype(np.float64)))
            .append_column("phi", pa.FixedSizeListArray.from_arrays(
                pa.array(phi.reshape(-1)), phi.shape[1])))


class FeatureTableModelHandler(ModelHandler[pa.Table, pa.Table, Any]):
    """ModelHandler whose examples are whole Arrow feature tables (pre-batched upstream)."""

    def __init__(self, saved_model_path: str, model_version: str, require_gpu: bool = False):
        super().__init__()
        self.saved_model_path = saved_model_path
        self.model_version = model_version
        self.require_gpu = require_gpu

    def load_model(self):
        if self.require_gpu:
            check_gpu("this worker")
        runtime.load_tensorflow()     # a worker process: TensorFlow's settings, quietly
        import tensorflow as tf
        return tf.saved_model.load(self.saved_model_path)

    def run_inference(self, batch, model, inference_args=None) -> Iterable[pa.Table]:
        tables = [batch] if isinstance(batch, pa.Table) else list(batch)
        for table in tables:
            yield with_model_outputs(table, model)
            progress.advance("firms scored[model]", table.num_rows)

    def should_skip_batching(self) -> bool:
        return True            # elements already are batches of thousands of firms

    def get_num_bytes(self, batch: Sequence[pa.Table]) -> int:
        tables = [batch] if isinstance(batch, pa.Table) else batch
        return sum(t.nbytes for t in tables)

    def get_metrics_namespace(self) -> str:
        return "smescore"


class LoadedModels(dict):
    """version -> loaded SavedModel. A dict subclass because Beam's shared model cache keeps a weak
    reference to what load_model returns, and a plain dict cannot be weakly referenced."""


class ChampionChallengersHandler(FeatureTableModelHandler):
    """Scores each feature table with the champion and, in shadow, every challenger, in one pass
    over the data. Yields {version: output table}; a challenger that fails on a table yields its
    error message instead, so the champion's scores never depend on a challenger working. A
    champion failure fails the element (RunInference's dead-letter path)."""

    def __init__(self, saved_model_paths: dict[str, str], require_gpu: bool = False):
        champion = next(iter(saved_model_paths))
        super().__init__(saved_model_paths[champion], champion, require_gpu)
        self.saved_model_paths = dict(saved_model_paths)

    def load_model(self):
        models = LoadedModels()
        for version, path in self.saved_model_paths.items():
            self.saved_model_path = path
            models[version] = super().load_model()
        return models

    def run_inference(self, batch, model, inference_args=None) -> Iterable[dict]:
        tables = [batch] if isinstance(batch, pa.Table) else list(batch)
        champion = self.model_version
        for table in tables:
            out = {champion: with_model_outputs(table, model[champion])}
            for version, loaded in model.items():
                if version == champion:
                    continue
                try:
                    out[version] = with_model_outputs(table, loaded)
                except Exception as err:  # noqa: BLE001 - a shadow model must not stop the run
                    out[version] = f"{type(err).__name__}: {err}"[:500]
            progress.advance("firms scored[model]", table.num_rows)
            yield out

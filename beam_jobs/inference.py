"""RunInference over feature tables: each element is a batch of thousands of firms, not one row.

The handler loads the hermetic SavedModel with `tf.saved_model.load` (no Keras involved, so the
Keras 3 / legacy SavedModel problem does not arise) once per worker, calls the
`score_and_explain` signature once per table and returns the table with `pd`, `logit`,
`expected_logit` and `phi` (one attribution per catalogue feature) appended.

The signature call itself is models/signature.py's `with_model_outputs`, the one the validation
and the Python API call too. TensorFlow is imported inside the functions that use it: Beam
unpickles this handler on every worker, and the worker sets TensorFlow's environment
(runtime.load_tensorflow) before it loads.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler

from smescore import runtime
from smescore.errors import ServiceUnavailable
from models.signature import with_model_outputs
from transforms import progress

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

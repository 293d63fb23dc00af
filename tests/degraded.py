"""A worse copy of a registered model version, made the way a bad release happens: the same model
card (so the same claimed test AUC), the same TFT graph, background and calibration, but a network
whose weights were disturbed, re-exported through models/export.py into a hermetic SavedModel."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq

from models import registry as model_registry


def register_degraded_copy(registry: str, version: str, new_version: str, noise: float,
                           seed: int = 0) -> str:
    """Add N(0, (noise * std of the layer's kernel)^2) to every kernel; returns the folder."""
    import tensorflow_transform as tft
    import tf_keras as keras
    from models import calibration, export
    from models.train import assemble_numpy
    from transforms import preprocessing

    reg = model_registry.Registry(registry)
    source, staging = reg.version_dir(version), reg.staging_dir()
    tft_dir = os.path.join(staging, model_registry.TRANSFORM_FN)
    shutil.copytree(os.path.join(source, model_registry.TRANSFORM_FN), tft_dir)
    shutil.copy(os.path.join(source, model_registry.BACKGROUND), staging)
    card = reg.model_card(version)
    card.update(version=new_version, degraded_from=version)

    model = keras.models.load_model(os.path.join(source, model_registry.NETWORK), compile=False)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            kernel = weights[0]
            weights[0] = kernel + rng.normal(0.0, noise * kernel.std(), kernel.shape).astype(
                kernel.dtype)
            layer.set_weights(weights)

    tft_output = tft.TFTransformOutput(tft_dir)
    columns = preprocessing.input_columns(tft_output)
    background = pq.read_table(os.path.join(staging, model_registry.BACKGROUND)).to_pandas()
    export.export(os.path.join(staging, model_registry.SAVED_MODEL), tft_output, model,
                  calibration.LogitCalibration.from_card(card["calibration"]),
                  assemble_numpy(tft_output, background, columns), columns)
    model.save(os.path.join(staging, model_registry.NETWORK))
    with open(os.path.join(staging, model_registry.MODEL_CARD), "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, sort_keys=True)
    return reg.publish(staging, new_version)

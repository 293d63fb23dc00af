"""The scoring network and how TFT outputs become its one dense input vector.

The vector is what SHAP explains: each column belongs to one business feature (z-score, missing
flag or one-hot slot), so attributions sum back to the feature they came from.
"""
from __future__ import annotations

import dataclasses

from smescore import runtime

runtime.tf_environment()      # before TensorFlow loads: tf_keras, the legacy SavedModel format

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


@dataclasses.dataclass(frozen=True)
class HParams:
    hidden: tuple[int, ...] = (64, 32, 16)
    dropout: float = 0.3
    l2: float = 1e-3
    learning_rate: float = 5e-4
    batch_size: int = 512
    max_epochs: int = 60
    patience: int = 10           # validation AUC on held-out firms is noisy: wait before stopping
    loss: str = "focal"            # 'focal' or 'class_weight'
    focal_alpha: float = 0.75      # weight of the (rare) defaults
    focal_gamma: float = 2.0
    seed: int = 7

    def __post_init__(self):
        if self.loss not in ("focal", "class_weight"):
            raise ValueError(f"loss must be 'focal' or 'class_weight', got {self.loss!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.focal_alpha < 1:
            raise ValueError(f"focal_alpha must be in (0, 1), got {self.focal_alpha}")


def assemble(transformed, columns) -> tf.Tensor:
    """Transformed features -> float32 [batch, n_inputs] in the order of `columns`.

    columns: (transformed column, business feature, depth); depth 1 is a float column, depth > 1
    an integer id that becomes a one-hot block of that width.
    """
    parts = []
    for column, _, depth in columns:
        t = transformed[column]
        if depth == 1:
            parts.append(tf.reshape(tf.cast(t, tf.float32), [-1, 1]))
        else:
            parts.append(tf.one_hot(tf.reshape(tf.cast(t, tf.int64), [-1]), depth, dtype=tf.float32))
    return tf.concat(parts, axis=1)


def column_groups(columns) -> list[str]:
    """The business feature of every column of the assembled vector."""
    return [feature for _, feature, depth in columns for _ in range(depth)]


def build_mlp(n_inputs: int, hp: HParams) -> keras.Model:
    """Dense/ReLU stack with dropout, one linear output: the raw log-odds of default."""
    reg = keras.regularizers.l2(hp.l2)
    layers = [keras.layers.InputLayer(input_shape=(n_inputs,), name="x")]
    for i, width in enumerate(hp.hidden):
        layers += [keras.layers.Dense(width, activation="relu", kernel_regularizer=reg,
                                      name=f"dense_{i}"),
                   keras.layers.Dropout(hp.dropout, seed=hp.seed + i, name=f"dropout_{i}")]
    layers.append(keras.layers.Dense(1, name="logit"))
    return keras.Sequential(layers, name="sme_default_mlp")


def loss_for(hp: HParams, default_rate: float):
    """Focal loss (or plain cross-entropy with class weights); both distort probabilities, hence
    the separate calibration step."""
    if hp.loss == "focal":
        return keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=hp.focal_alpha, gamma=hp.focal_gamma,
            from_logits=True), None
    w = (1 - default_rate) / max(default_rate, 1e-6)
    return keras.losses.BinaryCrossentropy(from_logits=True), {0: 1.0, 1: float(w)}


def dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None):
    """tf.data input pipeline over the transformed matrix."""
    ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y.astype(np.float32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fit(x_train, y_train, x_valid, y_valid, hp: HParams, log_dir: str | None = None):
    """Train with early stopping on validation AUC; returns (model, history dict)."""
    keras.utils.set_random_seed(hp.seed)
    model = build_mlp(x_train.shape[1], hp)
    loss, class_weight = loss_for(hp, float(y_train.mean()))
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate), loss=loss,
                  metrics=[keras.metrics.AUC(name="auc", from_logits=True)])
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=hp.patience,
                                               restore_best_weights=True)]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0,
                                                     write_graph=False, profile_batch=0))
    history = model.fit(dataset(x_train, y_train, hp.batch_size, hp.seed),
                        validation_data=dataset(x_valid, y_valid, 4096, None),
                        epochs=hp.max_epochs, callbacks=callbacks, class_weight=class_weight,
                        verbose=0)
    return model, {k: [float(v) for v in vs] for k, vs in history.history.items()}


def raw_logit(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return model.predict(x.astype(np.float32), batch_size=8192, verbose=0)[:, 0].astype(np.float64)

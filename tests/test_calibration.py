"""models.calibration: the monotone piecewise-linear map of the raw logit, and Platt as its
no-knot case."""
import numpy as np
import pytest

from models import calibration
from models.calibration import LogitCalibration


def _bent_sample(n=200_000, seed=3):
    """Raw logits whose true log-odds bend where the default knots fall (the 70% and 95%
    quantiles of z): slope 1 below the first, 0.4 between, 1.5 above the second."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    t1, t2 = np.quantile(z, calibration.KNOT_QUANTILES)
    true = -3.0 + z - 0.6 * np.maximum(z - t1, 0) + 1.1 * np.maximum(z - t2, 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(np.float32)
    return z, y, true


def test_platt_is_the_no_knot_case_and_recovers_a_linear_map():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 1.2, 100_000)
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-(0.7 * z - 2.5)))).astype(np.float32)
    platt = calibration.fit_platt(z, y)
    assert platt.knots == () and len(platt.slopes) == 1
    assert platt.slopes[0] == pytest.approx(0.7, abs=0.03)
    assert platt.intercept == pytest.approx(-2.5, abs=0.05)
    np.testing.assert_allclose(platt.logit(z), platt.slopes[0] * z + platt.intercept, rtol=0, atol=1e-12)


def test_knots_follow_a_bend_platt_cannot():
    z, y, true = _bent_sample()
    bent = calibration.fit(z, y)
    platt = calibration.fit_platt(z, y)
    assert len(bent.knots) == 2 and np.all(np.diff(bent.knots) > 0)
    err_bent = np.abs(bent.logit(z) - true).mean()
    err_platt = np.abs(platt.logit(z) - true).mean()
    assert err_bent < 0.5 * err_platt, (err_bent, err_platt)
    assert bent.slopes == pytest.approx((1.0, 0.4, 1.5), abs=0.1)
    # mean PD / mean true probability per decile of z

    def worst_decile(cal):
        parts = np.array_split(np.argsort(z), 10)
        return max(abs(cal.pd(z[p]).mean() / (1 / (1 + np.exp(-true[p]))).mean() - 1) for p in parts)
    assert worst_decile(bent) < 0.10 < 0.20 < worst_decile(platt)


def test_the_map_is_strictly_increasing_even_where_the_data_say_flat():
    rng = np.random.default_rng(9)
    z = rng.normal(0, 1, 50_000)
    # risk rises below 0 and is flat above: the maximum-likelihood slope there would be ~0
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-(-3 + np.minimum(z, 0))))).astype(np.float32)
    cal = calibration.fit(z, y, (0.5,))
    assert min(cal.slopes) >= calibration.MIN_SLOPE - 1e-12
    grid = np.linspace(-5, 5, 1001)
    assert np.all(np.diff(cal.logit(grid)) > 0)


def test_dense_layers_compute_the_map():
    cal = LogitCalibration(-1.2, (0.9, 0.3, 2.0), (-0.5, 1.5))
    z = np.linspace(-4, 4, 801)
    h = z[:, None]
    for kernel, bias, activation in cal.dense_layers():
        h = h @ kernel + bias
        h = np.maximum(h, 0) if activation == "relu" else h
    np.testing.assert_allclose(h[:, 0], cal.logit(z), rtol=0, atol=1e-12)
    (kernel, bias, activation), = LogitCalibration(-1.2, (0.9,)).dense_layers()
    assert activation == "linear" and kernel.tolist() == [[0.9]] and bias.tolist() == [-1.2]


def test_the_card_round_trips_and_bad_maps_are_refused():
    cal = LogitCalibration(-1.2, (0.9, 0.3, 2.0), (-0.5, 1.5))
    assert LogitCalibration.from_card(cal.to_card()) == cal
    with pytest.raises(ValueError, match="positive"):
        LogitCalibration(0.0, (1.0, -0.1), (0.0,))
    with pytest.raises(ValueError, match="one slope per segment"):
        LogitCalibration(0.0, (1.0,), (0.0,))
    with pytest.raises(ValueError, match="increasing"):
        LogitCalibration(0.0, (1.0, 1.0, 1.0), (1.0, 0.5))
    with pytest.raises(ValueError, match="both defaults and non-defaults"):
        calibration.fit(np.arange(10.0), np.zeros(10))


def test_out_of_fold_logits_never_come_from_a_network_that_trained_on_the_firm(monkeypatch):
    """Every training row is scored once, by the network of the one fold that left its firm out
    (all of a firm's snapshots in the same fold), and that network is a real trained one."""
    from models import network, train

    rng = np.random.default_rng(4)
    firms = np.repeat([f"E{i:03d}" for i in range(60)], 3)            # 3 snapshots a firm
    ids = np.repeat(np.arange(60, dtype=np.float32), 3)
    x = {"train": np.column_stack([ids, rng.normal(size=(len(ids), 4))]).astype(np.float32),
         "valid": rng.normal(size=(40, 5)).astype(np.float32)}
    y = {"train": (rng.random(len(ids)) < 0.3).astype(np.float32),
         "valid": (rng.random(40) < 0.3).astype(np.float32)}
    trained_on, scored_by = {}, []
    real_fit, real_logit = network.fit, network.raw_logit

    def fit(x_train, *args, **kwargs):
        model, history = real_fit(x_train, *args, **kwargs)
        trained_on[id(model)] = set(x_train[:, 0].tolist())
        return model, history

    def raw_logit(model, rows):
        scored_by.append((id(model), rows[:, 0].tolist()))
        return real_logit(model, rows)

    monkeypatch.setattr(network, "fit", fit)
    monkeypatch.setattr(network, "raw_logit", raw_logit)
    hp = network.HParams(hidden=(4,), max_epochs=2, patience=1, monotone=False)
    oof = train.out_of_fold_logits(x, y, firms, hp, None, folds=4)

    assert len(trained_on) == 4 and len(scored_by) == 4
    assert oof.shape == (len(ids),) and np.isfinite(oof).all()
    seen = []
    for model_id, scored in scored_by:
        assert not set(scored) & trained_on[model_id]      # never a firm the network trained on
        assert len(trained_on[model_id]) + len(set(scored)) == 60
        seen += scored
    assert sorted(seen) == sorted(ids.tolist())             # every row once
    assert train.out_of_fold_logits(x, y, firms, hp, None, folds=0).size == 0

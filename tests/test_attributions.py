"""The exported model's in-graph attributions equal shap.DeepExplainer's, feature by feature, and
the ground truth's drivers show up in the reasons."""
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models import export, network, registry as model_registry
from models.explain import group_attributions
from transforms import catalog, feeds
from synth.truth import DRIVER_FAMILY, GROUND_TRUTH_DIR


def test_saved_model_phi_equals_shap_deep_explainer(trained):
    import shap
    import tensorflow as tf
    import tensorflow_transform as tft
    import tf_keras as keras
    from bench.bench_attributions import calibrated
    from models.calibration import LogitCalibration
    from models.train import assemble_numpy
    from transforms import preprocessing

    reg_dir, version, card = trained
    vdir = model_registry.Registry(reg_dir).version_dir(version)
    tft_output = tft.TFTransformOutput(os.path.join(vdir, model_registry.TRANSFORM_FN))
    columns = preprocessing.input_columns(tft_output)
    background = pq.read_table(os.path.join(vdir, model_registry.BACKGROUND)).to_pandas()
    rows = background.sample(40, random_state=3).reset_index(drop=True)   # any firms will do
    x_bg, x_rows = (assemble_numpy(tft_output, f, columns) for f in (background, rows))

    net = keras.models.load_model(os.path.join(vdir, model_registry.NETWORK), compile=False)
    # the calibration appended as its own Dense layers, not folded into the network's last one as
    # the SavedModel does
    reference = calibrated(net, LogitCalibration.from_card(card["calibration"]))
    phi_shap = np.asarray(shap.DeepExplainer(reference, x_bg).shap_values(x_rows))
    phi_shap = phi_shap.reshape(len(rows), -1)
    names, grouped = group_attributions(phi_shap, network.column_groups(columns))
    phi_shap_by_feature = grouped[:, [names.index(f) for f in catalog.NAMES]]

    model = tf.saved_model.load(model_registry.Registry(reg_dir).saved_model_path(version))
    out = model.signatures[export.EXPLAIN_SIGNATURE](**export.raw_tensors(rows))
    assert out["phi"].shape == (len(rows), len(catalog.NAMES))
    assert np.max(np.abs(out["phi"].numpy() - phi_shap_by_feature)) <= 1e-4
    additivity = out["phi"].numpy().sum(1) + out["expected_logit"].numpy() - out["logit"].numpy()
    assert np.max(np.abs(additivity)) <= 1e-4


def driver_recovery(warehouse: str, feeds_dir: str, as_of) -> tuple[float, int]:
    """Share of model-scored firms that default within 12 months whose top-4 reasons contain the
    feature family of the generator's dominant driver at the as-of date."""
    import duckdb
    with duckdb.connect(warehouse, read_only=True) as con:
        scores = con.execute("SELECT enterprise_id, reasons FROM scores WHERE as_of_date = ? "
                             "AND score_source = 'model'", [as_of]).fetch_df()
    truth = pq.read_table(os.path.join(feeds_dir, GROUND_TRUTH_DIR)).to_pandas()
    truth = truth[pd.to_datetime(truth["as_of_date"]).dt.date == as_of]
    loans = pq.read_table(os.path.join(feeds_dir, "loans")).to_pandas()
    months = pd.to_datetime(loans["report_month"]).dt.to_period("M")
    d = pd.Timestamp(as_of).to_period("M")
    bad = loans[(months > d) & (months <= d + 12) & (loans["days_past_due"] >= feeds.DEFAULT_DPD)]
    j = scores.merge(truth, on="enterprise_id")
    j = j[j["enterprise_id"].isin(bad["enterprise_id"]) & j["dominant_driver"].notna()]
    hits = [DRIVER_FAMILY[drv] in {catalog.BY_NAME[r["feature"]].family for r in reasons}
            for drv, reasons in zip(j["dominant_driver"], j["reasons"])]
    return float(np.mean(hits)) if hits else float("nan"), len(hits)

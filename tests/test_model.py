"""The trained model version: card contents, a hermetic SavedModel, the registry layout."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from models import registry as model_registry
from models.train import evaluation_pd
from transforms import catalog

SCORE_IN_A_BARE_PROCESS = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, pyarrow.parquet as pq, tensorflow as tf
saved_model, features, out = sys.argv[1:4]
assert not any(m.split(".")[0] in ("models", "transforms", "beam_jobs", "smescore") for m in sys.modules)
model = tf.saved_model.load(saved_model)
sig = model.signatures["serving_default"]
table = pq.read_table(features)
inputs = {}
for name, spec in sig.structured_input_signature[1].items():
    col = table.column(name).to_pandas()
    inputs[name] = tf.constant(col.fillna("").astype(str).to_numpy(object) if spec.dtype == tf.string
                               else col.to_numpy(np.float32, na_value=np.nan), spec.dtype)
np.save(out, sig(**inputs)["pd"].numpy())
"""


def test_model_card_holds_metrics_baseline_and_background(trained):
    _, version, card = trained
    test = card["metrics"]["test"]
    for key in ("auc", "ks", "gini", "default_rate", "mean_pd", "brier"):
        assert np.isfinite(test[key]), key
    assert test["gini"] == pytest.approx(2 * test["auc"] - 1)
    assert len(test["calibration_by_decile"]) == 10
    assert 0.5 < card["oracle_auc"] < 1.0
    assert {"auc", "ks"} <= set(card["metrics"]["challenger_logistic_regression"])
    free = card["metrics"]["unconstrained_network"]     # a mean over seeds, each one kept
    assert [r["seed"] for r in free["seeds"]] == [7, 8, 9]
    assert free["auc"] == pytest.approx(np.mean([r["auc"] for r in free["seeds"]]))
    assert free["auc_min"] <= free["auc"] <= free["auc_max"]
    for name in ("challenger_logistic_regression", "challenger_monotone_gbm", "unconstrained_network"):
        gap = card["metrics"][name]["auc_minus_model"]      # paired bootstrap over firms
        assert gap["value"] == pytest.approx(card["metrics"][name]["auc"] - test["auc"], abs=1e-12)
        assert gap["ci_low"] < gap["value"] < gap["ci_high"], name
        assert gap["replicates_used"] >= 990
    assert card["features"] == list(catalog.NAMES)
    assert card["shap_background"]["n_firms"] >= 100
    assert set(card["baseline"]["features"]) == set(catalog.NAMES)
    assert abs(sum(card["baseline"]["score"]["shares"]) - 1) < 1e-9
    assert card["saved_model_max_abs_pd_diff"] <= 1e-6
    last_train = max(card["snapshot_dates"]["train"])
    assert last_train < min(card["snapshot_dates"]["valid"]) <= max(card["snapshot_dates"]["valid"]) \
        < min(card["snapshot_dates"]["test"])                     # out-of-time split


def test_saved_model_alone_scores_like_the_evaluation_path(trained, small_feeds, tmp_path):
    reg_dir, version, _ = trained
    from beam_jobs import build_features
    features = tmp_path / "features.parquet"
    build_features.run([f"--feeds={small_feeds}", "--as_of=2026-09-30", f"--out={features}",
                        "--n_shards=4"], save_main_session=False)
    frame = pq.read_table(features).to_pandas()
    expected = evaluation_pd(model_registry.Registry(reg_dir).version_dir(version), frame)

    bare = tmp_path / "bare_model"                       # the SavedModel folder, nothing else:
    shutil.copytree(model_registry.Registry(reg_dir).saved_model_path(version), bare)
    out = tmp_path / "pd.npy"                            # no transform_fn/ next to it
    subprocess.run([sys.executable, "-c", SCORE_IN_A_BARE_PROCESS, str(bare), str(features), str(out)],
                   check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    got = np.load(out)
    assert len(got) == len(frame) > 500
    assert np.max(np.abs(got - expected)) <= 1e-6


def test_registry_layout_and_champion(trained):
    reg_dir, version, card = trained
    reg = model_registry.Registry(reg_dir)
    assert reg.champion() == version == card["version"]
    files = set(os.listdir(reg.version_dir(version)))
    assert {"saved_model", "transform_fn", "model_card.json", "background.parquet", "network.keras",
            "logs"} <= files
    assert not [v for v in os.listdir(os.path.join(reg_dir, "versions")) if v.startswith(".")]
    with pytest.raises(ValueError, match="unknown model version"):
        reg.set_champion("nope")
    with open(os.path.join(reg.version_dir(version), "model_card.json")) as fh:
        assert json.load(fh)["version"] == version

"""Backtest figures of one model version on a labelled cohort: the `performance` and `backtest_roc`
rows (numpy, pandas, scipy; no TensorFlow, no Beam).

A cohort frame has one row per firm: `pd` (the version's calibrated PD), `default` (0/1, 90+ DPD
within the outcome window), and the segment columns `industry`, `region`, `grade`.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_curve

from models import metrics

OUTCOME_MONTHS = 12
CALIBRATION_ALPHA = 0.05          # the binomial test rejects calibration below this p-value
SEGMENTS = (("all", None), ("industry", "industry"), ("region", "region"), ("grade", "grade"))


def binomial_p_value(n_defaults: int, n_firms: int, predicted_rate: float) -> float:
    """Two-sided exact binomial test of the defaults against n_firms * predicted_rate."""
    return float(stats.binomtest(int(n_defaults), int(n_firms), float(predicted_rate),
                                 alternative="two-sided").pvalue)


def calibration_status(n_defaults: int, n_firms: int, predicted_rate: float, p_value: float) -> str:
    if p_value >= CALIBRATION_ALPHA:
        return "ok"
    return "too_many_defaults" if n_defaults > n_firms * predicted_rate else "too_few_defaults"


def segment_figures(y, pd_) -> dict:
    """n, defaults, AUC/KS/Gini (None without both outcomes), Brier, predicted vs observed default
    rate, binomial p-value and calibration status of one segment."""
    y, pd_ = np.asarray(y, np.int64), np.asarray(pd_, np.float64)
    if len(y) == 0:
        raise ValueError("a segment needs at least one firm")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"outcomes must be 0/1, got {sorted(set(np.unique(y)))[:5]}")
    n, k = len(y), int(y.sum())
    predicted = float(pd_.mean())
    ranked = 0 < k < n
    auc = metrics.auc(y, pd_) if ranked else None
    p_value = binomial_p_value(k, n, predicted)
    return {"n_firms": n, "n_defaults": k, "auc": auc,
            "ks": metrics.ks(y, pd_) if ranked else None,
            "gini": 2 * auc - 1 if ranked else None,
            "brier": metrics.brier(y, pd_), "predicted_default_rate": predicted,
            "observed_default_rate": k / n, "binomial_p_value": p_value,
            "calibration_status": calibration_status(k, n, predicted, p_value)}


def performance_rows(cohort: pd.DataFrame, as_of: dt.date, version: str,
                     backtested_at: dt.datetime) -> list[dict]:
    """One row per segment ('all', then each industry, region and grade, sorted)."""
    rows = []
    for seg_type, column in SEGMENTS:
        groups = [("all", cohort)] if column is None else cohort.groupby(column, sort=True)
        for seg, g in groups:
            rows.append({"as_of_date": as_of, "model_version": version, "segment_type": seg_type,
                         "segment": str(seg), "outcome_months": OUTCOME_MONTHS,
                         **segment_figures(g["default"], g["pd"]),
                         "backtested_at": backtested_at})
    return rows


def roc_rows(cohort: pd.DataFrame, as_of: dt.date, version: str) -> list[dict]:
    """ROC points of the whole cohort; none when it lacks defaults or non-defaults. The (0, 0)
    point, which flags no firm, gets the cut 1.0."""
    y = cohort["default"].to_numpy(np.int64)
    if not 0 < y.sum() < len(y):
        return []
    fpr, tpr, cuts = roc_curve(y, cohort["pd"].to_numpy(np.float64))
    cuts = np.where(np.isinf(cuts), 1.0, cuts)
    return [{"as_of_date": as_of, "model_version": version, "false_positive_rate": float(f),
             "true_positive_rate": float(t), "pd_cut": float(c)}
            for f, t, c in zip(fpr, tpr, cuts)]

"""Discrimination and calibration metrics for default models (numpy; no TensorFlow)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auc(y, score) -> float:
    y = np.asarray(y)
    if y.min() == y.max():
        raise ValueError("AUC needs both defaults and non-defaults in the sample")
    return float(roc_auc_score(y, score))


def ks(y, score) -> float:
    """Kolmogorov–Smirnov: the largest gap between the bads' and goods' cumulative score curves."""
    y, score = np.asarray(y, bool), np.asarray(score, np.float64)
    order = np.argsort(-score, kind="stable")
    y, score = y[order], score[order]
    last = np.r_[np.flatnonzero(np.diff(score) != 0), len(score) - 1]   # ties move together
    bads = np.cumsum(y)[last] / max(y.sum(), 1)
    goods = np.cumsum(~y)[last] / max((~y).sum(), 1)
    return float(np.max(np.abs(bads - goods)))


def brier(y, pd_) -> float:
    return float(np.mean((np.asarray(pd_, np.float64) - np.asarray(y, np.float64)) ** 2))


def calibration_by_decile(y, pd_) -> list[dict]:
    """Observed vs mean predicted default rate in ten equal-count PD bands (1 = lowest PD)."""
    y, pd_ = np.asarray(y, np.float64), np.asarray(pd_, np.float64)
    order = np.argsort(pd_, kind="stable")
    out = []
    for i, idx in enumerate(np.array_split(order, 10), start=1):
        out.append({"decile": i, "n": int(len(idx)), "mean_pd": float(pd_[idx].mean()),
                    "observed_default_rate": float(y[idx].mean()),
                    "pd_min": float(pd_[idx].min()), "pd_max": float(pd_[idx].max())})
    return out


def summary(y, pd_) -> dict:
    a = auc(y, pd_)
    return {"n": int(len(y)), "auc": a, "gini": 2 * a - 1, "ks": ks(y, pd_),
            "default_rate": float(np.mean(y)), "mean_pd": float(np.mean(pd_)),
            "brier": brier(y, pd_), "calibration_by_decile": calibration_by_decile(y, pd_)}

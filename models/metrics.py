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


def cluster_rows(clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by cluster id (ids in sorted order): (row order, first position, size)."""
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    return order, np.cumsum(sizes) - sizes, sizes


def resample_rows(order, starts, sizes, pick) -> np.ndarray:
    """The rows of the picked clusters, cluster after cluster, in row order within a cluster."""
    lens = sizes[pick]
    ends = np.cumsum(lens)
    return order[np.repeat(starts[pick] - (ends - lens), lens) + np.arange(ends[-1] if len(ends)
                                                                             else 0)]


def cluster_resamples(y, clusters, replicates: int, seed: int):
    """Bootstrap resamples by cluster (firm): each of `replicates` draws as many clusters as
    there are, with replacement (numpy default_rng(seed).integers), and keeps all their rows.
    Yields the row indices of every resample that holds both outcomes (the others are skipped)."""
    y = np.asarray(y)
    order, starts, sizes = cluster_rows(clusters)
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        idx = resample_rows(order, starts, sizes, rng.integers(0, len(sizes), len(sizes)))
        if y[idx].min() != y[idx].max():
            yield idx


def auc_difference(y, model_score, other_scores, clusters, replicates: int, seed: int) -> dict:
    """AUC of another model minus this model's on the same rows, with a paired bootstrap 95%
    percentile interval (whole clusters, i.e. firms, resampled; both models scored on every
    replicate's rows, so the interval is of the difference, not of two separate AUCs). With
    several scores for the other model (trainings with different seeds) its AUC is their mean."""
    y = np.asarray(y, np.int64)
    model_score = np.asarray(model_score, np.float64)
    others = [np.asarray(o, np.float64) for o in other_scores]

    def diff(idx):
        return float(np.mean([auc(y[idx], o[idx]) for o in others]) - auc(y[idx], model_score[idx]))

    reps = [diff(idx) for idx in cluster_resamples(y, clusters, replicates, seed)]
    lo, hi = np.percentile(reps, [2.5, 97.5]) if reps else (np.nan, np.nan)
    return {"value": diff(np.arange(len(y))), "ci_low": float(lo), "ci_high": float(hi),
            "replicates_used": len(reps)}


def summary(y, pd_) -> dict:
    a = auc(y, pd_)
    return {"n": int(len(y)), "auc": a, "gini": 2 * a - 1, "ks": ks(y, pd_),
            "default_rate": float(np.mean(y)), "mean_pd": float(np.mean(pd_)),
            "brier": brier(y, pd_), "calibration_by_decile": calibration_by_decile(y, pd_)}

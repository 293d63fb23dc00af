"""Discrimination and calibration metrics for default models (numpy; no TensorFlow)."""
from __future__ import annotations

import numpy as np


class RankedScores:
    """A score vector sorted once, its ties grouped: the AUC and KS of any reweighting of its rows
    in O(n), with no new sort. A bootstrap replicate is such a reweighting (each row counted as
    often as it was drawn), so a thousand replicates cost a thousand weighted sums, not a thousand
    sorts (sklearn's roc_auc_score took about 2 ms a replicate on 1,300 test rows).

    With whole-number weights both figures are exact: the counts below are sums of whole numbers,
    so the AUC is its exact rational value rounded once (the Mann-Whitney statistic, ties counted
    half, which is the area under the ROC curve), and the KS divides the same whole numbers as a
    cumulative count over repeated rows would."""

    def __init__(self, score):
        score = np.asarray(score, np.float64)
        if np.isnan(score).any():
            raise ValueError("scores contain NaN")
        self.order = np.argsort(score, kind="stable")
        s = score[self.order]
        self.group = np.r_[0, np.cumsum(s[1:] != s[:-1])] if len(s) else np.zeros(0, np.int64)
        self.n_groups = int(self.group[-1]) + 1 if len(s) else 0

    def _counts(self, y, weights) -> tuple[np.ndarray, np.ndarray]:
        """(defaults, non-defaults) per tie group, groups in increasing score."""
        y = np.asarray(y, np.float64)
        if np.any((y != 0) & (y != 1)):
            raise ValueError("outcomes must be 0 or 1")
        w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
        bad, good = (w * y)[self.order], (w * (1 - y))[self.order]
        return (np.bincount(self.group, bad, self.n_groups),
                np.bincount(self.group, good, self.n_groups))

    def auc(self, y, weights=None) -> float:
        bad, good = self._counts(y, weights)
        n_bad, n_good = bad.sum(), good.sum()
        if n_bad == 0 or n_good == 0:
            raise ValueError("AUC needs both defaults and non-defaults in the sample")
        good_below = np.cumsum(good) - good          # non-defaults scored strictly lower
        return float(np.dot(bad, good_below + 0.5 * good) / (n_bad * n_good))

    def ks(self, y, weights=None) -> float:
        """Kolmogorov–Smirnov: the largest gap between the bads' and goods' cumulative score
        curves, counted from the highest score down (ties move together)."""
        bad, good = self._counts(y, weights)
        bad_above = np.cumsum(bad[::-1]) / max(bad.sum(), 1)
        good_above = np.cumsum(good[::-1]) / max(good.sum(), 1)
        return float(np.max(np.abs(bad_above - good_above)))


def auc(y, score) -> float:
    return RankedScores(score).auc(y)


def ks(y, score) -> float:
    """Kolmogorov–Smirnov: the largest gap between the bads' and goods' cumulative score curves."""
    return RankedScores(score).ks(y)


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


def cluster_resamples(y, clusters, replicates: int, seed: int):
    """Bootstrap resamples by cluster (firm): each of `replicates` draws as many clusters as
    there are, with replacement (numpy default_rng(seed).integers), and keeps all their rows.
    Yields each resample that holds both outcomes (the others are skipped) as row weights: how
    many times each row was drawn (RankedScores reads a resample in that form)."""
    y = np.asarray(y, np.float64)
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        drawn = np.bincount(rng.integers(0, n_clusters, n_clusters), minlength=n_clusters)
        weights = drawn[codes].astype(np.float64)
        if 0 < np.dot(weights, y) < weights.sum():
            yield weights


def auc_difference(y, model_score, other_scores, clusters, replicates: int, seed: int) -> dict:
    """AUC of another model minus this model's on the same rows, with a paired bootstrap 95%
    percentile interval (whole clusters, i.e. firms, resampled; both models scored on every
    replicate's rows, so the interval is of the difference, not of two separate AUCs). With
    several scores for the other model (trainings with different seeds) its AUC is their mean."""
    y = np.asarray(y, np.int64)
    model = RankedScores(model_score)
    others = [RankedScores(o) for o in other_scores]

    def diff(weights=None):
        return float(np.mean([o.auc(y, weights) for o in others]) - model.auc(y, weights))

    reps = [diff(w) for w in cluster_resamples(y, clusters, replicates, seed)]
    lo, hi = np.percentile(reps, [2.5, 97.5]) if reps else (np.nan, np.nan)
    return {"value": diff(), "ci_low": float(lo), "ci_high": float(hi),
            "replicates_used": len(reps)}


def summary(y, pd_) -> dict:
    a = auc(y, pd_)
    return {"n": int(len(y)), "auc": a, "gini": 2 * a - 1, "ks": ks(y, pd_),
            "default_rate": float(np.mean(y)), "mean_pd": float(np.mean(pd_)),
            "brier": brier(y, pd_), "calibration_by_decile": calibration_by_decile(y, pd_)}

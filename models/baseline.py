"""The training baseline stored with a model version: what drift is measured against.

Bins are fixed here, at training time, from the reference population (PSI with bins fixed from
the training baseline, so that the same firm always falls in the same bin; README "Monitoring"). Numeric features: decile edges of the present values plus a
missing bin; categorical features: each category's share plus an 'other' bin; the score: fixed
50-point bands.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from transforms import catalog

SCORE_EDGES = [350, 400, 450, 500, 550, 600, 650, 700, 750, 800]
OTHER = "__other__"


def numeric_bins(values: np.ndarray, n_bins: int = 10) -> dict:
    v = np.asarray(values, np.float64)
    present = v[np.isfinite(v)]
    edges = np.unique(np.quantile(present, np.linspace(0, 1, n_bins + 1)[1:-1])) if len(present) \
        else np.array([])
    idx = np.searchsorted(edges, present, side="right")      # bin i: [edge[i-1], edge[i])
    counts = np.bincount(idx, minlength=len(edges) + 1)
    n = len(v)
    return {"type": "numeric", "edges": [float(e) for e in edges],
            "shares": [float(c) / n for c in counts],
            "missing_share": float((n - len(present)) / n) if n else 0.0}


def categorical_bins(values) -> dict:
    s = pd.Series(values, dtype="string").fillna("")
    shares = s.value_counts(normalize=True, sort=False).sort_index()
    return {"type": "categorical", "categories": [str(c) for c in shares.index],
            "shares": [float(x) for x in shares.to_numpy()], "other_share": 0.0,
            "missing_share": float((s == "").mean())}


def score_bins(scores: np.ndarray) -> dict:
    s = np.asarray(scores, np.float64)
    counts = np.bincount(np.searchsorted(SCORE_EDGES, s, side="right"),
                         minlength=len(SCORE_EDGES) + 1)
    return {"type": "numeric", "edges": [float(e) for e in SCORE_EDGES], "n": int(len(s)),
            "shares": [float(c) / len(s) for c in counts], "missing_share": 0.0,
            "mean": float(s.mean()), "p10": float(np.percentile(s, 10)),
            "p50": float(np.percentile(s, 50)), "p90": float(np.percentile(s, 90))}


def training_baseline(train: pd.DataFrame, train_scores: np.ndarray,
                      mean_abs_points: dict[str, float]) -> dict:
    features = {}
    for f in catalog.FEATURES:
        features[f.name] = (categorical_bins(train[f.name]) if f.is_categorical
                            else numeric_bins(train[f.name].to_numpy(np.float64, na_value=np.nan)))
    return {"n_rows": int(len(train)), "features": features, "score": score_bins(train_scores),
            "mean_abs_points": {k: float(v) for k, v in mean_abs_points.items()}}


DECILES = tuple(round(0.1 * k, 1) for k in range(1, 10))


def numeric_distribution(values: np.ndarray) -> dict:
    """What the training sample held for one numeric input: range, moments, median and deciles
    of the present values, and the missing share. Drift's out-of-range share and the reasons'
    'typical firm' (the median) read it."""
    v = np.asarray(values, np.float64)
    present = v[np.isfinite(v)]
    n = len(v)
    if not len(present):
        return {"type": "numeric", "n": n, "n_present": 0, "missing_share": 1.0 if n else 0.0,
                "min": None, "max": None, "mean": None, "std": None, "median": None, "deciles": []}
    return {"type": "numeric", "n": n, "n_present": int(len(present)),
            "missing_share": float((n - len(present)) / n),
            "min": float(present.min()), "max": float(present.max()),
            "mean": float(present.mean()), "std": float(present.std()),
            "median": float(np.median(present)),
            "deciles": [float(q) for q in np.quantile(present, DECILES)]}


def categorical_distribution(values) -> dict:
    """Categories of the training sample with their shares, most frequent first (ties by name);
    the first is the typical firm's."""
    s = pd.Series(values, dtype="string").fillna("")
    present = s[s != ""]
    shares = present.value_counts(normalize=True, sort=False)
    order = sorted(shares.index, key=lambda c: (-shares[c], str(c)))
    return {"type": "categorical", "n": int(len(s)), "missing_share": float((s == "").mean()),
            "categories": [str(c) for c in order], "shares": [float(shares[c]) for c in order],
            "mode": str(order[0]) if order else None}


def training_distribution(train: pd.DataFrame) -> dict:
    """Per model input, its distribution in the training sample (stored in the model card)."""
    return {f.name: (categorical_distribution(train[f.name]) if f.is_categorical
                     else numeric_distribution(train[f.name].to_numpy(np.float64, na_value=np.nan)))
            for f in catalog.FEATURES}

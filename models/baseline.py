"""The training baseline stored with a model version: what drift is measured against.

Bins are fixed here, at training time, from the reference population (DESIGN.md: PSI with bins
fixed from the training baseline). Numeric features: decile edges of the present values plus a
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

"""How good the ground truth is as a score, measured the way the trainer labels snapshots.

Cohorts: month-ends D from end_date-24 to end_date-12 months (those still inside the data), firms
established by D and not in default at D; label: default (90+ DPD) in the 12 months after D.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from synth import risk
from synth.calendar import MonthGrid, month_end_day
from synth.firms import Firms


def cohort_months(grid: MonthGrid) -> np.ndarray:
    """Window months of the as-of dates with a full 12-month outcome window."""
    last = grid.months - 1 - 12
    return np.arange(max(0, grid.months - 1 - 24), last + 1) if last >= 0 else np.arange(0)


def cohort_rows(firms: Firms, grid: MonthGrid, path: risk.RiskPath):
    """(pd, label, dominant driver index, as-of window month) of every cohort row."""
    pd_all = risk.true_pd(path)
    dom = path.window(path.dominant)
    tau = path.default_month
    out = []
    for w in cohort_months(grid):
        d_day = month_end_day([grid.first + w])[0]
        keep = (firms.established_day <= d_day) & ~(tau <= w)
        label = (tau[keep] >= w + 1) & (tau[keep] <= w + 12)
        out.append((pd_all[keep, w], label, dom[keep, w], np.full(keep.sum(), w)))
    if not out:
        return (np.zeros(0),) * 4
    return tuple(np.concatenate(parts) for parts in zip(*out))


def summary(firms: Firms, grid: MonthGrid, path: risk.RiskPath) -> dict:
    pd_, label, _, _ = cohort_rows(firms, grid, path)
    both = len(label) and 0 < label.sum() < len(label)
    return {"oracle_auc": float(roc_auc_score(label, pd_)) if both else None,
            "default_rate_12m": float(label.mean()) if len(label) else None,
            "oracle_rows": int(len(label)),
            "explained_defaults": explained_share(grid, path)}


def explained_share(grid: MonthGrid, path: risk.RiskPath) -> float | None:
    """Share of (defaulted firm, as-of date 1..12 months before its default) pairs inside the
    data at which some named driver is active: how much of the default is the drivers' doing."""
    tau = path.default_month
    dom = path.window(path.dominant)
    firm, lag = np.nonzero((tau[:, None] >= 0) & (tau[:, None] < grid.months)
                           & np.ones((1, 12), bool))
    w = tau[firm] - (lag + 1)
    ok = w >= 0
    if not ok.any():
        return None
    return float((dom[firm[ok], w[ok]] >= 0).mean())

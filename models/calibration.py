"""Platt scaling: calibrated log-odds = a * raw logit + b, fitted on held-out data.

Focal loss and class weights push predicted probabilities away from observed default rates; a
linear map of the logit restores them and keeps attributions exact (they scale by a).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize


@dataclasses.dataclass(frozen=True)
class Platt:
    a: float
    b: float

    def logit(self, raw_logit):
        return self.a * np.asarray(raw_logit, np.float64) + self.b

    def pd(self, raw_logit):
        return 1.0 / (1.0 + np.exp(-self.logit(raw_logit)))


def fit_platt(raw_logit, y) -> Platt:
    """Maximum-likelihood (a, b) of y ~ sigmoid(a z + b); unregularised, deterministic."""
    z, y = np.asarray(raw_logit, np.float64), np.asarray(y, np.float64)
    if y.min() == y.max():
        raise ValueError("calibration needs both defaults and non-defaults in the held-out data")

    def nll(p):
        s = p[0] * z + p[1]
        return float(np.sum(np.logaddexp(0.0, s) - y * s))

    def grad(p):
        r = 1.0 / (1.0 + np.exp(-(p[0] * z + p[1]))) - y
        return np.array([np.sum(r * z), np.sum(r)])

    rate = y.mean()
    res = minimize(nll, x0=np.array([1.0, np.log(rate / (1 - rate))]), jac=grad, method="BFGS",
                   options={"gtol": 1e-10, "maxiter": 1000})
    if not res.success and res.status != 2:     # 2: precision loss at the optimum is fine
        raise RuntimeError(f"Platt scaling did not converge: {res.message}")
    return Platt(float(res.x[0]), float(res.x[1]))

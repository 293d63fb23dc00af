"""The month-by-month simulation of the book's risk process (synth/risk.py) with its ground
truth (synth/expected_pd.py): its own module because the expected PD reads the risk process's
book, and the risk process must not import it back."""
from __future__ import annotations

import numpy as np

from synth import expected_pd, risk
from synth.calendar import MonthGrid
from synth.firms import Firms, stream


def simulate(seed: int, firms: Firms, grid: MonthGrid, loans: risk.Originations,
             can_show_power: np.ndarray, can_show_headcount: np.ndarray,
             params: risk.RiskParams = risk.RiskParams(), plain_truth: bool = False) -> risk.RiskPath:
    """Month by month (vectorised over firms): distress, driver onsets, hazard, arrears draws.
    Drops need a visible baseline: no power drop without a power account, no headcount decline
    below three insured staff. The true PD comes from expected_pd.expected_pd; `plain_truth` computes
    the same numbers the slow, plain way (risk._expected_pd), for the tests."""
    rng = stream(seed, "risk")
    p = params
    n, T, B = firms.n, grid.burn_in + grid.months, grid.burn_in
    book = risk._Book(rng, firms, T, p)
    allowed = {"sales_collapse": np.ones(n, bool), "power_drop": can_show_power,
               "headcount_decline": can_show_headcount}
    hazard = np.zeros((n, T), np.float32)
    pd_12m = np.zeros((n, T), np.float32)
    dominant = np.zeros((n, T), np.int8)
    truth_rng = stream(seed, "truth")
    groups = expected_pd.Groups.of(firms.controller)
    first_month = loans.first_month

    def borrowing(w):
        return first_month <= grid.first + w

    for j in range(T):
        w = j - B
        age = grid.first + w - firms.established_month
        exists = age >= 0
        book.step_drivers(rng.random((n, 8)), j, w, age, exists, allowed)
        c = book.contributions(j, w)
        h = book.hazard(c, age)
        hazard[:, j] = h
        # the largest contribution as float32 (as the month's contributions were once kept)
        c32 = c.astype(np.float32)
        dominant[:, j] = np.where(c32.max(axis=1) > 0, c32.argmax(axis=1), -1)
        if w >= 0:
            if plain_truth:
                pd_12m[:, j] = risk._expected_pd(book, truth_rng, h, j, w, age, allowed, borrowing,
                                            params.truth_paths)
            else:
                pd_12m[:, j] = expected_pd.expected_pd(book, truth_rng, h, j, w, age, allowed, borrowing,
                                                 params.truth_paths, groups)

        # Arrears start in month w+1 with probability h. In the burn-in a firm that would have
        # defaulted is replaced by a fresh one (the window starts with a performing book).
        draw = exists & borrowing(w) & (book.arrears == risk.NEVER) & (rng.random(n) < h)
        if w >= -1:
            book.arrears[draw] = w + 1
        else:
            book.replace(draw, j)

    return risk.RiskPath(burn_in=B, hazard=hazard, pd_12m=pd_12m, dominant=dominant,
                    onset=book.onset, depth=book.depth,
                    tax_arrears=book.tax[:, :T], events={e: v[:, :T] for e, v in book.events.items()},
                    arrears_start=book.arrears)

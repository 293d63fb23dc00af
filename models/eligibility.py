"""Which firms the model scores: the eligibility rule, stated once.

A firm already 90+ days past due (`in_default`) gets grade D; a firm with less than
`MIN_HISTORY_MONTHS` of feed history gets the cold-start rules (models/rules.py); every other firm
is scored by the model. Training learns from the same population (plus a label), the drift
baseline is taken over it, and the nightly job, validation and the Python API route by it.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MIN_HISTORY_MONTHS = 6     # months of feed history below which the cold-start rules score

MODEL, RULES, IN_DEFAULT = "model", "rules", "in_default"      # score_source of each route


def model_eligible(in_default, months_history, min_history: int = MIN_HISTORY_MONTHS):
    """Element-wise: not in default and at least `min_history` months of history (numpy arrays
    or pandas Series)."""
    return ~in_default & (months_history >= min_history)


def route(table: pa.Table, min_history: int = MIN_HISTORY_MONTHS) -> dict[str, pa.Table]:
    """A feature table split into {route: firms}, only the non-empty routes, in the order
    in default, rules, model."""
    in_default = table.column("in_default").to_numpy(zero_copy_only=False)
    thin = pc.less(table.column("months_history"), min_history).to_numpy(
        zero_copy_only=False) & ~in_default
    model = ~in_default & ~thin
    masks = ((IN_DEFAULT, in_default), (RULES, thin), (MODEL, model))
    # a route that takes every firm (one firm scored on demand) keeps the table: a filter of
    # ~100 columns costs ~0.6 ms
    return {name: table if np.all(mask) else table.filter(mask)
            for name, mask in masks if np.any(mask)}

"""A book's answer key, when it carries one: `<feeds>/_ground_truth/*.parquet`, one row per firm
and month-end with the true 12-month PD (`true_pd_12m`). The synthetic generator (synth/) writes
it; a real bank's feeds have none. Never a feature: the trainer and validation only compare the
model with it (oracle AUC, mean true PD per grade) when it is there.
"""
from __future__ import annotations

import os

import pandas as pd
import pyarrow.parquet as pq

GROUND_TRUTH_DIR = "_ground_truth"


def read(feeds_dir: str) -> pd.DataFrame | None:
    """enterprise_id, as_of_date, true_pd_12m of the book's answer key; None without one."""
    path = os.path.join(feeds_dir, GROUND_TRUTH_DIR)
    if not os.path.isdir(path):
        return None
    return pq.read_table(path, columns=["enterprise_id", "as_of_date", "true_pd_12m"]).to_pandas()

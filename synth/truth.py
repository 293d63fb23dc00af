"""The generator's answer key: what it injected, which no production module may know.

`<out>/_ground_truth/ground_truth.parquet` (models/ground_truth.py names the folder and reads it
where a book has one) holds, per firm and month-end, the true 12-month PD and the dominant
injected driver; DRIVER_FAMILY maps each driver to the feature family (transforms/catalog.py)
that should explain it.
"""
from __future__ import annotations

import pyarrow as pa

from models.ground_truth import GROUND_TRUTH_DIR  # noqa: F401  (the folder, named once)

GROUND_TRUTH_SCHEMA = pa.schema([pa.field(n, t, metadata={"description": d}) for n, t, d in (
    ("enterprise_id", pa.string(), "Firm id"),
    ("as_of_date", pa.date32(), "Month-end date the truth refers to"),
    ("true_pd_12m", pa.float64(), "The generator's 12-month default probability for the firm at this date"),
    ("dominant_driver", pa.string(), "Largest injected risk driver at this date (null if none active)"),
)])
# Injected drivers and the feature family (transforms.catalog) that should explain each.
DRIVER_FAMILY = {
    "sales_collapse": "sales",
    "tax_arrears": "tax_compliance",
    "power_drop": "power",
    "headcount_decline": "headcount",
    "related_arrears": "related_party",
    "legal_rep_churn": "governance",
    "litigation": "litigation",
}

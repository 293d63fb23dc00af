"""Building blocks of the synthetic feed generator (`synth/generate.py`, `smescore generate`).

calendar  month grid, Chinese New Year, daily activity and seasonal profiles
firms     firmographics, controller groups, counterparties, ids
risk      named risk drivers, the monthly default hazard, defaults, ground truth
series    monthly firm x month series (sales, power, headcount, filing behaviour)
tables    Arrow tables for the small feeds
invoices  the big feed, month by month
oracle    the oracle AUC and default rate of the ground truth
"""

# Before anything here loads pyarrow: Arrow allocator settings (smescore/__init__.py).
import smescore  # noqa: F401

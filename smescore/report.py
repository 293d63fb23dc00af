"""The short run summary that `make demo` and `smescore score --summary` print."""
from __future__ import annotations

import datetime as dt

from smescore.warehouse import Warehouse

GRADES_SQL = """
SELECT grade, COUNT(*) AS n_firms, AVG(pd) AS mean_pd, MIN(score) AS min_score, MAX(score) AS max_score
FROM scores WHERE as_of_date = ? GROUP BY grade
ORDER BY CASE WHEN grade = 'D' THEN 99 ELSE CAST(grade AS INTEGER) END
"""
DRIVERS_SQL = """
WITH r AS (SELECT UNNEST(reasons) AS reason FROM scores WHERE as_of_date = ?)
SELECT reason.feature AS feature, COUNT(*) AS firms, ROUND(SUM(reason.points), 1) AS points_taken
FROM r GROUP BY reason.feature ORDER BY firms DESC, feature LIMIT 8
"""
EXAMPLE_SQL = """
SELECT enterprise_id, score, grade, reasons[1].text_en AS first_reason, reasons[1].text_zh AS 首要原因
FROM scores WHERE as_of_date = ? AND score_source = 'model' ORDER BY score, enterprise_id LIMIT 3
"""


def run_summary(warehouse: str, as_of: dt.date) -> str:
    wh = Warehouse(warehouse)
    grades = wh.query(GRADES_SQL, [as_of]).to_pandas()
    drivers = wh.query(DRIVERS_SQL, [as_of]).to_pandas()
    examples = wh.query(EXAMPLE_SQL, [as_of]).to_pandas()
    lines = [f"Portfolio as of {as_of}: {int(grades.n_firms.sum()):,} firms scored", "",
             "Grade distribution (1 best .. 10 worst, D = in default):",
             grades.to_string(index=False, float_format=lambda v: f"{v:.4f}"), "",
             "Top risk drivers (firms where the feature is among the reasons):",
             drivers.to_string(index=False), "",
             "Riskiest model-scored firms:", examples.to_string(index=False), "",
             f"Warehouse: {warehouse}",
             f'Query it:  .venv/bin/smescore query --warehouse {warehouse} '
             '"SELECT * FROM grade_distribution"']
    return "\n".join(lines)

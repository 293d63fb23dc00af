"""What the run report shows, read from the risk tables (aggregated in SQL) and the model card.

Every query is aggregated in the database (DuckDB, or BigQuery through the same SQL), so the
report costs the same for 1,000 firms or 1,000,000: the score histogram comes back as counts per integer score (at most 551 rows).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Optional

import pandas as pd

from models.baseline import SCORE_EDGES
from models.registry import Registry
from smescore.warehouse import reader
from transforms import catalog

RUN_SQL = """SELECT * FROM runs WHERE as_of_date = ? AND status = 'succeeded'
ORDER BY finished_at DESC, run_id LIMIT 1"""
SCORE_COUNTS_SQL = """SELECT score, COUNT(*) AS n FROM scores
WHERE as_of_date = ? AND score_source = 'model' GROUP BY score"""
PREVIOUS_SQL = "SELECT MAX(as_of_date) AS d FROM scores WHERE as_of_date < ?"
GRADES_SQL = """SELECT as_of_date, grade, COUNT(*) AS n FROM scores
WHERE as_of_date IN (?, ?) GROUP BY as_of_date, grade"""
SOURCES_SQL = """SELECT score_source, COUNT(*) AS n FROM scores WHERE as_of_date = ?
GROUP BY score_source ORDER BY score_source"""
DRIFT_SQL = """SELECT feature, segment, metric, value, warn_threshold, threshold, status FROM drift
WHERE as_of_date = ? AND run_id = ? AND model_version = ? ORDER BY metric, feature, segment"""
# mean_points summed in whole cents (reason points have 2 decimals): a parallel AVG of floats adds
# in any order, which changed the last digit, and the same rows must give the same page.
DRIVERS_SQL = """
WITH r AS (SELECT s.enterprise_id, u.reason.feature AS feature, u.reason.points AS points
           FROM scores AS s CROSS JOIN UNNEST(s.reasons) AS u(reason) WHERE s.as_of_date = ?)
SELECT feature, COUNT(DISTINCT enterprise_id) AS n_firms,
       COUNT(DISTINCT enterprise_id) / (SELECT COUNT(*) FROM scores WHERE as_of_date = ?)
           AS share_of_firms,
       SUM(ROUND(points * 100)) / COUNT(*) / 100 AS mean_points
FROM r GROUP BY feature ORDER BY n_firms DESC, mean_points, feature LIMIT ?"""
CHALLENGER_SQL = """SELECT * FROM challenger_comparison WHERE as_of_date = ? AND run_id = ?
ORDER BY challenger_version, metric, from_grade, to_grade"""
BACKTEST_DATE_SQL = "SELECT MAX(as_of_date) AS d FROM performance WHERE as_of_date <= ?"
PERFORMANCE_SQL = """SELECT * FROM performance WHERE as_of_date = ?
ORDER BY model_version, segment_type, segment"""
ROC_SQL = """SELECT model_version, false_positive_rate, true_positive_rate FROM backtest_roc
WHERE as_of_date = ? ORDER BY model_version, false_positive_rate, true_positive_rate"""
TOP_DRIVERS = 10


class NoPublishedRun(LookupError):
    pass


@dataclasses.dataclass
class ReportData:
    as_of: dt.date
    run: dict
    score_counts: pd.DataFrame          # score, n
    grades: pd.DataFrame                # as_of_date, grade, n (this run and the previous one)
    previous_as_of: Optional[dt.date]
    sources: pd.DataFrame               # score_source, n
    drift: pd.DataFrame
    drivers: pd.DataFrame
    challenger: pd.DataFrame
    backtest_as_of: Optional[dt.date]
    performance: pd.DataFrame
    roc: pd.DataFrame
    baseline_score: Optional[dict]      # the card's baseline score bands (edges, shares)
    training_sample_score: Optional[dict]   # the same bands over the training sample
    training_distribution: Optional[dict]   # the card's per-input training distribution (ranges)
    card_auc: Optional[float]
    card_note: str


def model_card(registry: Optional[str], version: str) -> tuple[Optional[dict], str]:
    """The card, or None and why not (the report still renders, without the baseline)."""
    if not registry:
        return None, "No model registry given: the training baseline is not shown."
    try:
        return Registry(registry).model_card(version), ""
    except FileNotFoundError:
        return None, f"Model card of {version} not found in {registry}: no training baseline."


def load(warehouse, as_of: dt.date, registry: Optional[str] = None) -> ReportData:
    """`warehouse`: a DuckDB file's path, or any reader of the risk tables (reader())."""
    wh = reader(warehouse)
    if not wh.has_table("runs"):
        raise FileNotFoundError(f"no risk tables in {wh!r}")

    def frame(sql, *params):
        return wh.query(sql, list(params)).to_pandas()

    runs = wh.query(RUN_SQL, [as_of]).to_pylist()
    if not runs:
        raise NoPublishedRun(f"no successful run as of {as_of} in {wh!r}: nothing to report")
    run = runs[0]
    previous = frame(PREVIOUS_SQL, as_of)["d"].iloc[0]
    previous = None if pd.isna(previous) else previous
    drivers = frame(DRIVERS_SQL, as_of, as_of, TOP_DRIVERS)
    drivers["description"] = [catalog.BY_NAME[f].desc_en if f in catalog.BY_NAME else ""
                              for f in drivers.feature]
    backtest_as_of = frame(BACKTEST_DATE_SQL, as_of)["d"].iloc[0]
    backtest_as_of = None if pd.isna(backtest_as_of) else backtest_as_of
    card, note = model_card(registry, run["model_version"])
    baseline = (card or {}).get("baseline", {})
    return ReportData(
        as_of=as_of, run=run, score_counts=frame(SCORE_COUNTS_SQL, as_of),
        grades=frame(GRADES_SQL, as_of, previous or as_of), previous_as_of=previous,
        sources=frame(SOURCES_SQL, as_of),
        drift=frame(DRIFT_SQL, as_of, run["run_id"], run["model_version"]),
        drivers=drivers, challenger=frame(CHALLENGER_SQL, as_of, run["run_id"]),
        backtest_as_of=backtest_as_of,
        performance=frame(PERFORMANCE_SQL, backtest_as_of) if backtest_as_of else pd.DataFrame(),
        roc=frame(ROC_SQL, backtest_as_of) if backtest_as_of else pd.DataFrame(),
        baseline_score=baseline.get("score"),
        training_sample_score=baseline.get("training_sample", {}).get("score"),
        training_distribution=(card or {}).get("training_distribution"),
        card_auc=(card or {}).get("metrics", {}).get("test", {}).get("auc"),
        card_note=note)

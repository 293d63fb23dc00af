"""Drift of every run against the training baseline stored with the model version, in one Beam
combiner, so it scales with the portfolio: workers count firms into the baseline's fixed bins, only
the counts travel.

Three metrics per model feature, one for the score (`feature = '__score__'`) over the book and
within every industry with at least `min_segment_firms` firms now and in the baseline (a shift in
one industry's data barely moves the book's score distribution, but it moves that industry's):
- `psi`: population stability index over the baseline's bins (numeric: the training deciles plus
  a missing bin; categorical: the training categories plus one bin for unseen ones),
  sum((a - e) * ln(a / e)) with both shares floored at PSI_FLOOR so an empty bin stays finite;
- `missing_rate_change`: missing share now minus at training (numeric features);
- `attribution_drift`: (mean |points| now - at training) / max(at training, 1 point).
Statuses: |value| above warn_threshold is 'warn', above threshold 'alert' (smescore/config/drift.json).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.scorecard import ConfigError, ScoreScale, read_json_config
from smescore import tables
from transforms import catalog

PSI_FLOOR = 1e-4
POINTS_FLOOR = 1.0


@dataclasses.dataclass(frozen=True)
class Thresholds:
    warn: float
    alert: float

    def status(self, value: float) -> str:
        v = abs(value)
        return "alert" if v > self.alert else "warn" if v > self.warn else "ok"


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    psi: Thresholds
    missing_rate_change: Thresholds
    attribution_drift: Thresholds
    min_segment_firms: int = 300

    @classmethod
    def load(cls, path: Optional[str] = None) -> "DriftConfig":
        raw = read_json_config(path or None, "drift.json")
        out = {}
        for metric in tables.DRIFT_METRICS:
            t = raw.get(metric)
            if not isinstance(t, dict) or set(t) != {"warn", "alert"}:
                raise ConfigError(f"drift config: {metric!r} needs exactly 'warn' and 'alert', got {t!r}")
            warn, alert = float(t["warn"]), float(t["alert"])
            if not 0 <= warn <= alert:
                raise ConfigError(f"drift config: {metric!r} needs 0 <= warn <= alert, got {t}")
            out[metric] = Thresholds(warn, alert)
        unknown = set(raw) - set(tables.DRIFT_METRICS) - {"min_segment_firms"}
        if unknown:
            raise ConfigError(f"drift config: unknown keys {sorted(unknown)}")
        min_firms = raw.get("min_segment_firms", 300)
        if not isinstance(min_firms, int) or min_firms < 1:
            raise ConfigError(f"drift config: min_segment_firms must be a positive integer, "
                             f"got {min_firms!r}")
        return cls(**out, min_segment_firms=min_firms)


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """PSI between two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, np.float64), floor)
    a = np.maximum(np.asarray(actual, np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))


# ----------------------------------------------------------------------------- binning

def numeric_counts(values: np.ndarray, edges) -> np.ndarray:
    """Counts per baseline bin (bin i holds [edge[i-1], edge[i])) and, last, the missing count."""
    v = np.asarray(values, np.float64)
    present = np.isfinite(v)
    counts = np.bincount(np.searchsorted(np.asarray(edges, np.float64), v[present], side="right"),
                         minlength=len(edges) + 1)
    return np.append(counts, int((~present).sum())).astype(np.int64)


def categorical_counts(values, categories) -> np.ndarray:
    """Counts per baseline category ('' is missing, as at training) and, last, unseen ones."""
    index = {c: i for i, c in enumerate(categories)}
    codes = np.fromiter((index.get(v, len(categories)) for v in values), np.int64, len(values))
    return np.bincount(codes, minlength=len(categories) + 1).astype(np.int64)


def expected_shares(bins: dict) -> np.ndarray:
    """The baseline's shares in the bin order of the counts above."""
    if bins["type"] == "numeric":
        return np.append(np.asarray(bins["shares"], np.float64), bins["missing_share"])
    return np.append(np.asarray(bins["shares"], np.float64), bins.get("other_share", 0.0))


def _feature_values(table: pa.Table, name: str):
    col = table.column(name)
    if catalog.BY_NAME[name].is_categorical:
        return pc.fill_null(col.cast(pa.string()), "").to_pylist()
    return pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)


# ----------------------------------------------------------------------------- the combiner

def segment_key(industry: str) -> str:
    return f"industry={industry}"


class DriftAccumulator:
    """Integer counts per bin, and per-table sums of |points| (added exactly at the end with
    math.fsum, so the result does not depend on how bundles were merged)."""

    def __init__(self):
        self.n = 0
        self.counts: dict[str, np.ndarray] = {}
        self.abs_points: list[np.ndarray] = []


class DriftCombineFn(beam.CombineFn):
    """Inference output tables of one model (features + logit + phi) -> drift counts."""

    def __init__(self, baseline: dict, scale: ScoreScale):
        self.baseline = baseline
        self.scale = scale

    def create_accumulator(self):
        return DriftAccumulator()

    def add_input(self, acc, table):
        acc.n += table.num_rows
        for name in catalog.NAMES:
            bins = self.baseline["features"][name]
            values = _feature_values(table, name)
            c = (numeric_counts(values, bins["edges"]) if bins["type"] == "numeric"
                 else categorical_counts(values, bins["categories"]))
            self._add(acc, name, c)
        score = self.scale.score_from_logit(table.column("logit").to_numpy())
        edges = self.baseline["score"]["edges"]
        self._add(acc, tables.SCORE_FEATURE, numeric_counts(score, edges))
        industry = np.asarray(_feature_values(table, "ent_industry"), dtype=object)
        for ind in sorted(set(industry)):
            self._add(acc, segment_key(ind), numeric_counts(score[industry == ind], edges))
        phi = np.asarray(table.column("phi").combine_chunks().flatten().to_numpy(
            zero_copy_only=False), np.float64).reshape(table.num_rows, len(catalog.NAMES))
        acc.abs_points.append(np.abs(self.scale.points_from_phi(phi)).sum(axis=0))
        return acc

    @staticmethod
    def _add(acc, key, counts):
        acc.counts[key] = acc.counts[key] + counts if key in acc.counts else counts

    def merge_accumulators(self, accumulators):
        out = DriftAccumulator()
        for acc in accumulators:
            out.n += acc.n
            for k, c in acc.counts.items():
                out.counts[k] = out.counts[k] + c if k in out.counts else c.copy()
            out.abs_points.extend(acc.abs_points)
        return out

    def extract_output(self, acc):
        mean_abs = None
        if acc.n:
            stacked = np.vstack(acc.abs_points)
            mean_abs = np.array([math.fsum(stacked[:, j]) for j in range(stacked.shape[1])]) / acc.n
        return {"n": acc.n, "counts": acc.counts, "mean_abs_points": mean_abs}


def drift_rows(stats: dict, baseline: dict, cfg: DriftConfig, as_of, model_version: str,
               run_id: str) -> list[dict]:
    """The drift table's rows from the combined counts (empty when the model scored no firm)."""
    n = stats["n"]
    if not n:
        return []
    rows = []

    def row(feature, metric, value, segment="all"):
        t = getattr(cfg, metric)
        rows.append({"as_of_date": as_of, "model_version": model_version, "feature": feature,
                     "segment": segment, "metric": metric, "value": float(value),
                     "warn_threshold": t.warn, "threshold": t.alert, "status": t.status(value),
                     "run_id": run_id})

    score_bins = baseline["score"]
    row(tables.SCORE_FEATURE, "psi",
        psi(expected_shares(score_bins), stats["counts"][tables.SCORE_FEATURE] / n))
    for industry, bins in sorted(baseline.get("score_by_industry", {}).items()):
        counts = stats["counts"].get(segment_key(industry))
        if counts is None or min(counts.sum(), bins["n"]) < cfg.min_segment_firms:
            continue
        row(tables.SCORE_FEATURE, "psi", psi(expected_shares(bins), counts / counts.sum()),
            segment_key(industry))
    base_points = baseline.get("mean_abs_points", {})
    for j, name in enumerate(catalog.NAMES):
        bins = baseline["features"][name]
        counts = stats["counts"][name]
        row(name, "psi", psi(expected_shares(bins), counts / n))
        if bins["type"] == "numeric":
            row(name, "missing_rate_change", counts[-1] / n - bins["missing_share"])
        if name in base_points:
            base = base_points[name]
            row(name, "attribution_drift", (stats["mean_abs_points"][j] - base) / max(base, POINTS_FLOOR))
    return sorted(rows, key=lambda r: (r["metric"], r["feature"], r["segment"]))


@beam.ptransform_fn
def MeasureDrift(inferred, baseline: dict, scale: ScoreScale, cfg: DriftConfig, as_of,
                 model_version: str, run_id: str):
    """PCollection of one model's inference output tables -> one list of drift rows."""
    return (inferred
            | "CountIntoBaselineBins" >> beam.CombineGlobally(DriftCombineFn(baseline, scale))
            | "DriftRows" >> beam.Map(drift_rows, baseline, cfg, as_of, model_version, run_id))

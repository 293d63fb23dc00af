"""Drift of every run against the training references stored with the model version, in one Beam
combiner, so it scales with the portfolio: workers count firms into the references' fixed bins, only
the counts travel.

Two references (both in the model card, README "Monitoring" says why both):
- the book as of the training date, scored by the exported model (`card["baseline"]`): what the
  portfolio looked like when the model was built; today's book moves away from it when the data
  or the portfolio changes;
- the training sample itself (`card["baseline"]["training_sample"]` and
  `card["training_distribution"]`): what the network saw; a value it never saw is extrapolation,
  however stable the book is.

Metrics per model feature and for the score (`feature = '__score__'`), segment 'all' unless said:
- `psi`: population stability index against the training-date book's bins (numeric: its deciles
  plus a missing bin; categorical: its categories plus one bin for unseen ones),
  sum((a - e) * ln(a / e)) with both shares floored at PSI_FLOOR so an empty bin stays finite;
  the score's also within every industry with at least `min_segment_firms` firms now and in the
  baseline (a shift in one industry's data barely moves the book's score distribution, but it
  moves that industry's);
- `psi_training_sample`: the same PSI against the training sample's bins;
- `out_of_range` (numeric features): share of model-scored firms whose present value lies outside
  the training sample's [min, max] (a missing value is not out of range);
- `missing_rate_change`: missing share now minus at training (numeric features);
- `attribution_drift`: (mean |points| now - at training) / max(at training, 1 point).
Statuses: |value| above warn_threshold is 'warn', above threshold 'alert' (thresholds in
smescore/config/drift.json; `psi_training_sample` takes psi's unless the config gives its own).
A model card of an older trainer has no training sample references: its runs have no
`psi_training_sample` or `out_of_range` rows (Reference.warning says so once).
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
TRAINING_SAMPLE, OUT_OF_RANGE = "psi_training_sample", "out_of_range"   # accumulator key prefixes


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
    psi_training_sample: Thresholds
    out_of_range: Thresholds
    missing_rate_change: Thresholds
    attribution_drift: Thresholds
    min_segment_firms: int = 300

    @classmethod
    def load(cls, path: Optional[str] = None) -> "DriftConfig":
        raw = read_json_config(path or None, "drift.json")
        out = {}
        for metric in tables.DRIFT_METRICS:
            t = raw.get(metric)
            if metric == "psi_training_sample" and t is None:    # the same scale as psi
                t = raw.get("psi")
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


def out_of_range_count(values: np.ndarray, low: Optional[float],
                       high: Optional[float]) -> np.ndarray:
    """[number of present values outside [low, high]]; with no range (the training sample never had
    a value) every present value is outside it."""
    v = np.asarray(values, np.float64)
    present = v[np.isfinite(v)]
    if low is None or high is None:
        return np.array([len(present)], np.int64)
    return np.array([int(np.count_nonzero((present < low) | (present > high)))], np.int64)


def categorical_counts(values, categories) -> np.ndarray:
    """Counts per baseline category ('' is missing, as at training) and, last, unseen ones."""
    index = {c: i for i, c in enumerate(categories)}
    codes = np.fromiter((index.get(v, len(categories)) for v in values), np.int64, len(values))
    return np.bincount(codes, minlength=len(categories) + 1).astype(np.int64)


def bin_counts(values, bins: dict) -> np.ndarray:
    return (numeric_counts(values, bins["edges"]) if bins["type"] == "numeric"
            else categorical_counts(values, bins["categories"]))


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


# ----------------------------------------------------------------------------- the references

@dataclasses.dataclass(frozen=True)
class Reference:
    """What a run's drift is measured against, read from the champion's model card once.

    book: bins over the book as of the training date (card["baseline"]): 'psi' and the rest;
    training_sample: the same bins over the training sample (card["baseline"]["training_sample"]):
        'psi_training_sample', or None for a card of an older trainer;
    ranges: each numeric input's (min, max) in the training sample (card["training_distribution"]):
        'out_of_range', or None for a card of an older trainer."""
    book: dict
    training_sample: Optional[dict] = None
    ranges: Optional[dict] = None

    @classmethod
    def from_card(cls, card: dict) -> "Reference":
        """Raises ValueError when a field is there but does not cover the catalogue (a damaged card
        must not silently drop a feature's rows)."""
        book = card["baseline"]
        sample = book.get("training_sample")
        if sample is not None:
            lacking = [n for n in catalog.NAMES if n not in sample.get("features", {})]
            if lacking or "score" not in sample:
                raise ValueError(f"baseline.training_sample has no bins for "
                                 f"{lacking + ([] if 'score' in sample else ['the score'])}")
        ranges = None
        distribution = card.get("training_distribution")
        if distribution is not None:
            numeric = [f.name for f in catalog.FEATURES if not f.is_categorical]
            lacking = [n for n in numeric if n not in distribution]
            if lacking:
                raise ValueError(f"training_distribution has no range for {lacking}")
            # an input without spread in training (no value, or one) is zeroed by the TFT graph:
            # the network never reads it, so no value of it can be out of the model's range
            ranges = {n: (distribution[n]["min"], distribution[n]["max"]) for n in numeric
                      if distribution[n]["min"] is not None
                      and distribution[n]["max"] > distribution[n]["min"]}
        return cls({k: v for k, v in book.items() if k != "training_sample"}, sample, ranges)

    def warning(self, version: str) -> Optional[str]:
        """One line when the card lacks a training sample reference (an older trainer)."""
        unmeasured = []
        if self.training_sample is None:
            unmeasured.append("psi_training_sample (no baseline.training_sample)")
        if self.ranges is None:
            unmeasured.append("out_of_range (no training_distribution)")
        if not unmeasured:
            return None
        return (f"model card of {version} predates the training sample references: drift "
                f"{' and '.join(unmeasured)} not measured; retrain to measure them")


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

    def __init__(self, reference: Reference, scale: ScoreScale):
        self.reference = reference
        self.scale = scale

    def create_accumulator(self):
        return DriftAccumulator()

    def add_input(self, acc, table):
        ref = self.reference
        acc.n += table.num_rows
        for name in catalog.NAMES:
            values = _feature_values(table, name)
            self._add(acc, name, bin_counts(values, ref.book["features"][name]))
            if ref.training_sample is not None:
                self._add(acc, (TRAINING_SAMPLE, name),
                          bin_counts(values, ref.training_sample["features"][name]))
            if ref.ranges is not None and name in ref.ranges:
                self._add(acc, (OUT_OF_RANGE, name), out_of_range_count(values, *ref.ranges[name]))
        score = self.scale.score_from_logit(table.column("logit").to_numpy())
        edges = ref.book["score"]["edges"]
        self._add(acc, tables.SCORE_FEATURE, numeric_counts(score, edges))
        if ref.training_sample is not None:
            self._add(acc, (TRAINING_SAMPLE, tables.SCORE_FEATURE),
                      numeric_counts(score, ref.training_sample["score"]["edges"]))
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


def drift_rows(stats: dict, reference: Reference, cfg: DriftConfig, as_of, model_version: str,
               run_id: str) -> list[dict]:
    """The drift table's rows from the combined counts (empty when the model scored no firm)."""
    n = stats["n"]
    if not n:
        return []
    rows, counts = [], stats["counts"]
    baseline, sample = reference.book, reference.training_sample

    def row(feature, metric, value, segment="all"):
        t = getattr(cfg, metric)
        rows.append({"as_of_date": as_of, "model_version": model_version, "feature": feature,
                     "segment": segment, "metric": metric, "value": float(value),
                     "warn_threshold": t.warn, "threshold": t.alert, "status": t.status(value),
                     "run_id": run_id})

    row(tables.SCORE_FEATURE, "psi",
        psi(expected_shares(baseline["score"]), counts[tables.SCORE_FEATURE] / n))
    if sample is not None:
        row(tables.SCORE_FEATURE, "psi_training_sample", psi(
            expected_shares(sample["score"]), counts[(TRAINING_SAMPLE, tables.SCORE_FEATURE)] / n))
    for industry, bins in sorted(baseline.get("score_by_industry", {}).items()):
        c = counts.get(segment_key(industry))
        if c is None or min(c.sum(), bins["n"]) < cfg.min_segment_firms:
            continue
        row(tables.SCORE_FEATURE, "psi", psi(expected_shares(bins), c / c.sum()),
            segment_key(industry))
    base_points = baseline.get("mean_abs_points", {})
    for j, name in enumerate(catalog.NAMES):
        bins = baseline["features"][name]
        row(name, "psi", psi(expected_shares(bins), counts[name] / n))
        if sample is not None:
            row(name, "psi_training_sample",
                psi(expected_shares(sample["features"][name]), counts[(TRAINING_SAMPLE, name)] / n))
        if (OUT_OF_RANGE, name) in counts:
            row(name, "out_of_range", counts[(OUT_OF_RANGE, name)][0] / n)
        if bins["type"] == "numeric":
            row(name, "missing_rate_change", counts[name][-1] / n - bins["missing_share"])
        if name in base_points:
            base = base_points[name]
            row(name, "attribution_drift", (stats["mean_abs_points"][j] - base) / max(base, POINTS_FLOOR))
    return sorted(rows, key=lambda r: (r["metric"], r["feature"], r["segment"]))


@beam.ptransform_fn
def MeasureDrift(inferred, reference: Reference, scale: ScoreScale, cfg: DriftConfig, as_of,
                 model_version: str, run_id: str):
    """PCollection of one model's inference output tables -> one list of drift rows."""
    return (inferred
            | "CountIntoReferenceBins" >> beam.CombineGlobally(DriftCombineFn(reference, scale))
            | "DriftRows" >> beam.Map(drift_rows, reference, cfg, as_of, model_version, run_id))

"""Reason codes: the features that took the most score points away from a firm, in words.

Input is a points matrix [n_firms, n_features] (`points_i = -factor * phi_i`, see
models.scorecard): negative points are what pulled a firm's score down. A feature may be a reason
only where the firm is worse than the typical firm of the model's training sample (`TypicalFirm`,
from the model card's `training_distribution`):

- a directional numeric feature (catalogue risk_direction != 0) only when the firm's value is
  strictly on the risky side of the training median: a reason that says '0 late filings' or
  'more invoices than most firms' would contradict itself;
- a missing value never: it has no value to state (the missing-data signal lives in count features
  such as pwr_missing_12m / tax_missing_12m);
- direction-0 numeric and categorical features whenever their points are negative and the firm's
  value differs from the typical one: their sentence states both values without claiming more or
  fewer. A firm with the typical value is no different from the typical firm there, so
  'Province of registration: Guangdong (most firms: also Guangdong)' or 'Registered-capital
  changes: 0 (typical: 0)' is no reason (20 of 32,901 reasons on the 10k book said so).

Of those, each firm keeps at most `max_reasons`, most negative first, one per risk family, each
stated with the firm's value beside the typical one in Chinese and English
(transforms.catalog.reason_text).

The ranking is one stable argsort over the whole matrix (ties go to the feature listed first, so
reruns give identical reasons); only the sentence formatting runs per reason. The cold-start rules
(models.rules) produce the same reason dicts through `rank_reasons` and `reason`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from smescore.errors import BadInput
from transforms import catalog

MAX_REASONS = 4
# Less than half a point is below the resolution of the published (integer) score: not worth a
# sentence to the customer or the analyst. Pass min_points=0 to list every negative feature.
MIN_POINTS = 0.5


def rank_reasons(points: np.ndarray, max_reasons: int = MAX_REASONS,
                 min_points: float = MIN_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(columns, keep), both [n_firms, k], k = min(max_reasons, n_features).

    columns[i] are firm i's k most negative columns, most negative first, ties by column order;
    keep[i, r] says columns[i, r] took at least `min_points` away (points <= -min_points and < 0).
    Kept entries always come first in a row."""
    p = _check_points(points)
    if isinstance(max_reasons, bool) or not isinstance(max_reasons, (int, np.integer)) or max_reasons < 0:
        raise ValueError(f"max_reasons must be a whole number >= 0, got {max_reasons!r}")
    if (isinstance(min_points, bool) or not isinstance(min_points, (int, float, np.integer, np.floating))
            or not math.isfinite(min_points) or min_points < 0):
        raise ValueError(f"min_points must be a finite number >= 0, got {min_points!r}")
    k = min(int(max_reasons), p.shape[1])
    columns = np.argsort(p, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(p, columns, axis=1)
    return columns, (top < 0.0) & (top <= -min_points)


def _check_points(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"points must be 2-D [n_firms, n_features], got shape {p.shape}")
    bad = ~np.isfinite(p)
    if bad.any():
        raise ValueError(f"points must be finite; got {int(bad.sum())} non-finite value(s) of {p.size}")
    return p


def plain_value(feature: catalog.Feature, value):
    """A firm's raw value as catalog.render_value expects it: None when missing (NaN of any float
    type, None, or the empty string that stands for a null category), else a Python float or str."""
    if value is None:
        return None
    if feature.is_categorical:
        if isinstance(value, (float, np.floating)) and math.isnan(value):
            return None
        text = str(value)
        return text if text else None
    v = float(value)
    return None if math.isnan(v) else v


@dataclasses.dataclass(frozen=True)
class TypicalFirm:
    """The typical firm of a model version's training sample: the median of each numeric feature,
    the most frequent category of each categorical one (None: the sample never had a value)."""
    version: str
    values: Mapping[str, float | str | None]

    @classmethod
    def from_card(cls, card: Mapping, version: str) -> "TypicalFirm":
        dist = card.get("training_distribution")
        if not isinstance(dist, Mapping):
            raise BadInput(f"model {version}: its model card has no training_distribution (trained "
                           f"before reasons compared firms with the training sample); retrain it "
                           f"with `smescore train`")
        missing = [n for n in catalog.NAMES if n not in dist]
        if missing:
            raise BadInput(f"model {version}: its model card's training_distribution lacks "
                           f"feature(s) {missing}; retrain it with `smescore train`")
        return cls(version, {f.name: dist[f.name].get("mode" if f.is_categorical else "median")
                             for f in catalog.FEATURES})

    def value(self, feature: str):
        if feature not in self.values:
            raise ValueError(f"model {self.version}: no typical value for feature {feature!r}")
        return self.values[feature]


def on_risky_side(feature: catalog.Feature, values, typical_value) -> np.ndarray:
    """The side-of-median rule: True where a directional numeric feature's value is strictly on
    the risky side of the typical (median) value; False for missing values, direction-0 and
    categorical features, and a feature the training sample never had (typical None)."""
    direction = _risky_direction(feature, typical_value)
    if not direction:
        return np.zeros(np.shape(values), bool)
    v = np.asarray(values, np.float64)
    with np.errstate(invalid="ignore"):                  # NaN compares False: never risky
        return v > typical_value if direction > 0 else v < typical_value


def _risky_direction(feature: catalog.Feature, typical_value) -> int:
    """The feature's declared risk direction, or 0 where the side-of-median rule has no risky
    side: categorical and direction-0 features, a typical value the training sample never had."""
    if feature.is_categorical or typical_value is None:
        return 0
    return feature.risk_direction


def may_be_reason(values, feature_names: Sequence[str], typical: TypicalFirm,
                  n_firms: int | None = None) -> np.ndarray:
    """[n_firms, n_features] bool: where the feature may be a reason (module docstring). `values`
    as for `reasons_for`."""
    feats = _features(feature_names)
    if n_firms is None:
        n_firms = (len(next(iter(values.values()))) if isinstance(values, Mapping) and values
                   else np.shape(values)[0])
    cols = _value_columns(values, feature_names, n_firms)
    typical_of = [typical.value(f.name) for f in feats]
    out = np.zeros((n_firms, len(feats)), bool)
    numeric = []
    for j, f in enumerate(feats):
        if f.is_categorical:
            out[:, j] = [(v := plain_value(f, x)) is not None and v != typical_of[j] for x in cols[j]]
        else:
            numeric.append(j)
    if numeric:
        # the numeric features as one matrix: on_risky_side's comparisons, or present and not
        # the typical value for direction 0, without numpy's per-call cost a feature (one firm
        # scored on demand)
        v = np.column_stack([np.asarray(cols[j], np.float64) for j in numeric])
        direction = np.array([_risky_direction(feats[j], typical_of[j]) for j in numeric])
        typical_values = np.array([np.nan if typical_of[j] is None else typical_of[j]
                                   for j in numeric], np.float64)
        with np.errstate(invalid="ignore"):              # NaN compares False: never risky
            risky = np.where(direction > 0, v > typical_values, v < typical_values)
            # in float32, the features' own precision; a NaN typical value: every value differs
            different = np.isfinite(v) & (v.astype(np.float32) != typical_values.astype(np.float32))
        free = np.array([feats[j].risk_direction == 0 for j in numeric])
        out[:, numeric] = np.where(free, different, risky)
    return out


def sentences(feature: catalog.Feature, value, typical_value) -> tuple[str, str]:
    """(zh, en) of a reason: the firm's value (plain_value) beside the typical one, saying
    'worse than most firms' exactly where the side-of-median rule holds."""
    return catalog.reason_text(feature, value, typical_value,
                               _on_risky_side_one(feature, value, typical_value))


def _on_risky_side_one(feature: catalog.Feature, value, typical_value) -> bool:
    """on_risky_side for one plain value (a float, or None when missing), without numpy's
    per-call cost: the same comparisons of the same float64 numbers."""
    direction = _risky_direction(feature, typical_value)
    if value is None or not direction:
        return False
    return value > typical_value if direction > 0 else value < typical_value


def reason(code: str, feature: str, points: float, text_zh: str, text_en: str) -> dict:
    """One reason as published in the `reasons` column (points rounded to 2 decimals)."""
    return {"code": code, "feature": feature, "points": round(float(points), 2),
            "text_zh": text_zh, "text_en": text_en}


def _features(feature_names: Sequence[str]) -> list[catalog.Feature]:
    unknown = [n for n in feature_names if n not in catalog.BY_NAME]
    if unknown:
        raise ValueError(f"feature(s) not in the catalogue: {unknown}")
    return [catalog.BY_NAME[n] for n in feature_names]


def _value_columns(values, feature_names: Sequence[str], n_firms: int) -> list[np.ndarray]:
    """One array [n_firms] per feature, from a dict of columns or a 2-D array aligned with the names."""
    if isinstance(values, Mapping):
        missing = [n for n in feature_names if n not in values]
        if missing:
            raise ValueError(f"values has no column for feature(s) {missing}")
        cols = [np.asarray(values[n]) for n in feature_names]
        wrong = [(n, len(c)) for n, c in zip(feature_names, cols) if c.shape != (n_firms,)]
        if wrong:
            raise ValueError(f"values columns must hold {n_firms} firms; got {wrong}")
        return cols
    arr = np.asarray(values, dtype=object)
    if arr.shape != (n_firms, len(feature_names)):
        raise ValueError(f"values must have shape {(n_firms, len(feature_names))} "
                         f"(firms, features), got {arr.shape}")
    return [arr[:, j] for j in range(arr.shape[1])]


def _value_getter(values, feature_names: Sequence[str], n_firms: int):
    """(firm, column) -> raw value."""
    cols = _value_columns(values, feature_names, n_firms)
    return lambda i, j: cols[j][i]


def best_per_family(points: np.ndarray, feats: Sequence[catalog.Feature]) -> np.ndarray:
    """Points with every feature but the most negative one of its family set to 0, so the four
    reasons name four different things (three arrears measures would say one thing three times,
    and crowd out the reason behind the arrears). Ties go to the feature listed first."""
    families = np.array([f.family for f in feats])
    out = np.zeros_like(points)
    rows = np.arange(points.shape[0])
    for family in dict.fromkeys(families):
        cols = np.flatnonzero(families == family)
        best = cols[np.argmin(points[:, cols], axis=1)]
        out[rows, best] = points[rows, best]
    return out


def reasons_for(points: np.ndarray, values, feature_names: Sequence[str], typical: TypicalFirm,
                max_reasons: int = MAX_REASONS, min_points: float = MIN_POINTS,
                one_per_family: bool = True) -> list[list[dict]]:
    """For each firm, up to `max_reasons` dicts {code, feature, points, text_zh, text_en}: the
    features that may be reasons (`may_be_reason`) with negative points (at least `min_points`
    away), most negative first, at most one per risk family unless `one_per_family` is False.

    values: the firms' raw feature values, a dict name -> array [n_firms] or a 2-D object array
    [n_firms, n_features] in `feature_names` order (NaN / None / '' = missing).
    typical: the typical firm of the model that produced the points."""
    p = _check_points(points)
    feats = _features(feature_names)
    if p.shape[1] != len(feats):
        raise ValueError(f"points has {p.shape[1]} columns for {len(feats)} feature names")
    get = _value_getter(values, feature_names, p.shape[0])
    eligible = np.where(may_be_reason(values, feature_names, typical, p.shape[0]), p, 0.0)
    ranked = best_per_family(eligible, feats) if one_per_family else eligible
    columns, keep = rank_reasons(ranked, max_reasons, min_points)
    out = []
    for i in range(p.shape[0]):
        row = []
        for j in columns[i][keep[i]]:
            f = feats[j]
            zh, en = sentences(f, plain_value(f, get(i, j)), typical.value(f.name))
            row.append(reason(f.code, f.name, p[i, j], zh, en))
        out.append(row)
    return out


def top_drivers(points: np.ndarray, feature_names: Sequence[str], max_reasons: int = MAX_REASONS,
                min_points: float = MIN_POINTS) -> list[dict]:
    """Portfolio view of the reasons, for the run summary: one dict per feature that is a reason
    for at least one firm, most frequent first (then most points taken, then catalogue order):

    feature, code, firms (firms where it is among the reasons), share_of_firms,
    points_taken (sum of its negative points over all firms, reason or not),
    mean_points_as_reason (mean points where it is a reason)."""
    p = _check_points(points)
    feats = _features(feature_names)
    if p.shape[1] != len(feats):
        raise ValueError(f"points has {p.shape[1]} columns for {len(feats)} feature names")
    n, k = p.shape
    columns, keep = rank_reasons(p, max_reasons, min_points)
    chosen = columns[keep]
    firms = np.bincount(chosen, minlength=k)
    as_reason = np.bincount(chosen, weights=np.take_along_axis(p, columns, 1)[keep], minlength=k)
    taken = np.minimum(p, 0.0).sum(axis=0)
    order = sorted(np.flatnonzero(firms), key=lambda j: (-firms[j], taken[j], j))
    return [{"feature": feats[j].name, "code": feats[j].code, "firms": int(firms[j]),
             "share_of_firms": float(firms[j] / n), "points_taken": float(taken[j]),
             "mean_points_as_reason": float(as_reason[j] / firms[j])} for j in order]

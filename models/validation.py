"""`smescore validate --version V`: walk-forward validation of a registry version.

The book is scored at every month-end after the version's last training snapshot, as far as the
feeds go (or at --dates), with the nightly job's own code (beam_jobs/walk_forward.py): the same
point-in-time features, routing (in default / cold-start rules / model), SavedModel signature and
score rows. Validation measures the firms the model scored:

- discrimination where the 12 months after a date are observed: AUC, KS and Gini per date and
  pooled, with seeded bootstrap 95% percentile intervals (pooled: whole firms are resampled, since
  a firm's monthly snapshots are near copies);
- calibration: mean PD against the observed default rate and, where the feeds carry the generator's
  ground truth, against the mean true PD (and Spearman of PD with true PD); per grade of the master
  scale, the Jeffreys test (ECB): posterior Beta(d + 1/2, n - d + 1/2) of the default rate, one-sided
  p-value = its CDF at the grade's mean PD (small: the grade under-predicts). The grades of one
  date are one family, tested at min_jeffreys_p_value with Holm's step-down (`holm_rejections`):
  nine grades each tested at 5% flag a perfectly calibrated book at a date 37% of the time, and
  on the 10k book the generator's true PD itself failed 2 of the 36 grade tests;
- extrapolation: per numeric input, the share of firms outside the training sample's [min, max];
- monotonicity on the exported SavedModel: each input with a declared risk direction moved one
  training standard deviation towards risk, for a seeded sample of the last date's firms; a PD
  that falls by more than the tolerance is a violation;
- mean |points| per feature, and the challengers of the model card beside the model.

Thresholds: smescore/config/validation.json. The outcome, `validation.json` in the version folder,
lists every check with its value, threshold and verdict; `smescore promote` reads its `passed`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Callable, Mapping, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from models import ground_truth, metrics
from models.scorecard import ConfigError, check_keys, config_fingerprint, finite_number, \
    read_json_config
from models.train import add_months, month_end
from transforms import catalog

CONFIG_RESOURCE = "validation.json"
REPORT_NAME = "validation-report.html"
ROWS_NAME = "validation_rows.parquet"   # the firm-dates every figure comes from, for audits
CHALLENGERS = (("logistic regression", "challenger_logistic_regression"),
               ("monotone gradient boosting", "challenger_monotone_gbm"))
UNCONSTRAINED = "unconstrained_network"


class ValidationError(ValueError):
    """Validation cannot run on what it was given (version, feeds, dates, config)."""


# ----------------------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    min_auc: float
    min_auc_margin_over_challengers: float
    max_auc_gap_to_unconstrained_network: float
    max_mean_pd_to_true_pd_deviation: float
    min_spearman_pd_true_pd: float
    max_true_pd_grade_inversions: int
    min_jeffreys_p_value: float
    jeffreys_min_firms: int
    max_out_of_range_share: float
    max_monotonicity_violations: int
    monotonicity_firms: int
    monotonicity_tolerance: float
    bootstrap_replicates: int
    seed: int
    version: str = ""
    fingerprint: str = ""

    INTEGERS = ("max_true_pd_grade_inversions", "jeffreys_min_firms", "max_monotonicity_violations",
                "monotonicity_firms", "bootstrap_replicates", "seed")
    SHARES = ("min_auc", "max_mean_pd_to_true_pd_deviation", "min_jeffreys_p_value",
              "max_out_of_range_share")

    @classmethod
    def from_dict(cls, raw: Mapping, where: str = "validation config") -> "ValidationConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"version", "fingerprint"}
        check_keys(where, raw, required=names, optional={"version", "description"})
        values = {}
        for name in sorted(names):
            x = finite_number(f"{where}: {name}", raw[name])
            if name in cls.INTEGERS and (x != int(x) or x < 0):
                raise ConfigError(f"{where}: {name} must be a whole number >= 0, got {raw[name]!r}")
            if name in cls.SHARES and not 0 <= x <= 1:
                raise ConfigError(f"{where}: {name} must lie in [0, 1], got {raw[name]!r}")
            values[name] = int(x) if name in cls.INTEGERS else x
        for name in ("bootstrap_replicates", "monotonicity_firms"):
            if values[name] < 1:
                raise ConfigError(f"{where}: {name} must be at least 1, got {raw[name]!r}")
        if not -1 <= values["min_spearman_pd_true_pd"] <= 1:
            raise ConfigError(f"{where}: min_spearman_pd_true_pd must lie in [-1, 1], "
                              f"got {raw['min_spearman_pd_true_pd']!r}")
        return cls(**values, version=str(raw.get("version", "")),
                   fingerprint=config_fingerprint(raw))

    def thresholds(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "fingerprint"}


def load_config(path: Optional[str] = None) -> ValidationConfig:
    """The thresholds at `path`, or the packaged smescore/config/validation.json."""
    return ValidationConfig.from_dict(read_json_config(path, CONFIG_RESOURCE),
                                      os.fspath(path) if path else f"smescore/config/{CONFIG_RESOURCE}")


# ----------------------------------------------------------------------------- dates

def last_month_end(day: dt.date) -> dt.date:
    """The latest month-end on or before `day`."""
    end = month_end(day.year, day.month)
    return end if end <= day else add_months(end, -1)


def walk_forward_dates(card: dict, feeds_end: dt.date) -> list[dt.date]:
    """Every month-end after the version's last training snapshot, through the feeds' last one."""
    train = (card.get("snapshot_dates") or {}).get("train") or []
    if not train:
        raise ValidationError(f"the model card of {card.get('version')} names no training "
                              f"snapshot dates; give the dates to validate (--dates)")
    d, last, dates = add_months(dt.date.fromisoformat(train[-1]), 1), last_month_end(feeds_end), []
    while d <= last:
        dates.append(d)
        d = add_months(d, 1)
    if not dates:
        raise ValidationError(f"the feeds end {feeds_end}, before the first month-end after the "
                              f"training snapshots ({train[-1]}): nothing to validate on")
    return dates


def date_roles(card: dict, dates) -> dict[dt.date, str]:
    """'valid' / 'test' for the model card's own validation and test dates (the held-out firms
    were measured there; here the whole book is), 'train' for its training dates (in-sample),
    'after_test' for the rest."""
    snap = card.get("snapshot_dates") or {}
    role = {dt.date.fromisoformat(d): name for name in ("train", "valid", "test")
            for d in snap.get(name, [])}
    return {d: role.get(d, "after_test") for d in dates}


# ----------------------------------------------------------------------------- measures

def discrimination(y, pd_, clusters, replicates: int, seed: int) -> dict:
    """AUC, KS and Gini with bootstrap 95% percentile intervals over firms
    (metrics.cluster_resamples: replicates with a single outcome class are skipped)."""
    y, pd_ = np.asarray(y, np.int64), np.asarray(pd_, np.float64)
    k = int(y.sum())
    if not 0 < k < len(y):
        return {"n": int(len(y)), "n_defaults": k, "auc": None, "ks": None, "gini": None}
    ranked = metrics.RankedScores(pd_)
    aucs, kss = [], []
    for weights in metrics.cluster_resamples(y, clusters, replicates, seed):
        aucs.append(ranked.auc(y, weights))
        kss.append(ranked.ks(y, weights))
    auc, ks = ranked.auc(y), ranked.ks(y)

    def interval(point, reps):
        lo, hi = (np.percentile(reps, [2.5, 97.5]) if reps else (None, None))
        return {"value": point, "ci_low": None if lo is None else float(lo),
                "ci_high": None if hi is None else float(hi)}

    out = {"n": int(len(y)), "n_defaults": k, "auc": interval(auc, aucs), "ks": interval(ks, kss),
           "bootstrap_replicates_used": len(aucs)}
    a = out["auc"]
    out["gini"] = {"value": 2 * auc - 1,
                   "ci_low": None if a["ci_low"] is None else 2 * a["ci_low"] - 1,
                   "ci_high": None if a["ci_high"] is None else 2 * a["ci_high"] - 1}
    return out


def jeffreys_p_value(n_defaults: int, n_firms: int, pd_: float) -> float:
    """One-sided Jeffreys test of a grade (ECB): P(default rate <= PD) under the posterior
    Beta(d + 1/2, n - d + 1/2). Small: the defaults say the PD under-predicts."""
    return float(stats.beta.cdf(pd_, n_defaults + 0.5, n_firms - n_defaults + 0.5))


def holm_rejections(p_values, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down test of a family: (rejected, threshold) per p-value. The smallest of m is
    compared with alpha / m, the next with alpha / (m - 1), and so on; testing stops at the first
    that passes (it and every larger p-value pass). The family's chance of one false rejection
    stays at alpha however many grades it holds."""
    p = np.asarray(p_values, np.float64)
    order = np.argsort(p, kind="stable")
    thresholds = np.empty(len(p))
    thresholds[order] = alpha / (len(p) - np.arange(len(p)))
    rejected = np.zeros(len(p), bool)
    for i in order:
        if p[i] >= thresholds[i]:
            break
        rejected[i] = True
    return rejected, thresholds


def by_grade(frame: pd.DataFrame, grades) -> list[dict]:
    """Per grade: firms, mean PD; with outcomes (`default`) defaults, observed rate and the
    Jeffreys p-value; with the ground truth (`true_pd`) the mean true PD."""
    rows = []
    outcomes = "default" in frame and frame["default"].notna().all()
    truth = "true_pd" in frame
    for grade in grades:
        g = frame[frame["grade"] == grade]
        row = {"grade": grade, "n": int(len(g)), "mean_pd": float(g["pd"].mean()) if len(g) else None}
        if outcomes:
            d = int(g["default"].sum())
            row.update(n_defaults=d, observed_default_rate=d / len(g) if len(g) else None,
                       jeffreys_p_value=jeffreys_p_value(d, len(g), row["mean_pd"]) if len(g)
                       else None)
        if truth:
            t = g["true_pd"].dropna()
            row["mean_true_pd"] = float(t.mean()) if len(t) else None
        rows.append(row)
    return rows


def grade_inversions(rows: list[dict], min_firms: int) -> int:
    """Consecutive grades (among those with at least min_firms firms and a true PD) whose mean
    true PD does not rise."""
    t = [r["mean_true_pd"] for r in rows if r["n"] >= min_firms and r.get("mean_true_pd") is not None]
    return int(sum(b <= a for a, b in zip(t, t[1:])))


def calibration(frame: pd.DataFrame) -> dict:
    """Mean PD against the observed default rate and the mean true PD, and Spearman(PD, true PD)."""
    out = {"mean_pd": float(frame["pd"].mean())}
    if "default" in frame and frame["default"].notna().all():
        out["observed_default_rate"] = float(frame["default"].mean())
        out["pd_to_observed"] = out["mean_pd"] / out["observed_default_rate"] \
            if out["observed_default_rate"] > 0 else None
    if "true_pd" in frame:
        t = frame.dropna(subset=["true_pd"])
        out["truth_covered"] = int(len(t))
        if len(t):
            out["mean_true_pd"] = float(t["true_pd"].mean())
            out["mean_pd_truth_rows"] = float(t["pd"].mean())
            out["pd_to_true_pd_deviation"] = out["mean_pd_truth_rows"] / out["mean_true_pd"] - 1
            out["spearman_pd_true_pd"] = float(stats.spearmanr(t["pd"], t["true_pd"]).statistic) \
                if len(t) > 2 else None
    return out


def numeric_ranges(card: dict) -> dict[str, tuple[float, float]]:
    """Training [min, max] of every numeric input the network reads, from the card's training
    distribution: an input without spread in training (no value, or one) is zeroed by the TFT
    graph, so no value of it is out of the model's range (as in the nightly drift table)."""
    dist = card.get("training_distribution") or {}
    return {f.name: (dist[f.name]["min"], dist[f.name]["max"]) for f in catalog.FEATURES
            if not f.is_categorical and f.name in dist and dist[f.name].get("min") is not None
            and dist[f.name]["max"] > dist[f.name]["min"]}


def out_of_range_shares(values: Mapping[str, np.ndarray], ranges: Mapping[str, tuple]) -> dict:
    """Share of all firms (missing values count as inside) below the training min or above max."""
    out = {}
    for name, (lo, hi) in ranges.items():
        v = np.asarray(values[name], np.float64)
        out[name] = float(np.mean((v < lo) | (v > hi))) if len(v) else 0.0
    return out


def monotonicity(score_pd: Callable[[Mapping[str, np.ndarray]], np.ndarray],
                 sample: Mapping[str, np.ndarray], card: dict, tolerance: float) -> list[dict]:
    """Per input with a declared risk direction: move it one training std towards risk for every
    sampled firm that has a value, score again, count PDs that fell by more than `tolerance`.
    `score_pd` maps raw signature inputs to PDs (the exported SavedModel)."""
    dist = card.get("training_distribution") or {}
    base = np.asarray(score_pd(sample), np.float64)
    rows = []
    for f in catalog.FEATURES:
        if f.is_categorical or f.risk_direction == 0:
            continue
        std = (dist.get(f.name) or {}).get("std")
        x = np.asarray(sample[f.name], np.float32)
        has = np.isfinite(x)
        if not std or not has.any():
            rows.append({"feature": f.name, "direction": f.risk_direction, "step": std,
                         "n_moved": 0, "violations": 0, "max_pd_decrease": 0.0,
                         "note": "no training spread" if not std else "no firm with a value"})
            continue
        moved = {k: (v[has] if k != f.name else (x[has] + np.float32(f.risk_direction * std)))
                 for k, v in sample.items()}
        drop = base[has] - np.asarray(score_pd(moved), np.float64)
        rows.append({"feature": f.name, "direction": f.risk_direction, "step": float(std),
                     "n_moved": int(has.sum()), "violations": int((drop > tolerance).sum()),
                     "max_pd_decrease": float(max(drop.max(), 0.0))})
    return rows


def challengers(card: dict) -> list[dict]:
    """The model's out-of-time test figures and every challenger the card carries (same rows)."""
    m = card.get("metrics") or {}
    rows = [{"model": "this model", "key": "test", **_auc_ks(m.get("test"))}]
    for label, key in (*CHALLENGERS, ("unconstrained network", UNCONSTRAINED)):
        seeds = (m.get(key) or {}).get("seeds")
        if seeds:        # a mean over trainings: say so, with their range
            label += (f" (mean of {len(seeds)} seeds, AUC {m[key]['auc_min']:.4f}-"
                      f"{m[key]['auc_max']:.4f})")
        rows.append({"model": label, "key": key, **_auc_ks(m.get(key))})
    rows.append({"model": "oracle (generator's true PD)", "key": "oracle_auc",
                 "auc": card.get("oracle_auc", m.get("oracle_auc")), "ks": None, "mean_pd": None})
    return rows


def _auc_ks(figures) -> dict:
    figures = figures or {}
    return {k: figures.get(k) for k in ("auc", "ks", "mean_pd", "auc_minus_model")}


# ----------------------------------------------------------------------------- checks

def _check(name, scope, value, threshold, passed, note="") -> dict:
    return {"check": name, "scope": str(scope), "value": value, "threshold": threshold,
            "passed": passed, **({"note": note} if note else {})}


def evaluate_checks(result: dict, cfg: ValidationConfig) -> list[dict]:
    """Every check with its value, threshold and verdict. A check without data (no ground truth,
    a challenger the card lacks) has value and verdict None and fails nothing; discrimination
    must be measured on at least one date."""
    checks = []
    measured = [d for d in result["dates"] if d.get("auc") is not None]
    for d in measured:
        checks.append(_check("min_auc", d["as_of_date"], d["auc"]["value"], cfg.min_auc,
                             d["auc"]["value"] >= cfg.min_auc))
    pooled = result["pooled"]
    if pooled.get("auc") is not None:
        checks.append(_check("min_auc", "pooled", pooled["auc"]["value"], cfg.min_auc,
                             pooled["auc"]["value"] >= cfg.min_auc))
    if not measured:
        checks.append(_check("min_auc", "pooled", None, cfg.min_auc, False,
                             "no date with 12 observed months and both outcomes: discrimination "
                             "is not validated"))
    rows = {r["key"]: r for r in result["challengers"]}
    model_auc = rows["test"]["auc"]
    for label, key in CHALLENGERS:
        other = rows[key]["auc"]
        value = None if other is None or model_auc is None else model_auc - other
        checks.append(_check("min_auc_margin_over_challenger", label, value,
                             cfg.min_auc_margin_over_challengers,
                             None if value is None else value >= cfg.min_auc_margin_over_challengers,
                             "" if value is not None else "not in the model card"))
    other = rows[UNCONSTRAINED]["auc"]
    value = None if other is None or model_auc is None else other - model_auc
    checks.append(_check("max_auc_gap_to_unconstrained_network", "model card test", value,
                         cfg.max_auc_gap_to_unconstrained_network,
                         None if value is None else value <= cfg.max_auc_gap_to_unconstrained_network,
                         "" if value is not None else "not in the model card"))
    for d in result["dates"]:
        cal = d["calibration"]
        if cal.get("pd_to_true_pd_deviation") is not None:
            v = cal["pd_to_true_pd_deviation"]
            checks.append(_check("max_mean_pd_to_true_pd_deviation", d["as_of_date"], v,
                                 cfg.max_mean_pd_to_true_pd_deviation,
                                 abs(v) <= cfg.max_mean_pd_to_true_pd_deviation))
        if cal.get("spearman_pd_true_pd") is not None:
            v = cal["spearman_pd_true_pd"]
            checks.append(_check("min_spearman_pd_true_pd", d["as_of_date"], v,
                                 cfg.min_spearman_pd_true_pd, v >= cfg.min_spearman_pd_true_pd))
        if d.get("auc") is not None:
            tested = [g for g in d["by_grade"] if g["n"] >= cfg.jeffreys_min_firms]
            rejected, thresholds = holm_rejections([g["jeffreys_p_value"] for g in tested],
                                                   cfg.min_jeffreys_p_value)
            for g, bad, threshold in zip(tested, rejected, thresholds):
                checks.append(_check("min_jeffreys_p_value", f"{d['as_of_date']} grade {g['grade']}",
                                     g["jeffreys_p_value"], float(threshold), not bad,
                                     f"Holm: {len(tested)} grades at {cfg.min_jeffreys_p_value}"))
    if result["truth"]:
        v = grade_inversions(pooled["by_grade"], cfg.jeffreys_min_firms)
        checks.append(_check("max_true_pd_grade_inversions", "pooled", v,
                             cfg.max_true_pd_grade_inversions, v <= cfg.max_true_pd_grade_inversions))
    else:
        checks.append(_check("max_true_pd_grade_inversions", "pooled", None,
                             cfg.max_true_pd_grade_inversions, None, "no ground truth in the feeds"))
    for r in result["out_of_range"]:
        checks.append(_check("max_out_of_range_share", r["feature"], r["max_share"],
                             cfg.max_out_of_range_share, r["max_share"] <= cfg.max_out_of_range_share,
                             f"worst date {r['worst_date']}"))
    for r in result["monotonicity"]["features"]:
        checks.append(_check("max_monotonicity_violations", r["feature"], r["violations"],
                             cfg.max_monotonicity_violations,
                             r["violations"] <= cfg.max_monotonicity_violations))
    return checks


def failed_checks(checks: list[dict]) -> list[dict]:
    return [c for c in checks if c["passed"] is False]


# ----------------------------------------------------------------------------- the run

def read_truth(feeds_dir: str, dates) -> Optional[pd.DataFrame]:
    truth = ground_truth.read(feeds_dir)
    if truth is None:
        return None
    truth["as_of_date"] = pd.to_datetime(truth["as_of_date"]).dt.date
    truth = truth[truth["as_of_date"].isin(set(dates))]
    return truth.rename(columns={"true_pd_12m": "true_pd"})


def date_figures(frame: pd.DataFrame, as_of, role, counts, cfg, grades) -> dict:
    """One walk-forward date: counts, calibration, grades and, with outcomes, discrimination."""
    complete = bool(len(frame)) and frame["default"].notna().all()
    part = frame if complete else frame.drop(columns="default")
    out = {"as_of_date": str(as_of), "role": role, **counts, "outcomes_complete": complete,
           "calibration": calibration(part) if len(part) else {},
           "by_grade": by_grade(part, grades), "n_defaults": None, "auc": None, "ks": None,
           "gini": None}
    if complete:
        disc = discrimination(frame["default"], frame["pd"], frame["enterprise_id"],
                              cfg.bootstrap_replicates, cfg.seed)
        out.update({k: disc[k] for k in ("n_defaults", "auc", "ks", "gini")})
        out["bootstrap_replicates_used"] = disc.get("bootstrap_replicates_used")
    return out


def pooled_figures(frames: list[pd.DataFrame], per_date: list[dict], cfg, grades) -> dict:
    """The dates with outcomes together (discrimination resamples whole firms), and every date's
    firms by grade."""
    labelled = [f for f, d in zip(frames, per_date) if d["outcomes_complete"]]
    pooled = {"dates": [d["as_of_date"] for d in per_date if d["outcomes_complete"]],
              "by_grade": by_grade(pd.concat(frames, ignore_index=True).drop(columns="default"),
                                   grades)}
    if not labelled:
        return pooled
    frame = pd.concat(labelled, ignore_index=True)
    disc = discrimination(frame["default"], frame["pd"], frame["enterprise_id"],
                          cfg.bootstrap_replicates, cfg.seed)
    pooled.update({"n": disc["n"], "n_firms": int(frame["enterprise_id"].nunique()),
                   **{k: disc[k] for k in ("n_defaults", "auc", "ks", "gini")},
                   "calibration": calibration(frame)})
    with_outcomes = {r["grade"]: r for r in by_grade(frame, grades)}
    for r in pooled["by_grade"]:        # outcomes by grade only over the dates that have them
        o = with_outcomes[r["grade"]]
        r.update(n_with_outcomes=o["n"], n_defaults=o["n_defaults"],
                 observed_default_rate=o["observed_default_rate"])
    return pooled


def plain(x):
    """JSON-ready: numpy scalars as Python numbers, NaN as None, dates as ISO strings."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, dt.date):
        return x.isoformat()
    return x


def write_rows(frame: pd.DataFrame, path: str) -> None:
    columns = ["as_of_date", "enterprise_id", "pd", "grade", "score", "default",
               *(["true_pd"] if "true_pd" in frame else [])]
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def out_of_range_rows(oor: dict[str, dict[str, float]], ranges) -> list[dict]:
    rows = []
    for name, (lo, hi) in ranges.items():
        shares = {d: s[name] for d, s in oor.items()}
        worst = max(shares, key=lambda d: (shares[d], d))
        rows.append({"feature": name, "train_min": lo, "train_max": hi, "by_date": shares,
                     "max_share": shares[worst], "worst_date": worst})
    return sorted(rows, key=lambda r: (-r["max_share"], r["feature"]))


def points_rows(points: dict[str, dict[str, float]], card: dict) -> list[dict]:
    """Mean |points| per feature at the last date, over all dates, and in the card's baseline."""
    last = max(points)
    trained = (card.get("baseline") or {}).get("mean_abs_points") or {}
    rows = [{"feature": f, "last_date": points[last][f],
             "all_dates": float(np.mean([p[f] for p in points.values()])),
             "baseline": trained.get(f)} for f in catalog.NAMES]
    return sorted(rows, key=lambda r: (-r["last_date"], r["feature"]))

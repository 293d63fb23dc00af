"""`smescore backtest --as-of D`: how the scores published for D ranked and calibrated the defaults
of the 12 months after D, per model version and segment, into `performance` and `backtest_roc`.

Cohort: the firms the model scored for D (score_source 'model'), less any firm the loans feed now
shows in default at D (late loan reports dated on or before D). Outcome: the training label of
transforms/pit.py, 90+ DPD in one of the 12 report months after D. Features and label come from
the training-snapshot Beam job run for D alone, so the backtest and training share one definition.

Versions: every version that scored cohort firms for D, officially (`scores`: champion and canary
rows) or in shadow (`scores_shadow`), each on the firms it scored; and, given a registry, the
current and the previous champion when they have no scores for D: they score the cohort's features
as of D with their SavedModel (what the automatic rollback compares). A rerun replaces D's rows.

This module holds the figures; beam_jobs/backtest.py runs the feature job and drives it.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from models import lifecycle, performance
from models import registry as model_registry
from models.scorecard import load_scorecard_config
from models.train import add_months
from models import export    # after models.train, which sets TensorFlow's environment first
import tensorflow as tf
from smescore import tables
from transforms import catalog

RESCORE_BATCH = 100_000


class BacktestError(ValueError):
    """The backtest cannot be computed from what is there; nothing was written."""


def outcome_end(as_of: dt.date) -> dt.date:
    """The last report month of D's outcome window: the feeds must reach it."""
    return add_months(as_of, performance.OUTCOME_MONTHS)


def check_outcomes_observed(source, as_of: dt.date) -> None:
    """Refuse until the loans feed (a feed source: beam_jobs/sources.py) holds every report month
    of the outcome window."""
    last = source.last_loan_month()
    need = outcome_end(as_of)
    if last is None or (last.year, last.month) < (need.year, need.month):
        ends = f"{last:%Y-%m}" if last else "none"
        raise BacktestError(
            f"the loans feed ends with report month {ends}; a {performance.OUTCOME_MONTHS}-month "
            f"backtest of {as_of} needs report months through {need:%Y-%m}: run it once those "
            f"are in")


def published_scores(wh, as_of: dt.date) -> pd.DataFrame:
    """Model-scored rows of D from `scores` and `scores_shadow`, one per version and firm."""
    sql = ("SELECT enterprise_id, model_version, pd, grade, '{t}' AS source FROM {t} "
           "WHERE as_of_date = ? AND score_source = 'model'")
    # Table names are constants of this module, not data.
    frame = wh.query(f"{sql.format(t='scores')} UNION ALL {sql.format(t='scores_shadow')}",
                     [as_of, as_of]).to_pandas()
    by_firm = frame.groupby(["model_version", "enterprise_id"])["pd"]
    spread = by_firm.max() - by_firm.min()
    if (spread > 1e-9).any():
        bad = spread[spread > 1e-9].index[0]
        raise BacktestError(f"{bad[0]} has two different PDs for {bad[1]} on {as_of} in scores "
                            f"and scores_shadow")
    return (frame.sort_values(["model_version", "enterprise_id", "source"])
            .drop_duplicates(["model_version", "enterprise_id"]).reset_index(drop=True))


def rescore(saved_model_path: str, frame: pd.DataFrame) -> np.ndarray:
    """Calibrated PD of each row through the SavedModel's serving signature alone."""
    signature = tf.saved_model.load(saved_model_path).signatures[export.SCORE_SIGNATURE]
    parts = [signature(**export.raw_tensors(frame.iloc[i:i + RESCORE_BATCH]))["pd"].numpy()
             for i in range(0, len(frame), RESCORE_BATCH)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def cohort_of(scores: pd.DataFrame, features: pd.DataFrame, as_of: dt.date
              ) -> tuple[pd.DataFrame, int]:
    """Firms the model scored for D with their outcome and segments; and how many of them the
    loans feed now shows in default at D (left out: they were not performing loans at D)."""
    firms = pd.DataFrame({"enterprise_id": sorted(scores["enterprise_id"].unique())})
    joined = firms.merge(features, on="enterprise_id", how="left", indicator=True)
    missing = joined.loc[joined["_merge"] != "both", "enterprise_id"]
    if len(missing):
        raise BacktestError(f"{len(missing)} scored firm(s) of {as_of} are not in the feeds' "
                            f"enterprises as of {as_of}, e.g. {list(missing[:3])}")
    in_default = joined["in_default"].to_numpy(bool)
    joined = joined[~in_default].reset_index(drop=True)
    unlabelled = joined.loc[joined["label_default_12m"].isna(), "enterprise_id"]
    if len(unlabelled):
        raise BacktestError(f"{len(unlabelled)} firm(s) of the {as_of} cohort have no observed "
                            f"12-month outcome, e.g. {list(unlabelled[:3])}")
    joined["default"] = joined["label_default_12m"].astype(np.int64)
    joined["industry"], joined["region"] = joined["ent_industry"], joined["ent_province"]
    return joined.drop(columns="_merge"), int(in_default.sum())


def versions_to_rescore(reg: model_registry.Registry, published: set[str]
                        ) -> tuple[list[str], dict[str, str]]:
    """The current and the previous champion (from the audit log) when they have no scores for
    D; and why a version could not be looked at."""
    wanted, skipped = [lifecycle.current_champion(reg)], {}
    if wanted[0] is not None:
        try:
            wanted.append(lifecycle.previous_champion(reg))
        except lifecycle.LifecycleError as err:
            skipped["previous champion"] = str(err)
    todo = [v for v in dict.fromkeys(wanted) if v is not None and v not in published]
    for version in todo:
        if reg.model_card(version).get("features") != list(catalog.NAMES):
            skipped[version] = "trained on another feature catalogue"
    return [v for v in todo if v not in skipped], skipped


def evaluate(as_of: dt.date, scores: pd.DataFrame, features: pd.DataFrame,
             registry: str | None = None, progress=print) -> tuple[dict[str, pa.Table], dict]:
    """D's published scores (`published_scores`) and labelled features (the training-snapshot
    job as of D) -> the `performance` and `backtest_roc` rows of D, and a summary: per version
    its figures over the whole cohort, and why any version was not scored."""
    cohort, n_in_default = cohort_of(scores, features, as_of)
    progress(f"[backtest] {as_of}: {len(cohort):,} model-scored firms, "
             f"{int(cohort['default'].sum()):,} defaults within {performance.OUTCOME_MONTHS} "
             f"months ({n_in_default} left out: in default at {as_of})")

    by_version = {v: ("published", g[["enterprise_id", "pd", "grade"]])
                  for v, g in scores.groupby("model_version", sort=True)}
    skipped = {}
    if registry is not None:
        reg = model_registry.Registry(registry)
        rescored, skipped = versions_to_rescore(reg, set(by_version))
        master = load_scorecard_config(None).master_scale
        for version in rescored:
            pd_ = rescore(reg.saved_model_path(version), cohort)
            by_version[version] = ("rescored", pd.DataFrame(
                {"enterprise_id": cohort["enterprise_id"], "pd": pd_,
                 "grade": list(master.grade(pd_, np.zeros(len(pd_), bool)))}))
    for version, why in skipped.items():
        progress(f"[backtest] {version} not scored: {why}")

    at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    perf, roc, summary = [], [], {}
    segments = cohort[["enterprise_id", "default", "industry", "region"]]
    for version, (how, rows) in sorted(by_version.items()):
        part = segments.merge(rows, on="enterprise_id", how="inner")
        rows_v = performance.performance_rows(part, as_of, version, at)
        perf += rows_v
        roc += performance.roc_rows(part, as_of, version)
        whole = rows_v[0]                                   # segment 'all'
        summary[version] = {"scores": how, **{k: whole[k] for k in (
            "n_firms", "n_defaults", "auc", "ks", "brier", "predicted_default_rate",
            "observed_default_rate", "calibration_status")}}
        auc = "n/a" if whole["auc"] is None else f"{whole['auc']:.4f}"
        progress(f"[backtest] {version} ({how}): AUC {auc} on {whole['n_firms']:,} firms")
    rows = {"performance": pa.Table.from_pylist(perf, schema=tables.arrow_schema("performance")),
            "backtest_roc": pa.Table.from_pylist(roc, schema=tables.arrow_schema("backtest_roc"))}
    return rows, {"as_of_date": str(as_of), "outcome_months": performance.OUTCOME_MONTHS,
                  "cohort_firms": len(cohort), "cohort_defaults": int(cohort["default"].sum()),
                  "left_out_in_default_at_as_of": n_in_default,
                  "versions": summary, "not_scored": skipped}

"""Champion, challengers and the canary.

Every model-scored firm is scored by the champion and, in shadow, by each challenger. A fixed share
of firms (the canary, `--canary_share`, default 10%) gets the first challenger's score as the
official one. Which firms are in the canary depends only on their enterprise_id (a salted SHA-256,
independent of the shard hash and of the training holdout), so re-runs choose the same firms and a
firm stays in the canary from night to night.

Each run compares champion and challenger on the same firms with a combiner over integer counts:
the joint distribution of the two integer scores (300..850) gives Spearman's rank correlation
exactly (mid-ranks for ties), the marginals give the PSI between them, the grade pairs give the
migration matrix.
"""
from __future__ import annotations

import dataclasses
import hashlib

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_jobs import drift, sinks
from models import baseline, score_rows
from smescore import tables
from transforms import arrow_coder  # noqa: F401  (the pa.Table coder of score_rows' outputs)
from transforms.process_pool import Work

OFFICIAL, SHADOW, SHADOW_FAILED, PAIRS = "official", "shadow", "shadow_failed", "pairs"
_CANARY_SALT = b"smescore-canary:"


def canary_mask(enterprise_ids, share: float) -> np.ndarray:
    """True for the firms whose official score comes from the canary challenger."""
    if share <= 0:
        return np.zeros(len(enterprise_ids), bool)
    cut = int(share * 2**64)
    return np.fromiter(
        (int.from_bytes(hashlib.sha256(_CANARY_SALT + e.encode()).digest()[:8], "big") < cut
         for e in enterprise_ids), bool, len(enterprise_ids))


@dataclasses.dataclass(frozen=True)
class Roles:
    champion: str
    challengers: tuple[str, ...]
    canary_share: float

    @property
    def canary(self) -> str | None:
        return self.challengers[0] if self.challengers and self.canary_share > 0 else None


def scoring_as(scoring: score_rows.Scoring, version: str) -> score_rows.Scoring:
    """The run's scoring settings for rows of `version` (its own typical firm in the reasons)."""
    return dataclasses.replace(scoring, model_version=version)


def split_official_and_shadow(outputs: dict, roles: Roles, scoring: score_rows.Scoring,
                              attribution_parts: sinks.PartWriter) -> Work:
    """{version: inference output} of one feature table -> official (scores table, the file name
    of its attribution rows) as the main output: the attributions, 100 rows a firm, are written
    here as a part file of the staged table (sinks.PartWriter), so that they never travel back to
    the runner's process. Shadow scores, dead letters of a failed challenger and (champion,
    challenger) score pairs as tagged outputs. Runs in a worker process
    (transforms/process_pool.py)."""
    work = Work()
    champ = outputs[roles.champion]
    canary = roles.canary
    ids = champ.column("enterprise_id").to_pylist()
    mask = (canary_mask(ids, roles.canary_share) if isinstance(outputs.get(canary), pa.Table)
            else np.zeros(len(ids), bool))
    official = [score_rows.model_rows(champ.filter(pa.array(~mask)),
                                      scoring_as(scoring, roles.champion), key_order=True)]
    if mask.any():
        official.append(score_rows.model_rows(outputs[canary].filter(pa.array(mask)),
                                              scoring_as(scoring, canary), "canary",
                                              key_order=True))
    for scores, attributions in official:
        work.emit((scores, attribution_parts.write(attributions)))
    if mask.any():
        work.emit(score_rows.model_rows(champ.filter(pa.array(mask)),
                                        scoring_as(scoring, roles.champion), "champion",
                                        with_attributions=False)[0], SHADOW)
    for version in roles.challengers:
        out = outputs[version]
        if not isinstance(out, pa.Table):
            for firm in ids:
                work.emit({"feed": "shadow", "record_json": score_rows.firm_json(firm),
                           "reason": f"challenger {version} failed: {out}"[:500]}, SHADOW_FAILED)
            continue
        work.emit(score_rows.model_rows(out, scoring_as(scoring, version), "challenger",
                                        with_attributions=False)[0], SHADOW)
        work.emit((version, _pairs(scoring, champ, out)), PAIRS)
    return work


def _pairs(s: score_rows.Scoring, champ: pa.Table, chall: pa.Table) -> dict:
    return {"score": (s.scale.score_from_logit(champ.column("logit").to_numpy()),
                      s.scale.score_from_logit(chall.column("logit").to_numpy())),
            "grade": (s.master.grade(champ.column("pd").to_numpy()),
                      s.master.grade(chall.column("pd").to_numpy()))}


class ComparisonCombineFn(beam.CombineFn):
    """(champion, challenger) scores and grades of the same firms -> integer count tables."""

    def __init__(self, scale, grades: tuple[str, ...]):
        self.lo, self.hi = int(scale.min_score), int(scale.max_score)
        self.grades = tuple(grades)

    def create_accumulator(self):
        k = self.hi - self.lo + 1
        return {"scores": np.zeros((k, k), np.int64),
                "grades": np.zeros((len(self.grades),) * 2, np.int64)}

    def add_input(self, acc, pairs):
        a, b = (np.asarray(x, np.int64) - self.lo for x in pairs["score"])
        np.add.at(acc["scores"], (a, b), 1)
        index = {g: i for i, g in enumerate(self.grades)}
        ga, gb = ([index[g] for g in x] for x in pairs["grade"])
        np.add.at(acc["grades"], (ga, gb), 1)
        return acc

    def merge_accumulators(self, accumulators):
        accs = list(accumulators)
        return {k: sum(a[k] for a in accs) for k in accs[0]}

    def extract_output(self, acc):
        return acc


def spearman_from_counts(joint: np.ndarray) -> float:
    """Spearman's rho (Pearson on mid-ranks) of two discrete variables from their joint counts."""
    joint = np.asarray(joint, np.float64)
    n = joint.sum()

    def midranks(marginal):
        before = np.cumsum(marginal) - marginal
        return before + (marginal + 1) / 2

    cx, cy = joint.sum(axis=1), joint.sum(axis=0)
    rx, ry = midranks(cx) - (n + 1) / 2, midranks(cy) - (n + 1) / 2
    cov = rx @ joint @ ry
    var = (cx @ rx**2) * (cy @ ry**2)
    return float(cov / np.sqrt(var)) if var > 0 else float("nan")


def comparison_rows(keyed, roles: Roles, lo: int, grades, as_of, run_id) -> list[dict]:
    version, acc = keyed
    joint = acc["scores"]
    n = int(joint.sum())
    values = np.arange(lo, lo + joint.shape[0])
    edges = np.asarray(baseline.SCORE_EDGES, np.float64)
    champ_share = np.bincount(np.searchsorted(edges, values, side="right"),
                              weights=joint.sum(axis=1), minlength=len(edges) + 1) / n
    chall_share = np.bincount(np.searchsorted(edges, values, side="right"),
                              weights=joint.sum(axis=0), minlength=len(edges) + 1) / n
    change = float((joint.sum(axis=0) @ values - joint.sum(axis=1) @ values) / n)
    base = {"as_of_date": as_of, "champion_version": roles.champion,
            "challenger_version": version, "from_grade": None, "to_grade": None, "run_id": run_id}
    rows = [{**base, "metric": "n_firms", "value": float(n)},
            {**base, "metric": "rank_correlation", "value": spearman_from_counts(joint)},
            {**base, "metric": "psi", "value": drift.psi(champ_share, chall_share)},
            {**base, "metric": "mean_score_change", "value": change}]
    for i, j in zip(*np.nonzero(acc["grades"])):
        rows.append({**base, "metric": "grade_migration", "from_grade": grades[i],
                     "to_grade": grades[j], "value": float(acc["grades"][i, j])})
    return rows


@beam.ptransform_fn
def CompareWithChampion(pairs, roles: Roles, scoring: score_rows.Scoring, as_of, run_id):
    """(challenger version, pairs) -> the challenger_comparison rows, one list per challenger."""
    grades = (*scoring.master.grades, scoring.master.default_grade)
    return (pairs
            | "CountScorePairs" >> beam.CombinePerKey(ComparisonCombineFn(scoring.scale, grades))
            | "ComparisonRows" >> beam.Map(comparison_rows, roles, int(scoring.scale.min_score),
                                           grades, as_of, run_id))


def rows_table(rows: list[dict], name: str) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=tables.arrow_schema(name))

"""From model outputs (or rules) to the rows of the risk tables. Pure functions over Arrow tables.

Each function takes one batch (a shard's firms) and returns `scores` rows, plus `attributions`
rows for model-scored firms, in the contract of smescore/tables.py. The nightly pipeline maps
them over its shards (beam_jobs/), validation and the Python API (smescore/api.py) call them
directly: one scoring, whoever drives it.

No `from __future__ import annotations` here: Beam reads the return annotations (`pa.Table`) as
the types of the PCollections these functions make, which gives them the Arrow table coder that
the pipelines register (transforms/arrow_coder.py) instead of pickling; string annotations would
read as Any.
"""
import dataclasses
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.reasons import TypicalFirm, reasons_for
from models.rules import ColdStartRules
from models.scorecard import MasterScale, ScoreScale
from models.signature import numeric_values
from smescore import tables
from transforms import catalog, progress
from transforms.validate import record_json


@dataclasses.dataclass(frozen=True)
class Scoring:
    """What turns a PD into a published score: scale, master scale, rules, ids of the run, and the
    typical firm of each model version's training sample, which reasons compare the firm with."""
    scale: ScoreScale
    master: MasterScale
    rules: ColdStartRules
    model_version: str
    run_id: str
    typical_firms: Mapping[str, TypicalFirm]     # version -> its model card's typical firm
    max_reasons: int = 4

    @property
    def typical(self) -> TypicalFirm:
        """The typical firm of the version this Scoring publishes as (champion, canary,
        challenger: each its own card)."""
        if self.model_version not in self.typical_firms:
            raise ValueError(f"no typical firm for model {self.model_version}; have "
                             f"{sorted(self.typical_firms)}")
        return self.typical_firms[self.model_version]


def typical_firms(cards: Mapping[str, Mapping]) -> dict[str, TypicalFirm]:
    """{version: model card} -> {version: TypicalFirm}; a card without a training distribution
    is an error naming its version."""
    return {v: TypicalFirm.from_card(card, v) for v, card in cards.items()}


def firm_json(enterprise_id: str) -> str:
    """A firm as a rejected record (when scoring, not its feed records, failed)."""
    return record_json({"enterprise_id": enterprise_id})


def _values(table: pa.Table, names) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        col = table.column(name)
        if catalog.BY_NAME[name].is_categorical:
            out[name] = np.asarray(pc.fill_null(col, "").to_pylist(), dtype=object)
        else:
            out[name] = numeric_values(col, np.float64)
    return out


def _scores_table(table, s: Scoring, source, pd_, score, grade, base_points, reasons,
                  role: str = "champion") -> pa.Table:
    n = table.num_rows
    return pa.Table.from_pydict({
        "as_of_date": table.column("as_of_date"),
        "enterprise_id": table.column("enterprise_id"),
        "model_version": pa.array([s.model_version] * n, pa.string()),
        "score_source": pa.array([source] * n, pa.string()),
        "model_role": pa.array([role] * n, pa.string()),
        "pd": pa.array(np.asarray(pd_, np.float64)),
        "score": pa.array(np.asarray(score, np.int32)),
        "grade": pa.array(list(grade), pa.string()),
        "base_points": pa.array(np.asarray(base_points, np.float64)),
        "reasons": pa.array(reasons, type=tables.arrow_schema("scores").field("reasons").type),
        "run_id": pa.array([s.run_id] * n, pa.string()),
    }, schema=tables.arrow_schema("scores"))


def model_rows(table: pa.Table, s: Scoring, role: str = "champion",
               with_attributions: bool = True,
               key_order: bool = False) -> tuple[pa.Table, pa.Table | None]:
    """RunInference output (features + pd, logit, expected_logit, phi) -> (scores, attributions);
    shadow scores are published without attributions (None). Attribution rows come firm by firm
    in the table's order, features in catalogue order; with `key_order`, in the staged table's
    order (enterprise_id, feature), which spares the nightly's sink a sort of 100 rows a firm."""
    logit = table.column("logit").to_numpy()
    pd_ = table.column("pd").to_numpy()
    phi = np.asarray(table.column("phi").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                     np.float64).reshape(table.num_rows, len(catalog.NAMES))
    points = s.scale.points_from_phi(phi)
    base = s.scale.base_points(table.column("expected_logit").to_numpy())
    values = _values(table, catalog.NAMES)
    reasons = reasons_for(points, values, catalog.NAMES, s.typical, max_reasons=s.max_reasons)
    score, grade = score_and_grade(pd_, logit, s)
    scores = _scores_table(table, s, "model", pd_, score, grade, base, reasons, role)
    if not with_attributions:
        return scores, None
    return scores, attributions_table(table, s, values, phi, points, key_order)


def score_and_grade(pd_: np.ndarray, logit: np.ndarray, s: Scoring) -> tuple[np.ndarray, list]:
    """A model's score and grade of firms from its pd and logit (what a shadow score is)."""
    return s.scale.score_from_logit(logit), s.master.grade(pd_, np.zeros(len(pd_), bool))


def attributions_table(table, s: Scoring, values, phi, points,
                       key_order: bool = False) -> pa.Table:
    """One row per firm and feature: a numeric value in `value`, a category in `value_text`
    (the other one null, both null when missing). Rows in model_rows' order (`key_order`)."""
    n, k = phi.shape
    if key_order:
        firms = pc.sort_indices(table.column("enterprise_id")).to_numpy()
        features = _FEATURES_BY_NAME
        phi, points = phi[firms][:, features], points[firms][:, features]
    else:
        firms, features = np.arange(n), np.arange(k)
    names = [catalog.NAMES[j] for j in features]
    value = np.column_stack([
        np.full(n, np.nan) if catalog.BY_NAME[f].is_categorical else values[f][firms]
        for f in names])
    text = np.column_stack([
        np.where(values[f][firms] == "", None, values[f][firms])
        if catalog.BY_NAME[f].is_categorical else np.full(n, None, object) for f in names])
    rows = np.repeat(firms, k)
    return pa.Table.from_pydict({
        "as_of_date": pc.take(table.column("as_of_date"), rows),
        "enterprise_id": pc.take(table.column("enterprise_id"), rows),
        "model_version": pa.array([s.model_version] * (n * k), pa.string()),
        "feature": pa.array(np.tile(np.asarray(names, dtype=object), n), pa.string()),
        "value": pa.array(value.reshape(-1), pa.float64(), from_pandas=True),
        "value_text": pa.array(text.reshape(-1), pa.string()),
        "phi": pa.array(phi.reshape(-1)),
        "points": pa.array(points.reshape(-1)),
    }, schema=tables.arrow_schema("attributions"))


# The catalogue's features in Arrow's string order (Python orders str by code point, which is
# the byte order of their UTF-8 that Arrow sorts by).
_FEATURES_BY_NAME = np.argsort(np.asarray(catalog.NAMES, dtype=object), kind="stable")


def rules_rows(table: pa.Table, s: Scoring) -> pa.Table:
    """Cold-start firms: the transparent rules give PD, points and reasons (set beside the
    champion's typical firm: cold-start firms have no model of their own)."""
    values = _values(table, s.rules.features)
    pd_, logit, reasons = s.rules.score(values, s.typical)
    progress.advance("firms scored[rules]", table.num_rows)
    base = np.full(table.num_rows, s.scale.base_points(s.rules.base_logit))
    grade = s.master.grade(pd_, np.zeros(len(pd_), bool))
    return _scores_table(table, s, "rules", pd_, s.scale.score_from_logit(logit), grade, base,
                         reasons)


def in_default_rows(table: pa.Table, s: Scoring) -> pa.Table:
    """Firms already 90+ days past due: grade D, PD 1, the floor score, no reasons to rank."""
    n = table.num_rows
    return _scores_table(table, s, "in_default", np.ones(n), np.full(n, s.scale.min_score),
                         s.master.grade(np.ones(n), np.ones(n, bool)), np.full(n, np.nan),
                         [[] for _ in range(n)])

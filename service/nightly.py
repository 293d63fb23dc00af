"""The published risk tables (`smescore serve --warehouse F.duckdb`, or the BigQuery risk dataset
with --bq-project / --risk-dataset), read one firm at a time: its row of a night as the service's
answer (service.app.firm_score's JSON), its feature values from `attributions` for the explanation
page, and the comparison of a live answer with it (service/parity.py's rules).

Reads go through smescore.warehouse.RiskTableStore (DuckDB's SQL with `?` values on either engine),
the interface the run report and the monitoring read through; nothing here writes.
"""
from __future__ import annotations

import datetime as dt

_SHADOW_COLUMNS = ("model_version", "model_role", "pd", "score", "grade")


class NightlyTables:
    def __init__(self, store):
        self.store = store          # smescore.warehouse.Warehouse or a BigQuery RiskTables sink

    def __repr__(self) -> str:
        return f"NightlyTables({self.store!r})"

    def latest_date(self, enterprise_id: str) -> dt.date | None:
        """The last night that published a score for the firm."""
        rows = self.store.query("SELECT max(as_of_date) AS d FROM scores WHERE enterprise_id = ?",
                                [enterprise_id]).to_pylist()
        return rows[0]["d"] if rows else None

    def firm(self, enterprise_id: str, as_of: dt.date | None = None) -> tuple[dict, dict] | None:
        """(answer, values) of the firm on `as_of` (default: its last night), None when no night
        scored it then. The answer has the service's JSON shape: points per feature (the model's
        attributions; none for rules and in-default firms, which have no attributions rows), the
        reasons, and the shadow scores of that night."""
        as_of = as_of or self.latest_date(enterprise_id)
        if as_of is None:
            return None
        params = [as_of, enterprise_id]
        rows = self.store.query("SELECT * FROM scores WHERE as_of_date = ? AND enterprise_id = ?",
                                params).to_pylist()
        if not rows:
            return None
        row = rows[0]
        attributions = self.store.query(
            "SELECT feature, value, value_text, points FROM attributions "
            "WHERE as_of_date = ? AND enterprise_id = ? ORDER BY feature", params).to_pylist()
        shadow = []
        if self.store.has_table("scores_shadow"):
            shadow = self.store.query(
                f"SELECT {', '.join(_SHADOW_COLUMNS)} FROM scores_shadow "
                "WHERE as_of_date = ? AND enterprise_id = ? ORDER BY model_role DESC, model_version",
                params).to_pylist()
        base = row["base_points"]
        answer = {
            "enterprise_id": row["enterprise_id"], "as_of_date": row["as_of_date"],
            "model_version": row["model_version"], "model_role": row["model_role"],
            "score_source": row["score_source"], "pd": row["pd"], "score": row["score"],
            "grade": row["grade"], "base_points": None if base is None or base != base else base,
            "points": {a["feature"]: a["points"] for a in attributions},
            "reasons": [{k: r[k] for k in ("code", "feature", "points", "text_zh", "text_en")}
                        for r in row["reasons"]],
            "shadow": [{**{k: s[k] for k in _SHADOW_COLUMNS}, "error": None} for s in shadow]}
        # a category in value_text, a number in value (attributions' contract)
        values = {a["feature"]: a["value_text"] if a["value_text"] is not None else a["value"]
                  for a in attributions}
        return answer, values

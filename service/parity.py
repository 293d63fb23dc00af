"""The service's answers against the nightly risk tables: the check behind the parity tests and
bench/serve_parity.py. Exact, apart from floats compared to `tol` (1e-9): model version, role,
score source, PD, score, grade, base points, every feature's points, the reasons (code, feature,
points, both sentences) and the shadow scores (scores_shadow)."""
from __future__ import annotations

import datetime as dt
import math

import duckdb
import numpy as np
import pyarrow as pa

from transforms import catalog

TOL = 1e-9


def nightly(warehouse: str, as_of: dt.date) -> dict[str, dict]:
    """enterprise_id -> {'row': scores row, 'points': {feature: points}, 'shadow': [rows]}."""
    with duckdb.connect(warehouse, read_only=True) as con:
        def rows(sql):
            return con.execute(sql, [as_of]).fetch_arrow_table().to_pylist()
        scores = rows("SELECT * FROM scores WHERE as_of_date = ?")
        attributions = rows("SELECT enterprise_id, feature, points FROM attributions "
                            "WHERE as_of_date = ?")
        shadow = rows("SELECT * FROM scores_shadow WHERE as_of_date = ? "
                      "ORDER BY enterprise_id, model_role DESC, model_version")
    out = {r["enterprise_id"]: {"row": r, "points": {}, "shadow": []} for r in scores}
    for a in attributions:
        out[a["enterprise_id"]]["points"][a["feature"]] = a["points"]
    for s in shadow:
        out[s["enterprise_id"]]["shadow"].append(s)
    return out


def _close(a, b, tol) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(float(a) - float(b)) <= tol


def differences(answer: dict, expected: dict, tol: float = TOL) -> list[str]:
    """What differs between one service answer (service.app.firm_score's JSON) and the nightly
    rows of the firm; [] when they agree."""
    row, out = expected["row"], []
    firm = row["enterprise_id"]
    for key in ("enterprise_id", "model_version", "model_role", "score_source", "score", "grade"):
        if answer[key] != row[key]:
            out.append(f"{firm} {key}: service {answer[key]!r}, nightly {row[key]!r}")
    for key in ("pd", "base_points"):
        if not _close(answer[key], None if row[key] != row[key] else row[key], tol):
            out.append(f"{firm} {key}: service {answer[key]!r}, nightly {row[key]!r}")
    if str(answer["as_of_date"]) != str(row["as_of_date"]):
        out.append(f"{firm} as_of_date: {answer['as_of_date']} vs {row['as_of_date']}")
    if row["score_source"] == "model":
        if set(answer["points"]) != set(catalog.NAMES):
            out.append(f"{firm} points: {len(answer['points'])} features, not the catalogue's")
        bad = [f for f in catalog.NAMES if not _close(answer["points"].get(f),
                                                      expected["points"].get(f), tol)]
        if bad:
            out.append(f"{firm} points differ for {bad[:5]}")
    if len(answer["reasons"]) != len(row["reasons"]):
        out.append(f"{firm} reasons: {len(answer['reasons'])} vs {len(row['reasons'])}")
    for a, b in zip(answer["reasons"], row["reasons"]):
        for key in ("code", "feature", "text_zh", "text_en"):
            if a[key] != b[key]:
                out.append(f"{firm} reason {key}: {a[key]!r} vs {b[key]!r}")
        if not _close(a["points"], b["points"], tol):
            out.append(f"{firm} reason points: {a['points']} vs {b['points']}")
    mine = sorted(answer["shadow"], key=lambda s: (s["model_role"], s["model_version"] or ""))
    theirs = sorted(expected["shadow"], key=lambda s: (s["model_role"], s["model_version"]))
    if [(s["model_version"], s["model_role"], s["score"], s["grade"]) for s in mine] != \
            [(s["model_version"], s["model_role"], s["score"], s["grade"]) for s in theirs]:
        out.append(f"{firm} shadow: {mine} vs {theirs}")
    elif not all(_close(a["pd"], b["pd"], tol) for a, b in zip(mine, theirs)):
        out.append(f"{firm} shadow pd differs")
    return out


def records_json(tables: dict[str, pa.Table]) -> dict[str, list[dict]]:
    """Feed tables -> the `records` of a /v1/score/records request (dates as ISO strings)."""
    def plain(v):
        if isinstance(v, (dt.date, dt.datetime)):
            return v.isoformat()[:10]
        if isinstance(v, (float, np.floating)) and math.isnan(v):
            return None
        return v
    return {feed: [{k: plain(v) for k, v in row.items()} for row in t.to_pylist()]
            for feed, t in tables.items()}

"""The service's one door into the nightly scoring code (the adapter; nothing here re-implements it).

Everything the service computes goes through this module: point-in-time features from feed records
(transforms/validate.py + transforms/pit.py, the way featurize_shard runs them), the routing to the
model, the cold-start rules or grade D (models/eligibility.py), the model calls
(models/signature.py: the score signature for every version, the explain signature only for the
version that scores a firm officially, and only the explain signature for a batch the champion
alone scores officially where it gives the PD too; the nightly's digits, measured and tested),
champion / challenger / canary (beam_jobs/champion_challenger.py's canary draw and roles) and the
rows of the risk tables (models/score_rows.py). When the scoring core moves, only this file
follows it.

A `ModelSet` is one immutable view of the registry: the champion, its challengers, their loaded
SavedModels and the `Scoring` that turns their outputs into scores. The service swaps whole
ModelSets, so a batch is scored by one set from start to end.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_jobs import champion_challenger
from models import eligibility, score_rows, signature
from models import registry as model_registry
from models.eligibility import IN_DEFAULT, MODEL, RULES
from models.registry import check_model_features, check_saved_model
from models.rules import load_rules_config
from models.scorecard import load_scorecard_config
from transforms import book_relative, catalog, feeds, pit, validate
from transforms.featurize import FEATURE_SCHEMA

ROW = "__row"               # a firm's position in its batch; rides along through every stage
SERVICE_RUN_ID = "online"   # scores rows carry a run id; the service's answers are not a run
DEFAULT_CANARY_SHARE = 0.10      # beam_jobs/options.py --canary_share
DEFAULT_MIN_HISTORY_MONTHS = 6   # beam_jobs/options.py --min_history_months
FEEDS = tuple(feeds.FEEDS)


class RecordsRejected(ValueError):
    """Feed records the nightly job would reject: each with its feed, position, field and reason."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        first = problems[0]
        super().__init__(f"{len(problems)} record(s) rejected; first: {first['feed']}"
                         f"[{first['index']}] {first['reason']}")


class FirmNotScorable(ValueError):
    """The records hold no row for the firm asked about on that date (not in `enterprises`, or
    established after the as-of date)."""


# ----------------------------------------------------------------------------- the model set

@dataclasses.dataclass(frozen=True)
class RegistryState:
    """What decides which models score: the champion and the challengers, in order."""
    champion: str
    challengers: tuple[str, ...]

    @classmethod
    def read(cls, registry_dir: str) -> "RegistryState":
        reg = model_registry.Registry(registry_dir)
        champion = reg.champion()
        return cls(champion, tuple(v for v in reg.challengers() if v != champion))


@dataclasses.dataclass(frozen=True)
class ModelSet:
    state: RegistryState
    scoring: score_rows.Scoring
    roles: champion_challenger.Roles
    models: dict            # version -> loaded SavedModel, the champion first
    min_history_months: int
    loaded_at: dt.datetime

    @property
    def champion(self) -> str:
        return self.state.champion

    def scoring_as(self, version: str) -> score_rows.Scoring:
        return dataclasses.replace(self.scoring, model_version=version)


def load_model_set(registry_dir: str, canary_share: float = DEFAULT_CANARY_SHARE,
                   min_history_months: int = DEFAULT_MIN_HISTORY_MONTHS,
                   scorecard_config: str | None = None, rules_config: str | None = None,
                   state: RegistryState | None = None) -> ModelSet:
    """The registry's champion and challengers, loaded, with the nightly job's checks
    (publish.RunContext.start): same catalogue, complete SavedModels, a typical firm per card."""
    import tensorflow as tf    # heavy: only where models load
    reg = model_registry.Registry(registry_dir)
    state = state or RegistryState.read(registry_dir)
    versions = (state.champion, *state.challengers)
    cards = {v: reg.model_card(v) for v in versions}
    for v, card in cards.items():
        check_model_features(v, card)
        check_saved_model(v, reg.saved_model_path(v))
    scorecard = load_scorecard_config(scorecard_config)
    rules = load_rules_config(rules_config, scorecard.scale)
    scoring = score_rows.Scoring(scorecard.scale, scorecard.master_scale, rules.rules,
                                 state.champion, SERVICE_RUN_ID, score_rows.typical_firms(cards))
    models = {v: tf.saved_model.load(reg.saved_model_path(v)) for v in versions}
    for model in models.values():
        warm_up(model)
    return ModelSet(state, scoring, champion_challenger.Roles(state.champion, state.challengers, canary_share),
                    models, min_history_months, dt.datetime.now(dt.timezone.utc))


def warm_up(model) -> None:
    """One call of each signature on a firm with every feature missing: the first call of a
    loaded SavedModel optimises its graph (seconds), which belongs to loading, not to the first
    request."""
    table = feature_table([{"enterprise_id": "warm-up", "features": {}, "in_default": False,
                            "months_history": 0}], [dt.date(2000, 1, 31)])
    signature.scores(table, model)
    signature.attributions(table, model)


# ----------------------------------------------------------------------------- features

def feed_table(feed: str, records: list[dict]) -> pa.Table:
    """Validated records (the request's, service/schemas.py: dicts of the feed's columns, an
    absent column null) as the feed's Arrow table, like a Parquet feed: one Arrow conversion of
    the dicts into a struct column, split into columns (the largest firm's 3,300 records:
    2 ms against 10 for a column at a time from Python)."""
    schema = feeds.FEEDS[feed].schema
    rows = pa.array(records, type=pa.struct(list(schema)))
    return pa.Table.from_arrays(rows.flatten(), schema=schema)


def _field_of(reason: str, feed: str) -> str | None:
    """The column a validation reason names ('negative amount' -> 'amount')."""
    for name in sorted(feeds.FEEDS[feed].schema.names, key=len, reverse=True):
        if name in reason:
            return name
    return "enterprise_id" if "enterprise_id" in reason else None


def _problems(feed: str, table: pa.Table, rejects: list[dict], dates_as_dates: bool) -> list[dict]:
    """Rejected records -> where they were in the request, by their canonical JSON (rendered the
    way validate renders them: validate_table's dates as timestamps, the others' as dates)."""
    if not rejects:
        return []
    position = {}
    frame = table.select(feeds.FEEDS[feed].schema.names).to_pandas(date_as_object=dates_as_dates)
    for i, row in enumerate(frame.to_dict("records")):
        position.setdefault(validate.record_json(row), []).append(i)
    out = []
    for r in rejects:
        indices = position.get(r["record_json"]) or [None]
        index = indices.pop(0) if len(indices) > 1 else indices[0]
        out.append({"feed": feed, "index": index, "field": _field_of(r["reason"], feed),
                    "reason": r["reason"]})
    return out


def validated_tables(tables: dict[str, pa.Table], strict: bool) -> tuple[dict, list[dict]]:
    """The nightly validation of each feed (contract, plausibility, duplicates, unknown firms).
    strict (a client's request): any rejected record is an error (RecordsRejected). Otherwise (the
    bank's feed folder) the rejected records are left out, as the nightly job leaves them out."""
    valid, problems = {}, []
    for feed in FEEDS:
        table = tables.get(feed, feeds.FEEDS[feed].schema.empty_table())
        good, rejects = validate.validate_typed(feed, table)
        problems += _problems(feed, table, rejects, False)
        good, dups = validate.split_duplicates(feed, good)
        problems += _problems(feed, table, dups, True)
        valid[feed] = good
    firms = valid["enterprises"].column("enterprise_id")
    for feed in FEEDS[1:]:
        unknown = pc.invert(pc.is_in(valid[feed].column("enterprise_id"), value_set=firms))
        if pc.any(unknown).as_py():
            rows = valid[feed].filter(unknown).to_pandas(date_as_object=True)
            problems += _problems(feed, tables[feed], validate.rejected(
                feed, rows, "unknown enterprise_id (no enterprises record in the request)"), True)
            valid[feed] = valid[feed].filter(pc.invert(unknown))
    if strict and problems:
        raise RecordsRejected(problems)
    return valid, problems


def features_from_records(tables: dict[str, pa.Table], as_of: dt.date,
                          book_medians: book_relative.Medians,
                          strict: bool = True) -> tuple[pa.Table, list[dict]]:
    """Feed records of a firm and its related firms -> (their feature table as of D, rejected
    records): the nightly featurize_shard over one controller group, its changes read against the
    book's medians at D (FeedStore.book_medians), as the nightly job reads them."""
    valid, problems = validated_tables(tables, strict)
    features = pit.compute_features(pit.FirmFrames.from_tables(valid), as_of)
    return book_relative.adjust(features, {as_of: book_medians}), problems


def feature_table(rows: list[dict], as_of_dates: list[dt.date]) -> pa.Table:
    """Feature values sent by a client -> the nightly feature table (float32 / string columns)."""
    columns = {"enterprise_id": [r["enterprise_id"] for r in rows], "as_of_date": as_of_dates}
    for f in catalog.FEATURES:
        columns[f.name] = [r["features"].get(f.name) for r in rows]
    columns["in_default"] = [bool(r["in_default"]) for r in rows]
    columns["months_history"] = [int(r["months_history"]) for r in rows]
    columns["label_default_12m"] = [None] * len(rows)
    return pa.Table.from_pydict(columns, schema=FEATURE_SCHEMA)


@dataclasses.dataclass(frozen=True)
class FeatureRows:
    """Feature values of a request, made into a table with the rest of its batch (one table
    per batch is cheaper than one per request)."""
    rows: list
    as_of_dates: list

    @property
    def num_rows(self) -> int:
        return len(self.rows)


def batch_table(parts: list) -> pa.Table:
    """A batch's parts (feature tables and FeatureRows), in order, as one feature table."""
    tables, rows, dates = [], [], []
    for part in parts:
        if isinstance(part, FeatureRows):
            rows += part.rows
            dates += part.as_of_dates
            continue
        if rows:
            tables.append(feature_table(rows, dates))
            rows, dates = [], []
        tables.append(part)
    if rows:
        tables.append(feature_table(rows, dates))
    return pa.concat_tables(tables)


# ----------------------------------------------------------------------------- scoring

@dataclasses.dataclass
class Scored:
    """One firm's answer: its `scores` row, its points per feature, its shadow rows, its values."""
    row: dict
    points: dict          # feature -> points (model: every feature; rules: the rule features)
    values: dict          # feature -> the firm's value (what the points are about)
    shadow: list          # the challengers' (and, for a canary firm, the champion's) scores rows


def _rows_by_position(scores: pa.Table, positions: np.ndarray, out: dict, key: str) -> None:
    for pos, row in zip(positions, scores.to_pylist()):
        out.setdefault(int(pos), {})[key] = row


def _attribution_points(attributions: pa.Table, positions, out: dict) -> None:
    k = len(catalog.NAMES)
    points = attributions.column("points").to_numpy().reshape(-1, k)
    value = attributions.column("value").to_pylist()
    text = attributions.column("value_text").to_pylist()
    for i, pos in enumerate(positions):
        firm = out.setdefault(int(pos), {})
        firm["points"] = dict(zip(catalog.NAMES, points[i].tolist()))
        firm["values"] = {f: (text[i * k + j] if catalog.BY_NAME[f].is_categorical
                              else value[i * k + j]) for j, f in enumerate(catalog.NAMES)}


def _rule_points(table: pa.Table, s: score_rows.Scoring) -> tuple[np.ndarray, list]:
    """Points per rule feature of cold-start firms (the rules' own adjustments, as points)."""
    values = score_rows._values(table, s.rules.features)
    points = s.scale.points_from_phi(s.rules.adjustments(s.rules.outcome_indices(values)))
    return points, values


def _plain(v):
    if isinstance(v, (float, np.floating)):
        return None if np.isnan(v) else float(v)
    return None if v == "" else v


def score_table(ms: ModelSet, table: pa.Table) -> list[Scored]:
    """A feature table (many firms, any as-of dates) -> one Scored per row, in order: the nightly
    routing, one model call per version for the whole table, the nightly rows."""
    table = table.append_column(ROW, pa.array(np.arange(table.num_rows), pa.int64()))
    parts = {MODEL: None, RULES: None, IN_DEFAULT: None}
    parts.update(eligibility.route(table, ms.min_history_months))
    found: dict[int, dict] = {}
    s = ms.scoring
    if parts[IN_DEFAULT] is not None:
        t = parts[IN_DEFAULT]
        _rows_by_position(score_rows.in_default_rows(t, s), t.column(ROW).to_numpy(), found, "row")
    if parts[RULES] is not None:
        t = parts[RULES]
        pos = t.column(ROW).to_numpy()
        _rows_by_position(score_rows.rules_rows(t, s), pos, found, "row")
        points, values = _rule_points(t, s)
        for i, p in enumerate(pos):
            found[int(p)]["points"] = dict(zip(s.rules.features, points[i].tolist()))
            found[int(p)]["values"] = {f: _plain(values[f][i]) for f in s.rules.features}
    if parts[MODEL] is not None:
        _score_model_part(ms, parts[MODEL], found)
    return [Scored(found[i]["row"], found[i].get("points", {}), found[i].get("values", {}),
                   found[i].get("shadow", [])) for i in range(table.num_rows)]


def _challenger_outputs(ms: ModelSet, table: pa.Table, inputs: dict, explain_rows) -> dict:
    """{challenger: its scores (and, for the canary, its attributions of `explain_rows`)}; a
    failure becomes the error message (ChampionChallengersHandler's rule: a shadow model must not
    stop the answer, and a failed canary leaves its firms to the champion)."""
    out = {}
    for version, model in ms.models.items():
        if version == ms.champion:
            continue
        try:
            scored = signature.scores(table, model, inputs)
            explained = None
            if version == ms.roles.canary and explain_rows.any():
                sub = {k: v[explain_rows] for k, v in inputs.items()}
                explained = signature.attributions(table.filter(pa.array(explain_rows)), model, sub)
            out[version] = (scored, explained)
        except Exception as err:  # noqa: BLE001 - a shadow model must not stop the answer
            out[version] = f"{type(err).__name__}: {err}"[:500]
    return out


def _official(ms: ModelSet, table: pa.Table, inputs: dict, rows: np.ndarray, version: str,
              scored: dict, explained: dict | None, role: str, found: dict) -> None:
    """The official rows (scores + points) of `rows` of the table, scored by `version`."""
    model = ms.models[version]
    part = table if rows.all() else table.filter(pa.array(rows))
    if explained is None:
        explained = signature.attributions(part, model, {k: v[rows] for k, v in inputs.items()})
    out = signature.with_outputs(part, {k: v[rows] for k, v in scored.items()}, explained)
    scores, attributions = score_rows.model_rows(out, ms.scoring_as(version), role)
    positions = part.column(ROW).to_numpy()
    _rows_by_position(scores, positions, found, "row")
    _attribution_points(attributions, positions, found)


def _shadow(ms: ModelSet, version: str, role: str, scored: dict, rows, positions,
            found: dict) -> None:
    """What the service keeps of a shadow score (the nightly's scores_shadow row, less the
    reasons, which the shadow log and the answer do not carry)."""
    pd_, logit = scored["pd"][rows], scored["logit"][rows]
    score, grade = score_rows.score_and_grade(pd_, logit, ms.scoring_as(version))
    for p, d, sc, g in zip(positions[rows], pd_.tolist(), score.tolist(), grade):
        found.setdefault(int(p), {}).setdefault("shadow", []).append(
            {"model_version": version, "model_role": role, "pd": d, "score": int(sc), "grade": g})


def _score_model_part(ms: ModelSet, table: pa.Table, found: dict) -> None:
    """The nightly routing (beam_jobs/champion_challenger.py split_official_and_shadow: the same
    canary firms, the same roles) with the lean model calls of models/signature.py: every version
    scores every firm, and only the version that scores a firm officially explains it."""
    ids = table.column("enterprise_id").to_pylist()
    positions = table.column(ROW).to_numpy()
    inputs = signature.raw_inputs(table)
    canary = ms.roles.canary
    mask = (champion_challenger.canary_mask(ids, ms.roles.canary_share) if canary
            else np.zeros(len(ids), bool))
    explained = None
    if not mask.any() and signature.explains_pd(ms.models[ms.champion]):
        # every firm is the champion's to score officially: one call gives its pd and points
        champion, explained = signature.scores_and_attributions(table, ms.models[ms.champion],
                                                                inputs)
    else:
        champion = signature.scores(table, ms.models[ms.champion], inputs)   # its failure fails
    challengers = _challenger_outputs(ms, table, inputs, mask)
    if canary and not isinstance(challengers[canary], tuple):
        mask = np.zeros(len(ids), bool)      # a failed canary: the champion scores its firms
    if (~mask).any():
        _official(ms, table, inputs, ~mask, ms.champion, champion, explained, "champion", found)
    if mask.any():
        _official(ms, table, inputs, mask, canary, challengers[canary][0], challengers[canary][1],
                  "canary", found)
        _shadow(ms, ms.champion, "champion", champion, mask, positions, found)
    everyone = np.ones(len(ids), bool)
    for version in ms.state.challengers:
        out = challengers[version]
        if isinstance(out, tuple):
            _shadow(ms, version, "challenger", out[0], everyone, positions, found)
        else:
            for p in positions:
                found.setdefault(int(p), {}).setdefault("shadow", []).append(
                    {"model_role": "challenger", "model_version": version,
                     "error": f"challenger {version} failed: {out}"[:500]})

"""The scoring core as plain functions, for a notebook or a server: no Beam, nothing written.

    from smescore import api
    model = api.load_model("out/demo/registry")                   # the champion
    features = api.compute_features(records, dt.date(2026, 10, 31))
    scored = api.score(model, features)                           # scores, attributions

`score` routes, scores and explains with the functions the nightly pipeline maps over its shards
(models/eligibility.py, models/signature.py, models/score_rows.py) and returns rows in the
contract of the `scores` and `attributions` tables (smescore/tables.py); `compute_features`
validates records and computes the point-in-time features as the nightly job does
(transforms/featurize.py).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models import eligibility, score_rows, signature
from models import registry as model_registry
from models.rules import load_rules_config
from models.scorecard import load_scorecard_config
from smescore import runtime, tables
from smescore.errors import BadInput
from smescore.warehouse import conform
from transforms import book_relative, featurize


@dataclasses.dataclass(frozen=True)
class ScoringModel:
    """A registry version, loaded: its SavedModel, model card and what turns a PD into a score."""
    version: str
    card: dict
    saved_model: Any                  # tf.saved_model.load of the version's SavedModel
    scoring: score_rows.Scoring
    min_history_months: int


class Features(NamedTuple):
    features: pa.Table                # one row per firm (transforms/featurize.py FEATURE_SCHEMA)
    rejected: list[dict]              # feed, record_json, reason of every record left out
    shards: list[pa.Table]            # the same rows cut into the nightly job's shards


class Scored(NamedTuple):
    scores: pa.Table                  # the `scores` table's rows, sorted by enterprise_id
    attributions: pa.Table            # the `attributions` rows, by enterprise_id and feature


def load_model(registry: str, version: str | None = None, *, scorecard_config: str | None = None,
               rules_config: str | None = None, run_id: str = "api",
               min_history_months: int = eligibility.MIN_HISTORY_MONTHS) -> ScoringModel:
    """A version of the model registry (default: its champion) with the scorecard and
    cold-start rules configs (default: the packaged ones, as the nightly job's defaults).
    `run_id` is written into every row `score` returns."""
    reg = model_registry.Registry(registry)
    version = version or reg.champion()
    if version not in reg.versions():
        raise BadInput(f"unknown model version {version!r}; the registry {registry!r} holds "
                       f"{reg.versions()}")
    card = reg.model_card(version)
    model_registry.check_model_features(version, card)
    path = reg.saved_model_path(version)
    model_registry.check_saved_model(version, path)
    runtime.load_tensorflow()
    # TensorFlow loads with the first model, after its environment is set (smescore/runtime.py)
    import tensorflow as tf
    scorecard = load_scorecard_config(scorecard_config)
    rules = load_rules_config(rules_config, scorecard.scale)
    scoring = score_rows.Scoring(scorecard.scale, scorecard.master_scale, rules.rules, version,
                                 run_id, score_rows.typical_firms({version: card}))
    return ScoringModel(version, card, tf.saved_model.load(path), scoring, min_history_months)


def compute_features(records: Mapping[str, pa.Table | pd.DataFrame], as_of: dt.date,
                     n_shards: int = featurize.DEFAULT_SHARDS,
                     book_medians: book_relative.Medians | None = None) -> Features:
    """Raw records of a set of firms, {feed: Arrow table or DataFrame} for every feed of
    transforms/feeds.py, -> their features as of `as_of` and the records rejected (with the
    reason). Related-party features look at the firm's controller group: give all its firms.
    `shards` cuts the firms as the nightly job does with the same --n_shards: `score` calls the
    model once per shard, as RunInference does, so the float32 rounding is the nightly's too.

    The changes are read against the book (transforms/book_relative.py): by default the records
    are the book, and its medians are taken over them; to score a few firms of a larger book,
    pass that book's `book_medians` at `as_of` (`book_medians_of` its features)."""
    shards, rejected = featurize.feature_tables(records, [as_of], n_shards=n_shards)
    medians = (book_relative.book_medians(shards) if book_medians is None
               else {as_of: book_medians})
    shards = [book_relative.adjust(shard, medians) for shard in shards]
    features = (_sorted(pa.concat_tables(shards), ["enterprise_id"]) if shards
                else featurize.FEATURE_SCHEMA.empty_table())
    return Features(features, rejected, shards)


def book_medians_of(records: Mapping[str, pa.Table | pd.DataFrame], as_of: dt.date
                    ) -> book_relative.Medians:
    """The book's median of each book-relative change at `as_of`, over the records of the whole
    book: what `compute_features` reads a few of its firms against."""
    shards, _ = featurize.feature_tables(records, [as_of])
    return book_relative.book_medians(shards).get(as_of, book_relative.medians([]))


def feature_table(features: pa.Table | pd.DataFrame) -> pa.Table:
    """A feature table or DataFrame (enterprise_id, as_of_date, the catalogue's features,
    in_default, months_history; a label is not needed) in the feature schema."""
    if isinstance(features, pa.Table):
        features = features.to_pandas()
    columns = [n for n in featurize.FEATURE_SCHEMA.names if n != "label_default_12m"]
    missing = [n for n in columns if n not in features]
    if missing:
        raise BadInput(f"the features lack columns {missing}")
    frame = features[columns].assign(label_default_12m=float("nan"))
    return featurize.features_to_arrow(frame)


def score(model: ScoringModel, features) -> Scored:
    """PD, score, grade, base points and up to four reasons per firm (`scores` rows), and the
    points of every feature of the model-scored firms (`attributions` rows), as the nightly job
    publishes them: firms in default get grade D, firms with a short history the cold-start
    rules, the rest the model. `features`: a feature table or DataFrame (one model call), a list
    of them (one call each), or `compute_features`' result (one call per shard: the nightly's
    rows to the last digit; other cuts of the same firms may differ in the float32 rounding of
    pd and points, never in score, grade or reasons)."""
    batches = (features.shards if isinstance(features, Features) else
               list(features) if isinstance(features, (list, tuple)) else [features])
    scores = [tables.arrow_schema("scores").empty_table()]
    attributions = [tables.arrow_schema("attributions").empty_table()]
    for batch in batches:
        routes = eligibility.route(feature_table(batch), model.min_history_months)
        if eligibility.MODEL in routes:
            rows, points = score_rows.model_rows(
                signature.with_model_outputs(routes[eligibility.MODEL], model.saved_model),
                model.scoring)
            scores.append(rows)
            attributions.append(points)
        if eligibility.RULES in routes:
            scores.append(score_rows.rules_rows(routes[eligibility.RULES], model.scoring))
        if eligibility.IN_DEFAULT in routes:
            scores.append(score_rows.in_default_rows(routes[eligibility.IN_DEFAULT],
                                                     model.scoring))
    # in the tables' contract as published: NaN is NULL (smescore/warehouse.py conform)
    return Scored(conform("scores", _sorted(pa.concat_tables(scores), ["enterprise_id"])),
                  conform("attributions", _sorted(pa.concat_tables(attributions),
                                                  ["enterprise_id", "feature"])))


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.take(pc.sort_indices(table, [(k, "ascending") for k in keys]))

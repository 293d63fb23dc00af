"""The feature table of one group of firms from their records: validation, duplicates, features.

The nightly job and the training snapshots call `featurize` once per shard of firms (Beam,
transforms/beam_features.py); the Python API (smescore/api.py) calls `feature_tables` on the
records it is given. Related-party features read the firm's controller group: give every firm of
a group, as a shard does.
"""
from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from transforms import feeds, pit, progress, validate

DEFAULT_SHARDS = 32     # firm shards of a nightly run (--n_shards), so of the API's model calls

FEATURE_SCHEMA = pit.FEATURE_SCHEMA       # what pit.compute_features returns


# Firms a shard holds at most: a larger book gets more shards than --n_shards, so that one shard's
# feed rows, features and model calls (what a worker holds at a time) stay the size they have
# at 100k firms in the default 32 shards, whatever the book.
MAX_FIRMS_PER_SHARD = 3_200


def shard_count(n_firms: int, n_shards: int) -> int:
    """At least `n_shards`; more when `n_firms` would put over MAX_FIRMS_PER_SHARD in one."""
    return max(n_shards, -(-n_firms // MAX_FIRMS_PER_SHARD))


def shard_of(controller_ids, n_shards: int) -> np.ndarray:
    """A firm's shard: by its controller, so related parties meet in one shard. Stable across
    runs, processes and machines (unlike Python's hash)."""
    return np.array([zlib.crc32(c.encode()) % n_shards for c in controller_ids], dtype=np.int64)


_FLOAT_FIELDS = [f.name for f in FEATURE_SCHEMA if f.type == pa.float32()]


def features_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A feature frame (smescore.api's callers give DataFrames) as a FEATURE_SCHEMA table, each
    column as `pa.Table.from_pandas(frame, schema=FEATURE_SCHEMA)` converts it (NaN -> null,
    float64 rounded to float32), without its pandas metadata: the float columns in one block, the
    rest column by column."""
    missing = [f.name for f in FEATURE_SCHEMA if f.name not in frame.columns]
    if missing:
        raise KeyError(f"feature frame lacks {missing[:5]}")
    floats = frame[_FLOAT_FIELDS].to_numpy(np.float64).astype(np.float32)
    columns = {f.name: frame[f.name] for f in FEATURE_SCHEMA}
    columns.update({name: floats[:, j] for j, name in enumerate(_FLOAT_FIELDS)})
    return pit.feature_table(columns)


def featurize(tables: Mapping[str, pa.Table], as_of_dates: Sequence[dt.date],
              outcome_end: dt.date | None = None) -> tuple[list[pa.Table], list[dict]]:
    """Validated records of one group of firms (the enterprises already deduplicated) -> one
    feature table per as-of date that has firms, and the duplicate records rejected here, where
    every record of a key is finally in one place."""
    merged, rejects = {}, []
    for feed, table in sorted(tables.items()):
        if feed != "enterprises":
            table, dupes = validate.split_duplicates(feed, table)
            rejects += dupes
        merged[feed] = table
    frames = pit.FirmFrames.from_tables(merged)
    out = []
    for as_of in as_of_dates:
        features = pit.compute_features(frames, as_of, outcome_end)
        progress.advance("firms featurized", features.num_rows)
        if features.num_rows:
            out.append(features)
    return out, rejects


def feature_tables(records: Mapping[str, pa.Table | pd.DataFrame], as_of_dates: Sequence[dt.date],
                   outcome_end: dt.date | None = None, n_shards: int = 1
                   ) -> tuple[list[pa.Table], list[dict]]:
    """Raw records of a set of firms ({feed: table or frame}, every feed of transforms/feeds.py)
    -> their feature tables, one per shard (as the nightly job cuts them with --n_shards) and
    as-of date, and every rejected record with its reason, validated as the nightly job
    validates them: typed to the contract, duplicate firms and records of unknown firms rejected."""
    missing = [f for f in feeds.FEEDS if f not in records]
    if missing:
        raise ValueError(f"records of feeds {missing} are missing; give every feed of "
                         f"{list(feeds.FEEDS)} (an empty table for a feed without records)")
    valid, rejects = {}, []
    for feed in feeds.FEEDS:
        table = records[feed]
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        valid[feed], bad = validate.validate_table(feed, table)
        rejects += bad
    valid["enterprises"], dupes = validate.split_duplicates("enterprises", valid["enterprises"])
    rejects += dupes
    ids = valid["enterprises"].column("enterprise_id").combine_chunks()
    for feed in feeds.FEEDS:
        if feed == "enterprises":
            continue
        known = pc.is_in(valid[feed].column("enterprise_id"), value_set=ids).to_numpy(
            zero_copy_only=False)
        if not known.all():
            rows = valid[feed].filter(pa.array(~known)).to_pandas(date_as_object=True)
            rejects += validate.rejected(feed, rows, "unknown enterprise_id")
        valid[feed] = valid[feed].filter(pa.array(known))
    shard = shard_of(valid["enterprises"].column("controller_id").to_pylist(),
                     shard_count(valid["enterprises"].num_rows, n_shards))
    firms = pa.Table.from_pydict({"enterprise_id": valid["enterprises"].column("enterprise_id"),
                                  "shard": shard})
    tables = []
    for s in np.unique(shard):
        ids = firms.filter(pc.equal(firms.column("shard"), s)).column("enterprise_id")
        part = {feed: t.filter(pc.is_in(t.column("enterprise_id"), value_set=ids.combine_chunks()))
                for feed, t in valid.items()}
        features, more = featurize(part, as_of_dates, outcome_end)
        tables += features
        rejects += more
    return tables, rejects

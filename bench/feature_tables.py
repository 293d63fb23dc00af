"""The feature tables of a book by this checkout's code, and their comparison, bit for bit, with
the tables another checkout wrote: the check that a change of the point-in-time code keeps every
feature and label.

    PYTHONPATH=OTHER python bench/feature_tables.py --feeds F --out OTHER_TABLES   # other code
    python -m bench.feature_tables --feeds F --out TABLES --compare OTHER_TABLES     # this code

Writes, under --out, three tables (Parquet): `train` (the whole book in the nightly's 32 shards
at two labelled dates), `score` (two scoring dates, one mid-month) and `groups` (300 controller
groups alone, the scoring service's path), and prints their rows and seconds. With --compare, the
same tables written by the other code are compared: equal tables, and every float column equal as
raw bits. The file imports nothing of bench/, so it runs as it is over an older checkout.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATES = {"train": ([dt.date(2024, 10, 31), dt.date(2025, 6, 30)], dt.date(2026, 10, 31)),
         "score": ([dt.date(2026, 10, 31), dt.date(2026, 7, 15)], None)}
GROUPS = 300


def write(feeds_dir: str, out: str, seed: int = 3) -> dict:
    from service.feed_store import FeedStore
    from transforms import featurize
    os.makedirs(out, exist_ok=True)
    store = FeedStore(feeds_dir)
    result = {}
    for name, (dates, outcome_end) in DATES.items():
        start = time.perf_counter()
        tables, _ = featurize.feature_tables(store.tables, dates, outcome_end, n_shards=32)
        pq.write_table(pa.concat_tables(tables), os.path.join(out, f"{name}.parquet"))
        result[name] = {"rows": sum(t.num_rows for t in tables),
                        "seconds": round(time.perf_counter() - start, 1)}
    controllers = sorted(store.group)
    chosen = [controllers[i] for i in np.random.default_rng(seed).choice(
        len(controllers), min(GROUPS, len(controllers)), replace=False)]
    start, tables = time.perf_counter(), []
    for controller in chosen:
        group = store.group_of(store.group[controller][0])
        tables += featurize.feature_tables(group, *DATES["train"])[0]
    pq.write_table(pa.concat_tables(tables), os.path.join(out, "groups.parquet"))
    result["groups"] = {"rows": sum(t.num_rows for t in tables),
                        "seconds": round(time.perf_counter() - start, 1)}
    return result


def compare(out: str, other: str) -> dict:
    differences = {}
    for name in ("train", "score", "groups"):
        a = pq.read_table(os.path.join(other, f"{name}.parquet"))
        b = pq.read_table(os.path.join(out, f"{name}.parquet"))
        if a.num_rows != b.num_rows or a.column_names != b.column_names:
            differences[name] = ["(rows or columns)"]
        else:
            differences[name] = [c for c in a.column_names if not _same(a.column(c), b.column(c))]
    return differences


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal values; floats equal as raw bits where not null (so -0.0 is not 0.0)."""
    if a.type != b.type or not a.is_null().equals(b.is_null()):
        return False
    if not pa.types.is_floating(a.type):
        return a.equals(b)
    x, y = (np.asarray(c.to_numpy(zero_copy_only=False)) for c in (a, b))
    valid = ~a.is_null().to_numpy(zero_copy_only=False)
    return np.array_equal(x.view(f"u{x.itemsize}")[valid], y.view(f"u{y.itemsize}")[valid])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feeds", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--compare", default=None, help="tables another checkout wrote")
    args = p.parse_args(argv)
    result = {"tables": write(args.feeds, args.out)}
    if args.compare:
        result["differences"] = compare(args.out, args.compare)
        print(f"[feature_tables] columns that differ: {result['differences']}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 1 if any(result.get("differences", {}).values()) else 0


if __name__ == "__main__":
    sys.exit(main())

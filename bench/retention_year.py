"""Warehouse bytes per night, before and after the retention policy, and what a year comes to.

    python -m bench.retention_year --warehouse W.duckdb [--nights 62] [--scale-to 100000]

W holds one real night (e.g. bench.nightly_scale's warehouse-25000.duckdb). On a copy:
1. bytes per night: each table's rows of that night alone in a fresh DuckDB file (used blocks
   after a checkpoint), and the night's attributions as the policy compacts them;
2. the policy on stored dates, for real: the night is copied to --nights consecutive dates ending
   on its own date (every risk table, as_of_date replaced), and after each copy the nightly hook's
   `retention.apply` runs with the default policy, as the job does; the used bytes after every
   night show the steady growth;
3. a year of nights from the measured parts: every night's kept tables, full attributions for
   the latest N dates and 12 month-ends, compact rows for the rest; scaled to --scale-to firms by
   the firm ratio (rows, hence bytes, are per firm).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile

import duckdb

from bench._common import write_json
from smescore import retention
from smescore import tables as contract
from smescore.warehouse import Warehouse

MIB = 1024 ** 2


def used_bytes(path: str) -> int:
    with duckdb.connect(path) as con:
        con.execute("CHECKPOINT")
        row = dict(zip(("database_name", "database_size", "block_size", "total_blocks",
                        "used_blocks"), con.execute("PRAGMA database_size").fetchone()))
        return int(row["used_blocks"]) * int(row["block_size"])


def night_of(path: str) -> tuple[dt.date, int]:
    with duckdb.connect(path, read_only=True) as con:
        as_of, firms = con.execute("SELECT as_of_date, COUNT(*) FROM scores GROUP BY 1 "
                                   "ORDER BY 1 DESC LIMIT 1").fetchone()
    return as_of, firms


def table_bytes(source: str, as_of: dt.date, work: str) -> dict:
    """{table: (rows, bytes)} of one night, each table alone in a fresh file (the night's
    compact rows as `smescore retain` would write them)."""
    columns_sql = ", ".join(contract.quote(c)
                            for c in contract.table("attributions_compact").names)
    with duckdb.connect(source) as con:       # what retention.compact_date inserts
        con.execute(f"CREATE OR REPLACE TABLE night_compact AS SELECT {columns_sql} "
                    f"FROM attribution_summary WHERE as_of_date = ?", [as_of])
    out = {}
    for name in contract.TABLES:
        path = os.path.join(work, f"one-{name}.duckdb")
        if os.path.exists(path):
            os.remove(path)
        Warehouse(path).ensure_schema()
        empty = used_bytes(path)
        table_sql = contract.quote("night_compact" if name == "attributions_compact" else name)
        with duckdb.connect(source, read_only=True) as src:
            rows = src.execute(f"SELECT * FROM {table_sql} WHERE as_of_date = ?",
                               [as_of]).to_arrow_table()
        with duckdb.connect(path) as con:
            con.register("night_rows", rows)
            con.execute(f"INSERT INTO {contract.quote(name)} SELECT * FROM night_rows")
        out[name] = (rows.num_rows, used_bytes(path) - empty)
        os.remove(path)
    return out


def copy_night(con, base: dt.date, day: dt.date) -> None:
    """The `base` night's rows of every date-partitioned table (and its run) again, as of `day`."""
    for name, t in contract.TABLES.items():
        if t.partition_by != "as_of_date" or name == "attributions_compact":
            continue
        table_sql = contract.quote(name)
        con.execute(f"INSERT INTO {table_sql} SELECT * REPLACE (CAST(? AS DATE) AS as_of_date) "
                    f"FROM {table_sql} WHERE as_of_date = ?", [day, base])
    con.execute("INSERT INTO runs SELECT * REPLACE (CAST(? AS DATE) AS as_of_date, "
                "attempt_id || '-' || CAST(? AS VARCHAR) AS attempt_id) FROM runs "
                "WHERE as_of_date = ?", [day, day, base])


def simulate(source: str, as_of: dt.date, nights: int, work: str, policy) -> list[dict]:
    path = os.path.join(work, "year.duckdb")
    shutil.copyfile(source, path)
    first = as_of - dt.timedelta(days=nights - 1)
    with duckdb.connect(path) as con:           # the real night moves to the first date
        for name, t in contract.TABLES.items():
            if t.partition_by == "as_of_date" or name == "runs":
                con.execute(f"UPDATE {contract.quote(name)} SET as_of_date = ? "
                            f"WHERE as_of_date = ?", [first, as_of])
    trace = []
    for k in range(nights):
        day = first + dt.timedelta(days=k)
        if k:           # the night before is the latest, so the policy still keeps it whole
            with duckdb.connect(path) as con:
                copy_night(con, day - dt.timedelta(days=1), day)
        report = retention.apply(path, policy)
        trace.append({"night": day.isoformat(), "compacted": report["dates"],
                      "used_bytes": report["used_bytes_after"],
                      "file_bytes": report["file_bytes_after"]})
        print(f"{day}  used {report['used_bytes_after'] / MIB:8.1f} MiB  file "
              f"{report['file_bytes_after'] / MIB:8.1f} MiB  compacted {report['dates']}",
              flush=True)
    return trace


def year(per_table: dict, policy, scale: float) -> dict:
    attributions = per_table["attributions"][1]
    kept = sum(b for name, (_, b) in per_table.items()
               if name not in ("attributions", "attributions_compact"))
    compact = per_table["attributions_compact"][1]
    full_dates = policy.full_last_dates + (12 if policy.full_month_ends else 0)
    before = 365 * (kept + attributions)
    after = 365 * kept + full_dates * attributions + (365 - full_dates) * compact
    return {"night_bytes_before": round((kept + attributions) * scale),
            "night_bytes_after": round((kept + compact) * scale),
            "year_bytes_before": round(before * scale), "year_bytes_after": round(after * scale),
            "full_attribution_dates_kept": full_dates}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", required=True, help="DuckDB file with one real night")
    parser.add_argument("--nights", type=int, default=62, help="nights simulated with the policy")
    parser.add_argument("--scale-to", type=int, default=100_000, help="firms the year is for")
    parser.add_argument("--out", default=None, help="JSON of the figures")
    args = parser.parse_args(argv)
    policy = retention.Policy.load()
    as_of, firms = night_of(args.warehouse)
    work = tempfile.mkdtemp(prefix="retention-year-", dir=os.path.dirname(args.warehouse))
    try:
        source = os.path.join(work, "source.duckdb")
        shutil.copyfile(args.warehouse, source)
        Warehouse(source).ensure_schema()
        per_table = table_bytes(source, as_of, work)
        scale = args.scale_to / firms
        print(f"one night of {firms:,} firms ({as_of}):")
        for name, (rows, b) in per_table.items():
            print(f"  {name:<22} {rows:>10,} rows {b / MIB:9.2f} MiB")
        figures = {"firms": firms, "as_of": as_of.isoformat(), "scaled_to": args.scale_to,
                   "policy": {"full_last_dates": policy.full_last_dates,
                              "full_month_ends": policy.full_month_ends},
                   "per_table": per_table, **year(per_table, policy, scale)}
        figures["simulated"] = simulate(source, as_of, args.nights, work, policy)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for key in ("night_bytes_before", "night_bytes_after", "year_bytes_before", "year_bytes_after"):
        print(f"{key} per {args.scale_to:,} firms: {figures[key] / 1024 ** 3:.3f} GiB")
    write_json(args.out, figures)
    return figures


if __name__ == "__main__":
    main()

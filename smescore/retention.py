"""Retention for the risk tables: what keeps the warehouse from growing by ~100 rows a firm a night.

The policy (smescore/config/retention.json, or a file of the same form):
  attributions.full_last_dates   the full `attributions` rows of the latest N published dates stay
  attributions.full_month_ends   ... and those of every month-end date (the dates the monthly
                                 reviews and the validation read)
Every other date's attributions are compacted: replaced, in one transaction per date, by their
per-model-version, per-segment, per-feature aggregates in `attributions_compact` (the columns of
the view attribution_summary, which reads them back for compacted dates). Scores (with their
reasons, which the top-driver views read), shadow scores, summaries, drift and every other table
are kept whole.

`apply` is idempotent: a date is compacted once, and a second run finds nothing to do. On
BigQuery, where expiry goes by partition age, the same rule's age half is the DDL's
`partition_expiration_days` on `attributions` (`expiration_days`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Callable, Optional

import duckdb

from smescore import config
from smescore import tables as contract
from smescore.errors import BadInput, SmescoreError
from smescore.warehouse import Warehouse

ENV = "SMESCORE_RETENTION_CONFIG"          # a policy file for the nightly job's hook
_KEYS = {"full_last_dates", "full_month_ends"}


@dataclasses.dataclass(frozen=True)
class Policy:
    full_last_dates: int
    full_month_ends: bool

    def __post_init__(self):
        if isinstance(self.full_last_dates, bool) or not isinstance(self.full_last_dates, int) \
                or self.full_last_dates < 1:
            raise ValueError(f"attributions.full_last_dates must be a positive integer, got "
                             f"{self.full_last_dates!r}")
        if not isinstance(self.full_month_ends, bool):
            raise ValueError(f"attributions.full_month_ends must be true or false, got "
                             f"{self.full_month_ends!r}")

    @classmethod
    def load(cls, path: Optional[str] = None) -> "Policy":
        """The packaged policy, or the file at `path`; BadInput naming the file and the key."""
        raw, where = config.read_json("retention.json", path, "retention config")
        try:
            section = raw["attributions"]
            unknown, missing = sorted(set(section) - _KEYS), sorted(_KEYS - set(section))
            if unknown or missing or set(raw) != {"attributions"}:
                raise ValueError(f"expected {{'attributions': {sorted(_KEYS)}}}; unknown "
                                 f"{unknown + sorted(set(raw) - {'attributions'})}, missing "
                                 f"{missing}")
            return cls(**section)
        except (TypeError, ValueError, KeyError) as err:
            raise BadInput(f"retention config {where}: {err}") from None

    def full_dates(self, dates) -> set:
        """The dates whose full attributions stay: the latest N, and month-ends."""
        dates = sorted(set(dates))
        keep = set(dates[-self.full_last_dates:])
        if self.full_month_ends:
            keep |= {d for d in dates if (d + dt.timedelta(days=1)).day == 1}
        return keep

    def expiration_days(self, table: str) -> Optional[int]:
        """BigQuery partition expiration for `table` under this policy (None: kept): nightly
        dates, so the latest N dates are the last N days' partitions."""
        return self.full_last_dates if table == "attributions" else None


def _sizes(con) -> dict:
    """The file's bytes and the bytes its used blocks hold (DuckDB reuses freed blocks before it
    grows the file, so used bytes are what the next nights add to)."""
    size = con.execute("PRAGMA database_size").fetchone()
    cols = [d[0] for d in con.description]
    row = dict(zip(cols, size))
    return {"used_bytes": int(row["used_blocks"]) * int(row["block_size"]),
            "total_blocks": int(row["total_blocks"])}


def _published_dates(con) -> list[dt.date]:
    return [r[0] for r in con.execute(
        "SELECT as_of_date FROM scores UNION SELECT as_of_date FROM attributions "
        "ORDER BY 1").fetchall()]


def plan(con, policy: Policy) -> list[dt.date]:
    """Dates that still hold full attributions but fall outside the policy, oldest first."""
    keep = policy.full_dates(_published_dates(con))
    held = [r[0] for r in con.execute(
        "SELECT DISTINCT as_of_date FROM attributions ORDER BY 1").fetchall()]
    return [d for d in held if d not in keep]


def compact_date(con, as_of: dt.date) -> dict:
    """Inside the caller's transaction: the date's aggregates (the view's own SQL over its full
    rows) into attributions_compact, then its full rows out."""
    columns_sql = ", ".join(contract.quote(c)
                            for c in contract.table("attributions_compact").names)
    con.execute("DELETE FROM attributions_compact WHERE as_of_date = ?", [as_of])
    con.execute(f"INSERT INTO attributions_compact ({columns_sql}) SELECT {columns_sql} "
                f"FROM attribution_summary WHERE as_of_date = ?", [as_of])
    added = con.execute("SELECT COUNT(*) FROM attributions_compact WHERE as_of_date = ?",
                        [as_of]).fetchone()[0]
    removed = con.execute("DELETE FROM attributions WHERE as_of_date = ?", [as_of]).fetchone()[0]
    return {"as_of_date": as_of.isoformat(), "rows_removed": int(removed),
            "compact_rows": int(added)}


def apply(path: str, policy: Policy, dry_run: bool = False,
          progress: Callable[[str], None] = lambda m: None) -> dict:
    """Compact every date the policy no longer keeps in full, one transaction per date, then
    checkpoint. Returns the dates, rows removed and added, and the bytes before and after."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no warehouse at {path}")
    Warehouse(path).ensure_schema()          # attributions_compact and the view, if older file
    file_before = os.path.getsize(path)
    with duckdb.connect(path) as con:
        before = _sizes(con)
        dates = plan(con, policy)
        done = []
        if not dry_run:
            for as_of in dates:
                con.begin()
                try:
                    done.append(compact_date(con, as_of))
                    con.commit()
                except BaseException:
                    con.rollback()
                    raise
                progress(f"[retain] {as_of}: {done[-1]['rows_removed']:,} attribution rows -> "
                         f"{done[-1]['compact_rows']:,} aggregates")
            con.execute("CHECKPOINT")
        after = _sizes(con)
    return {"warehouse": path, "dry_run": dry_run, "policy": dataclasses.asdict(policy),
            "dates": [d.isoformat() for d in dates], "compacted": done,
            "rows_removed": sum(d["rows_removed"] for d in done),
            "used_bytes_before": before["used_bytes"], "used_bytes_after": after["used_bytes"],
            "file_bytes_before": file_before, "file_bytes_after": os.path.getsize(path)}


def after_publish(warehouse: Optional[str], progress: Callable[[str], None]) -> Optional[dict]:
    """The nightly job's hook: the policy ($SMESCORE_RETENTION_CONFIG or the packaged one) on
    the DuckDB warehouse just published into; None for other sinks. The night's tables are
    published by then, so a failure here is reported, not raised: the next night retries."""
    if not warehouse:
        return None
    try:
        return apply(warehouse, Policy.load(os.environ.get(ENV)), progress=progress)
    except (SmescoreError, duckdb.Error, OSError) as err:     # BadInput, a held lock, disk
        progress(f"[retain] retention not applied to {warehouse}: {type(err).__name__}: {err}")
        return {"warehouse": warehouse, "error": f"{type(err).__name__}: {err}"}

"""`smescore generate`: a synthetic SME loan book with feeds that behave like real ones and a known
ground truth.

Writes `<out_dir>/<feed>/part-NNNNN.parquet` for every feed in transforms.feeds.FEEDS (exactly
their schemas) and `<out_dir>/_ground_truth/ground_truth.parquet` (GROUND_TRUTH_SCHEMA; one
`part-NNNNN.parquet` per chunk of firms when the book is bigger than a chunk): each firm's true
12-month PD and dominant risk driver at every month-end. How the book is simulated:
synth/ (firms -> risk drivers and defaults -> monthly series -> feeds).

Deterministic: the same arguments give byte-identical files; the chunk size changes only how the
per-firm feeds are split into part files, never a row.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import os
import time
from typing import Callable

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth import (calendar, chunks, firms as firms_mod, invoices, oracle, risk, series, simulation,
                   tables, truth)
from transforms import feeds

BURN_IN_MONTHS = 24          # the risk process runs this long before the data starts
ROWS_PER_INVOICE_PART = 4_000_000
CHUNK_FIRMS = 50_000         # default firms per chunk of the per-firm feeds (the series' memory)


@dataclasses.dataclass(frozen=True)
class InvoiceShift:
    """A data shift to test monitoring with: firms of one industry section lose a share `drop` of
    their e-invoices (sales and purchases) in the last `months` months, as if part of their
    invoicing had moved off the platform (drop 1: the feed stops for them). Which invoices go is
    fixed by their invoice number; every other row, every other feed and the firms' true risk are
    exactly what they are without the shift."""
    industry: str
    drop: float = 0.30
    months: int = 1

    def __post_init__(self):
        if self.industry not in feeds.INDUSTRY_SECTIONS:
            raise ValueError(f"shift industry must be one of {''.join(feeds.INDUSTRY_SECTIONS)}, "
                             f"got {self.industry!r}")
        if not 0 < self.drop <= 1:
            raise ValueError(f"shift drop must lie in (0, 1] (1: the feed stops), got {self.drop!r}")
        if not isinstance(self.months, int) or self.months < 1:
            raise ValueError(f"shift months must be a positive integer, got {self.months!r}")

    def firms(self, book) -> pa.Array:
        hit = book.industry == feeds.INDUSTRY_SECTIONS.index(self.industry)
        return pa.array(np.asarray(book.enterprise_id)[hit].tolist(), pa.string())

    def thin(self, month: pa.Table, firms: pa.Array) -> pa.Table:
        """Drop the shifted firms' invoices whose number hashes below `drop`."""
        ids = month.column("invoice_id").to_pylist()
        u = np.fromiter((zlib.crc32(i.encode()) / 2**32 for i in ids), np.float64, len(ids))
        hit = pc.is_in(month.column("enterprise_id"), value_set=firms).to_numpy(zero_copy_only=False)
        return month.filter(pa.array(~(hit & (u < self.drop))))


def generate(out_dir: str, firms: int, months: int, end_date: dt.date, seed: int,
             progress: Callable[[str], None] | None = None,
             shift: InvoiceShift | None = None, chunk_firms: int = CHUNK_FIRMS) -> dict:
    """Generate `firms` firms over the `months` calendar months ending with end_date's month.

    Returns a summary: rows per feed, the 12-month default rate and the oracle AUC of the ground
    truth over the as-of dates end_date-24 .. end_date-12 months (firms established and not in
    default at the date), the share of (default, as-of date 1..12 months before it) pairs with a
    named driver active, and elapsed seconds. `shift` injects a data shift into the invoices.
    The monthly series, tax filings, bills, loans and ground truth are built `chunk_firms` firms
    at a time (one part file each); the rows are the same whatever the chunk size.
    """
    _check(firms, months, end_date)
    say = progress or (lambda message: None)
    t0 = time.perf_counter()
    end_day = int(np.datetime64(end_date, "D").astype(np.int64))
    grid = calendar.make_grid(end_date, months, BURN_IN_MONTHS)

    book = firms_mod.draw_firms(seed, firms, end_day)
    ops = series.draw_operations(seed, book)
    orig = risk.draw_originations(seed, book, grid)
    say(f"simulating risk: {firms:,} firms x {months} months (+{BURN_IN_MONTHS} burn-in)")
    path = simulation.simulate(seed, book, grid, orig, can_show_power=ops.has_power,
                         can_show_headcount=ops.si_headcount0 >= 3)

    rows = {}

    def write(folder: str, table: pa.Table, part: int = 0, name: str | None = None) -> None:
        pq.write_table(table, os.path.join(out_dir, folder, name or f"part-{part:05d}.parquet"))
        key = "ground_truth" if folder == truth.GROUND_TRUTH_DIR else folder
        rows[key] = rows.get(key, 0) + table.num_rows
        say(f"{key}: {rows[key]:,} rows")

    for folder in (*feeds.FEEDS, truth.GROUND_TRUTH_DIR):
        _fresh_folder(os.path.join(out_dir, folder))
    write("enterprises", tables.enterprises(book))
    levels = _write_chunks(seed, book, ops, orig, grid, path, end_day, chunk_firms, write)
    write("registry_events", tables.registry_events(seed, book, grid, path, end_day))
    _write_invoices(seed, book, ops, grid, levels, end_day, write, shift)

    quality = oracle.summary(book, grid, path)
    summary = {"out_dir": out_dir, "firms": firms, "months": months,
               "end_date": end_date.isoformat(), "seed": seed, "rows": rows,
               "shift": dataclasses.asdict(shift) if shift else None,
               "default_rate_12m": quality["default_rate_12m"], "oracle_auc": quality["oracle_auc"],
               "oracle_rows": quality["oracle_rows"],
               "defaults_with_driver": quality["explained_defaults"],
               "elapsed_s": round(time.perf_counter() - t0, 2)}
    say(f"done in {summary['elapsed_s']:.1f}s: 12m default rate "
        f"{_fmt(summary['default_rate_12m'])}, oracle AUC {_fmt(summary['oracle_auc'])}")
    return summary


def _write_chunks(seed, book, ops, orig, grid, path, end_day, chunk_firms, write):
    """The per-firm feeds and the ground truth, chunk by chunk of firms; returns what the
    invoices need of the series for the whole book. One chunk writes the files the whole-book
    generator always wrote (the ground truth as ground_truth.parquet)."""
    n = book.n
    spans = chunks.bounds(n, chunk_firms)
    draws = {name: chunks.SplitStream(firms_mod.stream(seed, name), spans)
             for name in ("series", "loan-balances")}
    levels = chunks.InvoiceLevels.empty(n, grid.months)
    for c, (lo, hi) in enumerate(spans):
        f, p = chunks.rows(book, n, lo, hi), chunks.rows(path, n, lo, hi)
        o = chunks.rows(ops, n, lo, hi)
        monthly = series.build(seed, f, o, grid, p, end_day, rng=draws["series"].chunk(c))
        levels.fill(lo, monthly)
        write("tax_filings", tables.tax_filings(f, grid, monthly, end_day), c)
        write("utility_bills", tables.utility_bills(f, grid, monthly, o.tariff, end_day), c)
        write("loans", tables.loans(seed, f, grid, chunks.rows(orig, n, lo, hi), p,
                                    rng=draws["loan-balances"].chunk(c), first_firm=lo), c)
        write(truth.GROUND_TRUTH_DIR, tables.ground_truth(f, grid, p), c,
              name="ground_truth.parquet" if len(spans) == 1 else None)
    return levels


def _write_invoices(seed, book, ops, grid, levels, end_day, write, shift=None) -> None:
    """Consecutive months grouped into parts of at most ~ROWS_PER_INVOICE_PART rows; `levels`:
    the series the invoices read (chunks.InvoiceLevels), for every firm."""
    maker = invoices.InvoiceMaker(seed, book, ops, grid, levels,
                                  firms_mod.draw_trade_network(seed, book, "sales"),
                                  firms_mod.draw_trade_network(seed, book, "purchase"), end_day)
    expected = invoices.expected_rows(book, ops, levels)
    part, batch, size = 0, [], 0.0
    for w in range(grid.months):
        if batch and size + expected[w] > ROWS_PER_INVOICE_PART:
            write("invoices", pa.concat_tables(batch), part)
            part, batch, size = part + 1, [], 0.0
        month = maker.month(w)
        if shift and w >= grid.months - shift.months:
            month = shift.thin(month, shift.firms(book))
        batch.append(month)
        size += expected[w]
    write("invoices", pa.concat_tables(batch), part)


def _fresh_folder(folder: str) -> None:
    """Create the folder; drop part files of an earlier run so none is left stale."""
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(os.path.join(folder, "*.parquet")):
        os.remove(stale)


def _check(firms: int, months: int, end_date: dt.date) -> None:
    if not isinstance(firms, (int, np.integer)) or firms < 1:
        raise ValueError(f"firms must be a positive integer, got {firms!r}")
    if not isinstance(months, (int, np.integer)) or not 1 <= months <= 240:
        raise ValueError(f"months must be an integer in 1..240, got {months!r}")
    if not isinstance(end_date, dt.date) or not calendar.is_month_end(end_date):
        raise ValueError(f"end_date must be a month-end date, got {end_date!r}")
    first = calendar.month_of(end_date) - months + 1
    first_year = first // 12 + 1970
    if first_year < min(calendar.SPRING_FESTIVAL) or end_date.year > max(calendar.SPRING_FESTIVAL):
        raise ValueError(f"the data must lie within {min(calendar.SPRING_FESTIVAL)}.."
                         f"{max(calendar.SPRING_FESTIVAL)}; got {first_year}..{end_date.year}")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"

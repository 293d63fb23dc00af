"""Changes read against the book: a firm's sales, tax, headcount and power changes against the
median change of every firm in the book at the same as-of date.

Why: part of every change is shared by the whole book. Seasons, the Spring Festival's date (29
January in 2025, 17 February in 2026: a 3-month change in spring compares a different share of
the shutdown each year) and the economy move all firms at once, and a network trained on one
year of them reads a late festival as a book-wide sales collapse. Measured on the 10k book
(seed 7, model trained as of 2026-10-31, `smescore validate`): with the raw changes mean PD /
true PD reached 1.33-1.36 in spring 2026 (7 of 16 month-ends outside 0.90-1.10); read against
the book, 0.95-1.06 at all 16 (with Platt fitted on all held-out firm-dates, models/train.py),
and the out-of-time AUC rose 0.8459 -> 0.8508. The generator's risk drivers are the firm's own
(a 40-80% collapse), so they survive; the common part does not.

The median is over every firm of the book with a present value at that date (NaN ignored): an
exact median, so it does not depend on how the book is cut into shards or in what order they
arrive. A change is then divided by the book's ((1 + x) / (1 + m) - 1: seasons multiply), a
trend (a log-scale slope) less the book's. The nightly job, the training snapshots and the
walk-forward validation compute it in transforms/beam_features.py over all shards; the Python API
over the book it is given, the scoring service over its feeds (service/feed_store.py). The
feature tables (and so the `features` and `attributions` tables, drift and reasons) hold the
adjusted values; transforms/catalog.py words them against the book.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa

from transforms import catalog, pit

FEATURES: tuple[str, ...] = catalog.BOOK_RELATIVE

Medians = dict[str, float]            # feature -> the book's median at one date (NaN: no value)


def present_values(table: pa.Table) -> dict[dt.date, dict[str, np.ndarray]]:
    """Per as-of date in a feature table (raw, not yet adjusted), each book-relative feature's
    present values: what the book's median is taken over."""
    dates = table.column("as_of_date").to_numpy(zero_copy_only=False)
    out = {}
    for d in np.unique(dates):
        rows = dates == d
        out[_as_date(d)] = {f: _present(table.column(f).to_numpy(zero_copy_only=False)[rows])
                            for f in FEATURES}
    return out


def medians(parts: Iterable[Mapping[str, np.ndarray]]) -> Medians:
    """The exact median of each feature over the present values of all parts (one date)."""
    values = {f: [] for f in FEATURES}
    for part in parts:
        for f in FEATURES:
            values[f].append(part[f])
    out = {}
    for f, arrays in values.items():
        v = np.concatenate(arrays) if arrays else np.empty(0, np.float32)
        out[f] = float(np.median(v.astype(np.float64))) if len(v) else float("nan")
    return out


def book_medians(tables: Iterable[pa.Table]) -> dict[dt.date, Medians]:
    """{as-of date: medians} over every row of the tables (the whole book, all shards)."""
    by_date: dict[dt.date, list] = {}
    for table in tables:
        for d, values in present_values(table).items():
            by_date.setdefault(d, []).append(values)
    return {d: medians(parts) for d, parts in sorted(by_date.items())}


def adjust(table: pa.Table, by_date: Mapping[dt.date, Medians]) -> pa.Table:
    """The table with each book-relative feature read against the book's median at the row's
    date (float32, as the feature contract; `against`). A date without medians is an error:
    adjusting against another date's book, or none, would score a different firm."""
    dates = table.column("as_of_date").to_numpy(zero_copy_only=False)
    unknown = sorted({_as_date(d) for d in np.unique(dates)} - set(by_date))
    if unknown:
        raise ValueError(f"no book medians for as-of date(s) {unknown}: book-relative features "
                         f"({', '.join(FEATURES[:3])}, ...) need the book of the same date")
    for f in FEATURES:
        col = table.column(f).to_numpy(zero_copy_only=False).astype(np.float64)
        median = np.zeros(len(col))
        for d in np.unique(dates):
            m = by_date[_as_date(d)][f]
            median[dates == d] = 0.0 if np.isnan(m) else m
        i = table.schema.get_field_index(f)
        value = against(catalog.BY_NAME[f].kind, col, median).astype(np.float32)
        # missing stays null, as the feature tables hold it (from_pandas: NaN -> null)
        table = table.set_column(i, table.schema.field(i),
                                 pa.array(value, pa.float32(), from_pandas=True))
    return table


def against(kind: str, value: np.ndarray, median: np.ndarray) -> np.ndarray:
    """A change read against the book's median change. Changes compound, so a relative change
    divides: (1 + x) / (1 + m) - 1 (sales down 30% while the book's fell 25%: 6.7% below the
    book), within the same bounds as a change (-100%: no sales stays no sales; +1000% cap). A
    trend is a log-scale slope: it subtracts. A book whose median change is -100% has nothing
    to read against: missing."""
    if kind == "slope":
        return value - median
    base = 1.0 + median
    out = np.full(len(value), np.nan)
    np.divide(1.0 + value, base, out=out, where=base > 0)
    return np.minimum(out - 1.0, pit.CHANGE_CAP)


def _present(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v[np.isfinite(v)]


def _as_date(d) -> dt.date:
    return d if isinstance(d, dt.date) else dt.date.fromisoformat(str(np.datetime64(d, "D")))

"""One feed's records as numpy columns for the point-in-time features (transforms/pit.py).

The features are numpy arithmetic over a few columns of each feed. Going through pandas frames
cost a controller group of the scoring service about 20 ms of fixed overhead per request (six
frames built, filtered and indexed), more than the arithmetic itself. `Records` converts a column
of the Arrow table once, when first asked for, and a subset (`where`) takes its columns from its
parent's by the same mask, so a column is never converted twice and a filter is one numpy index.
String columns answer in Arrow what the features ask most (equality with a category, the firm a
record belongs to); `texts` gives Python strings where a feature needs the values themselves
(counterparties, controllers, the firm's categories).
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Records:
    """The rows of an Arrow table (`table`, its firms `firm_ids`), or the rows of `parent` where
    `mask` is true."""

    def __init__(self, table: pa.Table | None = None, firm_ids: pa.Array | None = None,
                 parent: Records | None = None, mask: np.ndarray | None = None):
        self._table, self._firm_ids, self._parent, self._mask = table, firm_ids, parent, mask
        self._columns: dict[tuple, np.ndarray] = {}
        self._length = table.num_rows if parent is None else int(np.count_nonzero(mask))

    def __len__(self) -> int:
        return self._length

    def _column(self, key: tuple, convert) -> np.ndarray:
        if key not in self._columns:
            self._columns[key] = (convert(self._table, self._firm_ids) if self._parent is None
                                  else self._parent._column(key, convert)[self._mask])
        return self._columns[key]

    def where(self, mask: np.ndarray) -> Records:
        return Records(parent=self, mask=np.asarray(mask, bool))

    def known(self, date_column: str, as_of: dt.date) -> Records:
        """The records dated on or before D."""
        return self.where(self.dates(date_column) <= np.datetime64(as_of))

    def numbers(self, name: str) -> np.ndarray:
        """float64, null as NaN (as pandas' conversion gave it)."""
        return self._column(("numbers", name), lambda t, _: _float64(t.column(name)))

    def dates(self, name: str) -> np.ndarray:
        """datetime64[D], null as NaT."""
        return self._column(("dates", name), lambda t, _: _days(t.column(name)))

    def texts(self, name: str) -> np.ndarray:
        """Python strings in an object array, null as None."""
        return self._column(("texts", name), lambda t, _: t.column(name).to_numpy(
            zero_copy_only=False))

    def equals(self, name: str, value: str) -> np.ndarray:
        """Whether the column holds `value`; false where null."""
        return self._column(("equals", name, value), lambda t, _: pc.fill_null(
            pc.equal(t.column(name), value), False).to_numpy(zero_copy_only=False))

    def firms(self) -> np.ndarray:
        """Each record's firm: the index of its enterprise_id in `firm_ids` (int64), -1 where the
        firm is not there."""
        return self._column(("firms",), lambda t, ids: pc.fill_null(
            pc.index_in(t.column("enterprise_id"), value_set=ids), -1).to_numpy(
            zero_copy_only=False).astype(np.int64))


def _float64(column: pa.ChunkedArray) -> np.ndarray:
    if column.null_count:
        column = pc.fill_null(pc.cast(column, pa.float64()), np.nan)
    return np.asarray(column.to_numpy(zero_copy_only=False), np.float64)


def _days(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.date32()).to_numpy(zero_copy_only=False),
                      "datetime64[D]")

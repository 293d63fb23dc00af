"""The feed folder (--feeds) held in memory, sorted by firm, so one firm's records and its related
firms' (same controller_id) are a few slices away rather than a scan of every file; and the
book's median changes at a date, which a firm's changes are read against
(transforms/book_relative.py), computed once per date over every firm of the feeds."""
from __future__ import annotations

import datetime as dt
import glob
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_jobs.sources import FeedError, LocalFilesSource, _read_csv_as_strings
from smescore import api
from transforms import book_relative, feeds


class FeedStore:
    def __init__(self, feeds_dir: str | None = None, tables: dict[str, pa.Table] | None = None):
        """The feeds of a folder (the nightly job's --feeds), or `tables` already read (from
        BigQuery: `from_bigquery`)."""
        if (feeds_dir is None) == (tables is None):
            raise ValueError("FeedStore: a feeds folder or the feed tables, one of the two")
        if feeds_dir is not None:
            LocalFilesSource(feeds_dir).check()      # the nightly job's own check and message
        self.feeds_dir = feeds_dir
        self.tables: dict[str, pa.Table] = {}
        self.slices: dict[str, dict[str, tuple[int, int]]] = {}
        for feed in feeds.FEEDS:
            table = self._read(feed) if tables is None else tables[feed]
            table = table.take(pc.sort_indices(table, [("enterprise_id", "ascending")]))
            ids = table.column("enterprise_id").to_numpy(zero_copy_only=False)
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else []
            ends = np.r_[starts[1:], len(ids)] if len(ids) else []
            self.tables[feed] = table
            self.slices[feed] = {ids[s]: (int(s), int(e - s)) for s, e in zip(starts, ends)}
        ent = self.tables["enterprises"]
        self.controller = dict(zip(ent.column("enterprise_id").to_pylist(),
                                   ent.column("controller_id").to_pylist()))
        self.group: dict[str, list[str]] = {}
        for firm, ctrl in self.controller.items():
            self.group.setdefault(ctrl, []).append(firm)
        self._medians: dict[dt.date, book_relative.Medians] = {}
        self._medians_lock = threading.Lock()

    @classmethod
    def from_bigquery(cls, source) -> "FeedStore":
        """The feed tables of a BigQuery dataset as the nightly job reads them
        (beam_jobs.sources.BigQueryFeedSource: the feed queries, as of the source's date, staged in
        the risk dataset and read back with the client), held in memory like a folder's."""
        source.check()
        try:
            source.stage()
            tables = {}
            for feed in feeds.FEEDS:
                parts = source.client_tables(feed)
                tables[feed] = (pa.concat_tables(parts) if parts
                                else feeds.FEEDS[feed].schema.empty_table())
        finally:
            source.cleanup()               # the staging tables are read once, into memory
        return cls(tables=tables)

    def _read(self, feed: str) -> pa.Table:
        paths = sorted(glob.glob(os.path.join(self.feeds_dir, feed, "*.parquet")))
        if paths:
            parts = [pq.read_table(p) for p in paths]
        else:
            parts = [_read_csv_as_strings(p)
                     for p in sorted(glob.glob(os.path.join(self.feeds_dir, feed, "*.csv")))]
        try:
            return pa.concat_tables(parts, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise FeedError(f"feed {feed} under {self.feeds_dir}: files disagree: {err}") from None

    def book_medians(self, as_of: dt.date) -> book_relative.Medians:
        """The book's median of each book-relative change at `as_of`, over every firm of the
        feeds as the nightly job computes it (the whole book's features: seconds for 10k firms,
        so once per date; concurrent first requests for a date wait for one computation)."""
        with self._medians_lock:
            if as_of not in self._medians:
                self._medians[as_of] = api.book_medians_of(self.tables, as_of)
            return self._medians[as_of]

    def group_of(self, enterprise_id: str) -> dict[str, pa.Table] | None:
        """Every record of the firm and of the firms sharing its controller; None: no such firm."""
        if enterprise_id not in self.controller:
            return None
        firms = self.group.get(self.controller[enterprise_id], [enterprise_id])
        out = {}
        for feed, table in self.tables.items():
            parts = [table.slice(*self.slices[feed][f]) for f in firms if f in self.slices[feed]]
            out[feed] = pa.concat_tables(parts) if parts else table.schema.empty_table()
        return out

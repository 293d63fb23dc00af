"""Beam transforms around the point-in-time features: validate, shard by controller, featurize.

Elements are Arrow tables (a Parquet row group, a shard of firms), never single records: Beam's
per-element overhead is tens of microseconds, so row-at-a-time would cost more than the features.
Firms are sharded by their controller, so related parties meet in one shard.
"""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import arrow_coder  # (importing it registers the pa.Table coder)
from transforms import book_relative, featurize, feeds, progress, shard_files, validate

REJECTED = "rejected"
NAMESPACE = "smescore"


def _counter(name: str):
    return beam.metrics.Metrics.counter(NAMESPACE, name)


class ValidateBatch(beam.DoFn):
    """Typed rows out on the main output, rejected records (with reasons) on REJECTED."""

    def __init__(self, feed: str):
        self.feed = feed
        self.rows_in = _counter(f"rows_in[{feed}]")
        self.rows_rejected = _counter(f"rows_rejected[{feed}]")

    def process(self, table: pa.Table):
        good, rejects = validate.validate_table(self.feed, table)
        self.rows_in.inc(table.num_rows)
        self.rows_rejected.inc(len(rejects))
        progress.advance(f"rows read[{self.feed}]", table.num_rows)
        if rejects:
            progress.advance("rows rejected", len(rejects))
        for r in rejects:
            yield beam.pvalue.TaggedOutput(REJECTED, r)
        if good.num_rows:
            yield good


def build_firm_index(tables: list[pa.Table], n_shards: int) -> dict:
    """The portfolio's firms (deduplicated) with their shard: at least `n_shards` shards, more
    for a large book (featurize.shard_count); one side input for all feeds."""
    table = pa.concat_tables(tables) if tables else feeds.ENTERPRISES.schema.empty_table()
    table, rejects = validate.split_duplicates("enterprises", table)
    shards = featurize.shard_count(table.num_rows, n_shards)     # more for a large book
    shard = featurize.shard_of(table.column("controller_id").to_pylist(), shards)
    return {"enterprises": table.append_column("shard", pa.array(shard)),
            "rejects": rejects,
            "ids": table.column("enterprise_id").combine_chunks(), "shards": shard}


class KeyByShard(beam.DoFn):
    """A parked feed batch (its file name) -> (shard, (feed, file holding the rows of that
    shard)); records of firms not in the portfolio are rejected. The rows go to a file and only
    its name into the shuffle (see shard_files)."""

    def __init__(self, feed: str, folder: str):
        self.feed = feed
        self.folder = folder
        self.unknown = _counter(f"rows_rejected[{feed}]")

    def process(self, parked: str, index: dict):
        table = shard_files.read(parked)
        firm = pc.index_in(table.column("enterprise_id"), value_set=index["ids"])
        unknown = firm.is_null().to_numpy(zero_copy_only=False)
        shard = np.full(table.num_rows, -1, np.int64)
        shard[~unknown] = index["shards"][pc.drop_null(firm).to_numpy()]
        if unknown.any():
            self.unknown.inc(int(unknown.sum()))
            rows = table.filter(pa.array(unknown)).to_pandas(date_as_object=True)
            for r in validate.rejected(self.feed, rows, "unknown enterprise_id"):
                yield beam.pvalue.TaggedOutput(REJECTED, r)
        if unknown.all():
            return
        # One take in shard order (stable), then a zero-copy slice per shard.
        order = np.argsort(shard, kind="stable")
        shard, grouped = shard[order], table.take(pa.array(order))
        starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(shard)]):
            if shard[start] >= 0:
                rows = grouped.slice(start, end - start)
                yield int(shard[start]), (self.feed, shard_files.write(
                    self.folder, self.feed, int(shard[start]), rows))


def enterprises_by_shard(index: dict, folder: str):
    """The firms of each shard, into the shuffle as a file name like every other feed's rows."""
    ent = index["enterprises"]
    shard = ent.column("shard").to_numpy()
    for s in np.unique(shard):
        rows = ent.filter(pa.array(shard == s)).drop(["shard"])
        yield int(s), ("enterprises", shard_files.write(folder, "enterprises", int(s), rows))


class FeaturizeShard(beam.DoFn):
    """All records of one shard -> one feature table per as-of date (transforms/featurize.py);
    duplicates rejected there, where every record of a key is finally in one place."""

    def __init__(self, as_of_dates: tuple[dt.date, ...]):
        self.as_of_dates = tuple(as_of_dates)
        self.firms = _counter("firms_featurized")

    def process(self, element, outcome_end=None):
        _, parts = element
        tables = {}
        for feed, path in parts:   # every feed's rows arrive as file names (shard_files)
            tables.setdefault(feed, []).append(shard_files.read(path))
        features, rejects = featurize.featurize(
            {feed: pa.concat_tables(ts) for feed, ts in tables.items()}, self.as_of_dates,
            outcome_end)
        for r in rejects:
            yield beam.pvalue.TaggedOutput(REJECTED, r)
        for table in features:
            self.firms.inc(table.num_rows)
            yield table


def _max_report_month(table: pa.Table):
    col = table.column("report_month")
    return pc.max(col).as_py() if table.num_rows else None


class ComputeFeatures(beam.PTransform):
    """dict feed -> PCollection[pa.Table]  ==>  (features: PCollection[pa.Table], rejected records).

    One implementation for training snapshots (many as-of dates, with labels) and the nightly
    run (one date). The changes come out read against the book (ReadAgainstTheBook).
    """

    def __init__(self, as_of_dates, n_shards: int = 32, with_labels: bool = False,
                 shuffle_folder: str | None = None):
        super().__init__()
        self.as_of_dates = tuple(as_of_dates)
        self.n_shards = n_shards
        self.with_labels = with_labels
        self.shuffle_folder = shuffle_folder   # default: a fresh one (shard_files.folder_for)

    def expand(self, feed_tables):
        folder = self.shuffle_folder or shard_files.folder_for(
            next(iter(feed_tables.values())).pipeline)
        valid, rejects = {}, []
        for feed in feeds.FEEDS:
            res = feed_tables[feed] | f"Validate[{feed}]" >> beam.ParDo(ValidateBatch(feed)) \
                .with_output_types(pa.Table).with_outputs(REJECTED, main="valid")
            valid[feed] = res.valid
            rejects.append(res[REJECTED])
        index = (valid["enterprises"]
                 | "CompactFirms" >> beam.Map(arrow_coder.compact).with_output_types(pa.Table)
                 | "CollectFirms" >> beam.combiners.ToList()
                 | "IndexFirms" >> beam.Map(build_firm_index, self.n_shards))
        rejects.append(index | "DuplicateFirms" >> beam.FlatMap(lambda i: i["rejects"]))
        keyed = [index | "FirmsByShard" >> beam.FlatMap(enterprises_by_shard, folder)]
        for feed in feeds.FEEDS:
            if feed == "enterprises":
                continue
            # Batches wait for the firm index as file names, not rows (shard_files.park).
            parked = valid[feed] | f"Park[{feed}]" >> beam.Map(shard_files.park, folder, feed)
            res = parked | f"KeyByShard[{feed}]" >> beam.ParDo(
                KeyByShard(feed, folder), beam.pvalue.AsSingleton(index)).with_outputs(
                REJECTED, main="keyed")
            keyed.append(res.keyed)
            rejects.append(res[REJECTED])
        outcome_end = None
        if self.with_labels:
            outcome_end = beam.pvalue.AsSingleton(
                valid["loans"] | "LastReportMonth" >> beam.Map(_max_report_month)
                | "Latest" >> beam.CombineGlobally(
                    lambda ms: max((m for m in ms if m is not None), default=None)))
        feats = (keyed | "AllFeeds" >> beam.Flatten() | "GroupByShard" >> beam.GroupByKey()
                 | "Featurize" >> beam.ParDo(FeaturizeShard(self.as_of_dates), outcome_end)
                 .with_output_types(pa.Table).with_outputs(REJECTED, main="features"))
        rejects.append(feats[REJECTED])
        # Every shard featurized: its files are no longer needed.
        _ = (feats.features | "ShardsDone" >> beam.combiners.Count.Globally()
             | "RemoveShuffleFiles" >> beam.Map(lambda _, f: shard_files.remove(f), folder))
        return (feats.features | "AgainstTheBook" >> ReadAgainstTheBook(),
                rejects | "AllRejected" >> beam.Flatten())


def _values_by_date(table: pa.Table):
    """(ISO date, present values): a string key, which every runner encodes deterministically."""
    for d, values in book_relative.present_values(table).items():
        yield d.isoformat(), values


def _medians_by_date(pairs) -> dict:
    return {dt.date.fromisoformat(d): m for d, m in pairs}


class ReadAgainstTheBook(beam.PTransform):
    """Feature tables -> the same tables with the book-relative changes read against the whole
    book's median at each as-of date (transforms/book_relative.py). The medians need every shard: the
    present values of each (a few floats a firm) meet per date, and the exact medians come back
    to every shard as a small side input. Meanwhile the tables wait as files under
    `park_folder`, removed once every table is adjusted."""

    def __init__(self, park_folder: str | None = None):
        super().__init__()
        self.park_folder = park_folder   # default: a fresh one (shard_files.folder_for)

    def expand(self, features):
        folder = self.park_folder or shard_files.folder_for(features.pipeline,
                                                            "smescore-features-")
        medians = (features
                   | "PresentValues" >> beam.FlatMap(_values_by_date)
                   | "ByDate" >> beam.GroupByKey()
                   | "Medians" >> beam.MapTuple(lambda d, parts: (d, book_relative.medians(parts)))
                   | "AllDates" >> beam.combiners.ToList()
                   | "AsDict" >> beam.Map(_medians_by_date))
        # The tables wait for the medians as file names (DirectRunner would hold the whole
        # book's features in memory in front of the side input), then come back adjusted.
        adjusted = (features | "Park" >> beam.Map(shard_files.park, folder, "features")
                    | "Adjust" >> beam.Map(_adjust_parked, beam.pvalue.AsSingleton(medians))
                    .with_output_types(pa.Table))
        _ = (adjusted | "Adjusted" >> beam.combiners.Count.Globally()
             | "RemoveParked" >> beam.Map(lambda _, f: shard_files.remove(f), folder))
        return adjusted


def _adjust_parked(path: str, medians: dict) -> pa.Table:
    return book_relative.adjust(shard_files.read(path), medians)

"""Beam transforms around the point-in-time features: validate, shard by controller, featurize.

Elements are Arrow tables (a Parquet row group, a shard of firms), never single records: Beam's
per-element overhead is tens of microseconds, so row-at-a-time would cost more than the features.
Firms are sharded by their controller, so related parties meet in one shard.
"""
from __future__ import annotations

import datetime as dt
import functools

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import arrow_coder  # (importing it registers the pa.Table coder)
from transforms import book_relative, featurize, feeds, row_groups, shard_files, validate
from transforms.process_pool import InWorkerProcesses, Work, workers_for

REJECTED = "rejected"
LAST_REPORT_MONTH = "last_report_month"


def validate_batch(batch, feed: str, park_folder: str | None = None,
                   last_report_month: bool = False) -> Work:
    """A feed batch (a table, or a Parquet row group it reads: transforms/row_groups.py) -> its
    typed rows on the main output (parked in `park_folder`, as a file name, when given), its
    rejected records (with reasons) on REJECTED and, if asked, the batch's last loans report
    month on LAST_REPORT_MONTH. Runs in a worker process."""
    work = Work()
    table = row_groups.read(batch)
    good, rejects = validate.validate_table(feed, table)
    work.count(f"rows_in[{feed}]", table.num_rows, f"rows read[{feed}]")
    work.count(f"rows_rejected[{feed}]", len(rejects), "rows rejected")
    for r in rejects:
        work.emit(r, REJECTED)
    if good.num_rows:
        if last_report_month:
            work.emit(pc.max(good.column("report_month")).as_py(), LAST_REPORT_MONTH)
        # Batches wait for the firm index as file names, not rows (shard_files.park); the
        # firms are compacted, since a slice pickles its whole row group (arrow_coder.compact).
        work.emit(shard_files.park(good, park_folder, feed) if park_folder
                  else arrow_coder.compact(good))
    return work


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


def park_firm_shards(index: dict, folder: str) -> str:
    """Each firm's shard, parked as a file: what every key_by_shard worker reads once."""
    table = pa.table({"enterprise_id": index["ids"], "shard": pa.array(index["shards"])})
    return shard_files.park(table, folder, "firm_shards")


@functools.lru_cache(maxsize=2)
def _firm_shards(path: str) -> tuple[pa.Array, np.ndarray]:
    table = shard_files.read(path)
    return (table.column("enterprise_id").combine_chunks(),
            table.column("shard").to_numpy())


def key_by_shard(parked: str, feed: str, folder: str, firm_shards: str) -> Work:
    """A parked feed batch (its file name) -> (shard, (feed, file holding the rows of that
    shard)); records of firms not in the portfolio are rejected. The rows go to a file and only
    its name into the shuffle (see shard_files). Runs in a worker process."""
    work = Work()
    ids, shards = _firm_shards(firm_shards)
    table = shard_files.read(parked)
    firm = pc.index_in(table.column("enterprise_id"), value_set=ids)
    unknown = firm.is_null().to_numpy(zero_copy_only=False)
    shard = np.full(table.num_rows, -1, np.int64)
    shard[~unknown] = shards[pc.drop_null(firm).to_numpy()]
    if unknown.any():
        work.count(f"rows_rejected[{feed}]", int(unknown.sum()))
        rows = table.filter(pa.array(unknown)).to_pandas(date_as_object=True)
        for r in validate.rejected(feed, rows, "unknown enterprise_id"):
            work.emit(r, REJECTED)
    if unknown.all():
        return work
    # One take in shard order (stable), then a zero-copy slice per shard.
    order = np.argsort(shard, kind="stable")
    shard, grouped = shard[order], table.take(pa.array(order))
    starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(shard)]):
        if shard[start] >= 0:
            rows = grouped.slice(start, end - start)
            work.emit((int(shard[start]), (feed, shard_files.write(
                folder, feed, int(shard[start]), rows))))
    return work


def enterprises_by_shard(index: dict, folder: str):
    """The firms of each shard, into the shuffle as a file name like every other feed's rows."""
    ent = index["enterprises"]
    shard = ent.column("shard").to_numpy()
    for s in np.unique(shard):
        rows = ent.filter(pa.array(shard == s)).drop(["shard"])
        yield int(s), ("enterprises", shard_files.write(folder, "enterprises", int(s), rows))


def featurize_shard(element, as_of_dates: tuple, outcome_end=None) -> Work:
    """All records of one shard -> one feature table per as-of date (transforms/featurize.py);
    duplicates rejected there, where every record of a key is finally in one place. Runs in a
    worker process."""
    _, parts = element
    work, tables = Work(), {}
    for feed, path in parts:   # every feed's rows arrive as file names (shard_files)
        tables.setdefault(feed, []).append(shard_files.read(path))
    features, rejects = featurize.featurize(
        {feed: pa.concat_tables(ts) for feed, ts in tables.items()}, as_of_dates, outcome_end)
    for r in rejects:
        work.emit(r, REJECTED)
    for table in features:
        work.count("firms_featurized", table.num_rows)
        work.emit(table)
    return work


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
        pipeline = next(iter(feed_tables.values())).pipeline
        folder = self.shuffle_folder or shard_files.folder_for(pipeline)
        workers = workers_for(pipeline)
        valid, rejects, report_months = {}, [], None
        for feed in feeds.FEEDS:
            labels_from = self.with_labels and feed == "loans"
            res = feed_tables[feed] | f"Validate[{feed}]" >> beam.ParDo(InWorkerProcesses(
                validate_batch, feed, None if feed == "enterprises" else folder, labels_from,
                workers=workers)).with_output_types(
                pa.Table if feed == "enterprises" else str).with_outputs(
                REJECTED, LAST_REPORT_MONTH, main="valid")
            valid[feed] = res.valid
            rejects.append(res[REJECTED])
            if labels_from:
                report_months = res[LAST_REPORT_MONTH]
        index = (valid["enterprises"]
                 | "CollectFirms" >> beam.combiners.ToList()
                 | "IndexFirms" >> beam.Map(build_firm_index, self.n_shards))
        rejects.append(index | "DuplicateFirms" >> beam.FlatMap(lambda i: i["rejects"]))
        firm_shards = beam.pvalue.AsSingleton(
            index | "ParkFirmShards" >> beam.Map(park_firm_shards, folder))
        keyed = [index | "FirmsByShard" >> beam.FlatMap(enterprises_by_shard, folder)]
        for feed in feeds.FEEDS:
            if feed == "enterprises":
                continue
            res = valid[feed] | f"KeyByShard[{feed}]" >> beam.ParDo(
                InWorkerProcesses(key_by_shard, feed, folder, workers=workers),
                firm_shards).with_outputs(REJECTED, main="keyed")
            keyed.append(res.keyed)
            rejects.append(res[REJECTED])
        outcome_end = None
        if self.with_labels:
            outcome_end = beam.pvalue.AsSingleton(
                report_months | "Latest" >> beam.CombineGlobally(
                    lambda ms: max((m for m in ms if m is not None), default=None)))
        feats = (keyed | "AllFeeds" >> beam.Flatten() | "GroupByShard" >> beam.GroupByKey()
                 | "Featurize" >> beam.ParDo(
                     InWorkerProcesses(featurize_shard, self.as_of_dates, workers=workers),
                     *([outcome_end] if outcome_end else []))
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

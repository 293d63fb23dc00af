"""Sorted part files merged into one sorted Parquet file in bounded memory (a k-way merge).

Each part is a sorted run (beam_jobs/sinks.py writes it so) in an Arrow IPC file of small record
batches. The merge keeps a few thousand rows of every part in memory: each round it takes, from
every part, the buffered rows whose key is below the smallest last-buffered key of any part (no
part can have a smaller row still to come), sorts just those and writes them once they fill a row
group. Memory is about `budget_rows` rows (at least a batch a part) plus a row group, whatever
the table's size. Measured on the 100k book's 8.3M attribution rows: 0.5 GiB above the process's
base and 4.5 s in 313 parts (a 1M book's shard count); the DuckDB sort this replaces took 1.4 GiB
(with a 512 MB memory limit) and 5.7 s for them in 32 parts.

Rows with equal keys come out in the order of the parts' names, then their order in the part, so
the file depends only on the set of parts (they are named by their content).
"""
from __future__ import annotations

import bisect
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Record batches of a part file: the unit a part is read in. 8192 rows encode and decode in half
# the time of 2048; a 1M book's 313 parts then buffer >= 2.6M rows in the merge (~0.2 GB).
PART_BATCH_ROWS = 8192
# Part files lz4-compressed, batch by batch, like the shard files (transforms/shard_files.py):
# a third of the bytes in the page cache (2.6 GB instead of 7.2 GB of attributions at 1M).
PART_IPC = pa.ipc.IpcWriteOptions(compression="lz4")
BUDGET_ROWS = 1 << 20         # rows buffered over all parts (the merge's memory)


def sort_indices(table: pa.Table, sort_keys: list[str]):
    """The sort order of `table` on sort_keys, or None when the table already is in that order
    (a linear check: a scoring worker's rows mostly come in key order)."""
    if in_order(table, sort_keys):
        return None
    return pc.sort_indices(table, [(k, "ascending") for k in sort_keys])


def in_order(table: pa.Table, sort_keys: list[str]) -> bool:
    """Whether each row's keys are <= the next row's (Arrow's ascending order, compared column by
    column). Nulls and NaNs answer False (the caller sorts, and Arrow places them)."""
    n = table.num_rows
    if n < 2:
        return True
    tied = None                       # rows whose keys so far equal the next row's
    for key in sort_keys:
        column = table.column(key)
        if column.null_count or (pa.types.is_floating(column.type)
                                 and pc.any(pc.is_nan(column)).as_py()):
            return False
        this, after = column.slice(0, n - 1), column.slice(1)
        greater = pc.greater(this, after)
        if pc.any(greater if tied is None else pc.and_(tied, greater)).as_py():
            return False
        equal = pc.equal(this, after)
        tied = equal if tied is None else pc.and_(tied, equal)
    return True


def _key(value):
    """A sort key cell comparable like Arrow's ascending order (nulls last)."""
    return (value is None, value)


class _Run:
    """One part file, read a record batch at a time (not memory-mapped: its pages never count
    toward the job's memory after they are used)."""

    def __init__(self, path: str, schema: pa.Schema, sort_keys: list[str], min_rows: int):
        self.source = pa.OSFile(path)
        self.reader = pa.ipc.open_file(self.source)
        self.next_batch, self.schema = 0, schema
        self.sort_keys, self.min_rows = sort_keys, min_rows
        self.buffer = schema.empty_table()
        self.fill()

    @property
    def exhausted(self) -> bool:
        return self.next_batch >= self.reader.num_record_batches

    def fill(self, more: int = 0) -> None:
        """Read batches until min_rows rows are buffered and `more` rows were read, or the part
        ends."""
        batches, buffered, read = [], self.buffer.num_rows, 0
        while (buffered < self.min_rows or read < more) and not self.exhausted:
            batch = self.reader.get_batch(self.next_batch)
            self.next_batch += 1
            batches.append(batch)
            buffered += batch.num_rows
            read += batch.num_rows
        if batches:
            self.buffer = pa.concat_tables(
                [self.buffer, pa.Table.from_batches(batches, self.reader.schema).cast(self.schema)])
        if self.exhausted:
            self.source.close()

    def key_at(self, i: int) -> tuple:
        return tuple(_key(self.buffer.column(k)[i].as_py()) for k in self.sort_keys)

    def last_key(self) -> tuple:
        return self.key_at(self.buffer.num_rows - 1)

    def take_below(self, bound: tuple | None) -> pa.Table:
        """The buffered rows with key < bound (all of them for None), removed from the buffer."""
        n = self.buffer.num_rows
        cut = n if bound is None else bisect.bisect_left(range(n), bound, key=self.key_at)
        taken, self.buffer = self.buffer.slice(0, cut), self.buffer.slice(cut)
        return taken


def part_order(path: str) -> tuple[str, str]:
    """Parts in the order of their names (content hashes), whichever folder holds them: rows with
    equal keys follow it, so a file never depends on a random folder name."""
    return posixpath.basename(path), path


def merge_sorted_runs(parts: list[str], out: str, schema: pa.Schema, sort_keys: list[str],
                      row_group_rows: int, budget_rows: int = BUDGET_ROWS) -> int:
    """Sorted part files -> one Parquet file at `out`, sorted on sort_keys; the number of rows."""
    parts = sorted(parts, key=part_order)
    runs = [_Run(p, schema, sort_keys, max(PART_BATCH_ROWS, budget_rows // max(1, len(parts))))
            for p in parts]
    n, pending = 0, []                 # sorted chunks waiting to fill a row group

    def flush(writer, at_least: int) -> None:
        if sum(t.num_rows for t in pending) >= max(1, at_least):
            writer.write_table(pa.concat_tables(pending), row_group_size=row_group_rows)
            pending.clear()

    with pq.ParquetWriter(out, schema) as writer:
        while True:
            live = [r for r in runs if r.buffer.num_rows or not r.exhausted]
            if not live:
                break
            open_runs = [r for r in live if not r.exhausted]
            # Every row below the smallest last-buffered key of a part that has more to read.
            bound = min((r.last_key() for r in open_runs if r.buffer.num_rows), default=None)
            chunk = [r.take_below(bound) for r in live]
            rows = sum(t.num_rows for t in chunk)
            if rows:
                table = pa.concat_tables(chunk)
                order = sort_indices(table, sort_keys)
                pending.append(table if order is None else table.take(order))
                flush(writer, row_group_rows)
                n += rows
            # Every part tops its buffer up (refilling only the part that held the bound would
            # advance the merge by one batch a round); a round that took nothing (ties at the
            # bound) reads more of every part.
            for r in open_runs:
                r.fill(more=0 if rows else r.min_rows)
        flush(writer, 0)
    return n

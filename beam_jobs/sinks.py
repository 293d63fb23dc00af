"""File sinks: one sorted Parquet file written atomically, locally or on the workers' shared file
system (gs:// on Dataflow, through Beam's FileSystems).

A table sink writes each incoming table to a part file where it is produced and only the part's
name travels on: DirectRunner holds whatever crosses a stage boundary in memory, three times over
at its peak, and the attribution rows of 100k firms are 0.7 GB. One last step sorts the parts into
the file: in memory with Arrow while they are small, else by a k-way merge of the parts, each
written as a sorted run (beam_jobs/sorted_runs.py), in bounded memory. Either way the same rows
in the same order.
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import posixpath
import shutil
import tempfile
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_jobs import sorted_runs
from smescore.files import (as_created, download, is_remote, remove_files, remove_tree, upload,
                            write_named)
from transforms import arrow_coder  # noqa: F401  (the pa.Table coder)

MERGE_IN_MEMORY = 128 << 20  # part files (lz4) up to this many bytes are sorted in memory (Arrow)
MERGE_BATCH_ROWS = 1 << 20  # rows per Parquet row group of the merged file (pyarrow's default)

REJECTED_SCHEMA = pa.schema([("feed", pa.string()), ("record_json", pa.string()),
                             ("reason", pa.string())])


def publish_file(write, path: str) -> None:
    """Readers see the old file or the new one, never half of one: a local file is written beside
    its name and renamed; a remote one is written locally and uploaded (an object appears whole
    when its upload ends)."""
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="smescore-upload-") as local:
            tmp = os.path.join(local, posixpath.basename(path))
            write(tmp)
            upload(tmp, path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    as_created(tmp)     # an output, not a secret: readable as the umask allows
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def sorted_table(tables: list[pa.Table], schema: pa.Schema, sort_keys: list[str]) -> pa.Table:
    """Concatenate and sort so that the file does not depend on bundle order (deterministic)."""
    table = pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()
    return table.sort_by([(k, "ascending") for k in sort_keys])


def write_sorted_parquet(tables: list[pa.Table], path: str, schema: pa.Schema,
                         sort_keys: list[str]) -> int:
    table = sorted_table(tables, schema, sort_keys)
    publish_file(lambda tmp: pq.write_table(table, tmp), path)
    return table.num_rows


def records_to_table(records: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(records, schema=schema)


def parts_folder(path: str) -> str:
    """A fresh hidden folder beside `path` for its parts. Remote when `path` is (the workers that
    write the parts and the one that merges them are other machines); a local one is removed at
    process exit at the latest. The folder's name is never data."""
    if is_remote(path):
        parent, name = posixpath.split(path)
        return FileSystems.join(parent, f".{name}.parts-{uuid.uuid4().hex}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    parts = tempfile.mkdtemp(dir=folder, prefix=f".{os.path.basename(path)}.parts-")
    atexit.register(shutil.rmtree, parts, True)
    return parts


def write_part(table: pa.Table, folder: str, schema: pa.Schema, sort_keys: list[str]) -> str:
    """One table -> an Arrow IPC file named by its content (a retried bundle rewrites the same
    file), sorted on sort_keys in small record batches: a run for sorted_runs; the file's name."""
    order = sorted_runs.sort_indices(table, sort_keys)
    if order is not None:
        table = table.take(order)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema, options=sorted_runs.PART_IPC) as writer:
        writer.write_table(table.cast(schema), max_chunksize=sorted_runs.PART_BATCH_ROWS)
    return write_named(folder, "part", ".arrow", sink.getvalue())


@dataclasses.dataclass(frozen=True)
class PartWriter:
    """Writes parts of one staged table where its rows are made (a worker process: write_part
    into `folder`) and hands on their file names; WriteSortedParquet merges those with its own."""
    folder: str
    schema: pa.Schema
    sort_keys: tuple[str, ...]

    def write(self, table: pa.Table) -> str:
        return write_part(table, self.folder, self.schema, list(self.sort_keys))


def _as_part(element, folder: str, schema: pa.Schema, sort_keys: list[str]) -> str:
    """A table written as a part, or the file name of a part a PartWriter wrote."""
    return element if isinstance(element, str) else write_part(element, folder, schema, sort_keys)


def merge_parts(parts: list[str], path: str, schema: pa.Schema, sort_keys: list[str],
                folder: str, in_memory_bytes: int = MERGE_IN_MEMORY) -> int:
    """The parts (a name twice is read twice), sorted on sort_keys, into one Parquet file at
    `path`; removes the parts (`folder`, and those a PartWriter wrote elsewhere). Remote parts are
    first copied to a local folder."""
    try:
        if not is_remote(folder) and not any(is_remote(p) for p in parts):
            written = []
            publish_file(lambda tmp: written.append(
                sort_parts(parts, tmp, schema, sort_keys, in_memory_bytes)), path)
            return written[0]
        with tempfile.TemporaryDirectory(prefix="smescore-merge-") as local:
            local_parts = [download(p, os.path.join(local, f"{i:06d}.arrow"))   # name order
                           for i, p in enumerate(sorted(parts, key=sorted_runs.part_order))]
            written = []
            publish_file(lambda tmp: written.append(
                sort_parts(local_parts, tmp, schema, sort_keys, in_memory_bytes)), path)
            return written[0]
    finally:
        remove_tree(folder)
        remove_files([p for p in parts if not p.startswith(folder.rstrip("/") + "/")])


def sort_parts(parts: list[str], out: str, schema: pa.Schema, sort_keys: list[str],
               in_memory_bytes: int) -> int:
    """Local parts (sorted runs) -> one sorted Parquet file at `out`; the number of rows. Up to
    `in_memory_bytes` of parts Arrow sorts them in memory; beyond, they are merged in bounded
    memory (sorted_runs). Rows with equal keys keep the parts' name order (names are content
    hashes, so the file does not depend on the order the parts arrived in)."""
    parts = sorted(parts, key=sorted_runs.part_order)
    if sum(os.path.getsize(p) for p in parts) <= in_memory_bytes:
        table = sorted_table([ds.dataset(parts, schema=schema, format="ipc").to_table()]
                             if parts else [], schema, sort_keys)
        pq.write_table(table, out)
        return table.num_rows
    return sorted_runs.merge_sorted_runs(parts, out, schema, sort_keys, MERGE_BATCH_ROWS)


@beam.ptransform_fn
def TotalRows(pcoll):
    """PCollection[pa.Table] -> one element: the rows of all its tables."""
    return pcoll | "Rows" >> beam.Map(lambda t: t.num_rows) | "Sum" >> beam.CombineGlobally(sum)


@beam.ptransform_fn
def WriteSortedParquet(pcoll, path: str, schema: pa.Schema, sort_keys: list[str],
                       in_memory_bytes: int = MERGE_IN_MEMORY):
    """PCollection[pa.Table], or a tuple of them (the parts of one table, each written where it
    is made: a Flatten of tables would be held in memory whole on DirectRunner) -> one Parquet
    file, sorted on sort_keys. Elements may also be the file names of parts already written
    (PartWriter)."""
    folder = parts_folder(path)
    if isinstance(pcoll, (tuple, list)):
        parts = ([p | f"WritePart[{i}]" >> beam.Map(_as_part, folder, schema, sort_keys)
                  for i, p in enumerate(pcoll)] | "AllParts" >> beam.Flatten())
    else:
        parts = pcoll | "WritePart" >> beam.Map(_as_part, folder, schema, sort_keys)
    return (parts
            | "CollectParts" >> beam.combiners.ToList()
            | "Write" >> beam.Map(merge_parts, path, schema, sort_keys, folder, in_memory_bytes))


@beam.ptransform_fn
def WriteRejected(pcoll, path: str):
    """PCollection[dict(feed, record_json, reason)] -> one sorted Parquet file."""
    return (pcoll | "Collect" >> beam.combiners.ToList()
            | "ToTable" >> beam.Map(lambda rs: [records_to_table(rs, REJECTED_SCHEMA)])
            | "Write" >> beam.Map(write_sorted_parquet, path, REJECTED_SCHEMA,
                                  ["feed", "reason", "record_json"]))

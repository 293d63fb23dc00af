"""Local file sinks: one sorted Parquet file written atomically (temp file, then rename)."""
from __future__ import annotations

import os
import tempfile

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

REJECTED_SCHEMA = pa.schema([("feed", pa.string()), ("record_json", pa.string()),
                             ("reason", pa.string())])


def publish_file(write, path: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    if "://" in path:       # gs:// (Dataflow staging): an object appears whole when its upload ends
        write(path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
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


@beam.ptransform_fn
def WriteSortedParquet(pcoll, path: str, schema: pa.Schema, sort_keys: list[str]):
    """PCollection[pa.Table] -> one Parquet file, sorted on sort_keys."""
    return (pcoll | "Collect" >> beam.combiners.ToList()
            | "Write" >> beam.Map(write_sorted_parquet, path, schema, sort_keys))


@beam.ptransform_fn
def WriteRejected(pcoll, path: str):
    """PCollection[dict(feed, record_json, reason)] -> one sorted Parquet file."""
    return (pcoll | "Collect" >> beam.combiners.ToList()
            | "ToTable" >> beam.Map(lambda rs: [records_to_table(rs, REJECTED_SCHEMA)])
            | "Write" >> beam.Map(write_sorted_parquet, path, REJECTED_SCHEMA,
                                  ["feed", "reason", "record_json"]))

"""A Beam coder for PCollections of Arrow tables, registered for `pa.Table` on import.

Without it a table PCollection falls back to pickling, and pickling is also how Beam estimates
element sizes for its byte counters: the first ten elements of every PCollection, and a sample of
the rest, were pickled whole only to be measured (1.2 GB at 25k firms, fused stages included).
This coder sends tables as Arrow IPC streams and estimates their size from `Table.nbytes`.
Transforms that produce tables declare `pa.Table` (`with_output_types`, or a return annotation)
so that Beam picks it.
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa


class ArrowTableCoder(beam.coders.Coder):

    def encode(self, table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def decode(self, data: bytes) -> pa.Table:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()

    def estimate_size(self, table: pa.Table) -> int:
        return table.nbytes

    def is_deterministic(self) -> bool:
        return False     # the same rows in other chunks encode differently; never a key

    def to_type_hint(self):
        return pa.Table

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)


def compact(table: pa.Table) -> pa.Table:
    """The same rows in buffers of their own. A batch read from Parquet is a slice of its row
    group's buffers, and pickling a slice writes the whole buffer: where tables are pickled rather
    than sent with this coder (the accumulator of a ToList holds them in a plain list), eight
    batches of the 1M-firm book's enterprises pickled to 1.2 GB instead of 157 MB, and a ToList of
    them peaked at 7.4 GiB instead of 1.5."""
    return pa.table({name: pa.concat_arrays(column.chunks) if column.num_chunks else column
                     for name, column in zip(table.column_names, table.columns)},
                    schema=table.schema)

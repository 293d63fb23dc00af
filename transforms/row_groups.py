"""Parquet feed batches named, not read: a row group travels as (file, index) and is read by the
step that uses it.

DirectRunner runs a pipeline on one Python thread. Beam's ReadFromParquetBatched decodes every
row group there, and each decoded table is then pickled down a pipe to the worker process that
validates it (transforms/process_pool.py): at 1M firms, 17 GB of Arrow decoded and copied by the
one thread that also drives every other stage. Named row groups go to the workers as a few bytes
each, and each worker reads its own. A row group is read the way Beam's reader reads it
(`ParquetFile.read_row_group`), so the tables, and every output, are the same.
"""
from __future__ import annotations

import contextlib
import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from smescore.errors import BadInput
from smescore.files import is_remote


@dataclasses.dataclass(frozen=True)
class RowGroup:
    path: str
    index: int
    num_rows: int


@contextlib.contextmanager
def _parquet(path: str):
    """A local file by its path (Arrow's own reads), a remote one through Beam's FileSystems."""
    opened = FileSystems.open(path) if is_remote(path) else contextlib.nullcontext(path)
    with opened as source:
        with pq.ParquetFile(source) as parquet:
            yield parquet


def of_files(paths: list[str]) -> list[RowGroup]:
    """Every row group of the files, in file order (only their footers are read)."""
    groups = []
    for path in paths:
        with _parquet(path) as parquet:
            meta = parquet.metadata
        groups += [RowGroup(path, i, meta.row_group(i).num_rows)
                   for i in range(meta.num_row_groups)]
    return groups


def read(batch, columns: list[str] | None = None) -> pa.Table:
    """A feed batch as a table: a RowGroup read (only those of `columns` it has, where given),
    or a table from a source that reads its own, passed through (`columns` selected)."""
    if isinstance(batch, RowGroup):
        try:
            with _parquet(batch.path) as parquet:
                names = parquet.schema_arrow.names
                return parquet.read_row_group(
                    batch.index, None if columns is None else [c for c in columns if c in names])
        except (OSError, pa.ArrowException) as err:     # a corrupt page: its footer was fine
            raise BadInput(f"{batch.path}: row group {batch.index} is not readable "
                           f"({' '.join(str(err).split())}); replace the file with a complete "
                           f"copy or remove it") from None
    return batch if columns is None else batch.select([c for c in columns
                                                      if c in batch.column_names])

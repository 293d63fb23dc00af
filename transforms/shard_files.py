"""Feed rows on their way to their shard, parked in files: only the file names are shuffled.
Validated feed batches are parked the same way while the firm index (a side input) is built.

DirectRunner keeps every element of a GroupByKey in memory, and at its peak three times over
(the decoded groups, their re-encoded stream, a copy of that stream): shuffling 17M invoice rows
of 100k firms as Arrow tables took 10 GiB. Writing each (batch, shard) slice to an Arrow IPC
file and shuffling its name keeps one batch and one shard in memory at a time. Dataflow's shuffle
would not need it, and works with it too: the files go under --temp_location there.

A file is named by its shard and a hash of its bytes, so a retried bundle rewrites the same file
(no duplicates, no random names), and the featurizer sorts every record of a shard anyway
(validate.split_duplicates), so the order the files arrive in cannot change a feature.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions

from smescore import files


def folder_for(pipeline, prefix: str = "smescore-shuffle-") -> str:
    """A fresh folder under the pipeline's --temp_location, or a local temporary one that is
    removed when this process exits (whatever happens to the pipeline)."""
    temp_location = pipeline.options.view_as(GoogleCloudOptions).temp_location
    if temp_location and files.is_remote(temp_location):
        # A shared file system (the workers are other machines); the folder name is never data.
        return FileSystems.join(temp_location, prefix + uuid.uuid4().hex)
    folder = tempfile.mkdtemp(prefix=prefix, dir=temp_location or None)
    atexit.register(shutil.rmtree, folder, True)
    return folder


# lz4: half the bytes of plain Arrow (a third for the parked batches, which carry every column).
# Every feed row is written twice on its way to its shard, 2.6 GB at 100k firms uncompressed
# (26 GB at 1M): compressed, they hold a third to a half of that in the page cache. (Their copy
# into it was 18% of the night's CPU on this VM: that was one write() a file, smescore.files.)
COMPRESSED_IPC = pa.ipc.IpcWriteOptions(compression="lz4")


def write(folder: str, feed: str, shard: int, table: pa.Table) -> str:
    """One slice of a feed for one shard -> its file name."""
    return _write_named(table, FileSystems.join(folder, feed), f"shard-{shard:05d}",
                        COMPRESSED_IPC)


def park(table: pa.Table, folder: str, feed: str) -> str:
    """A validated feed batch -> its file name, so that only names wait in front of a step that
    needs a side input first (DirectRunner holds that step's whole input in memory until then:
    every feed row of the book). Named by content, like the shard slices."""
    return _write_named(table, FileSystems.join(folder, "parked", feed), "batch", COMPRESSED_IPC)


def _write_named(table: pa.Table, folder: str, prefix: str, options=None) -> str:
    """The table as an Arrow IPC stream in `folder`, named `<prefix>-<hash of its bytes>.arrow`."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return files.write_named(folder, prefix, ".arrow", sink.getvalue())


def read(path: str) -> pa.Table:
    with FileSystems.open(path) as fh:
        data = fh.read()
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def remove(folder: str) -> None:
    files.remove_tree(folder)

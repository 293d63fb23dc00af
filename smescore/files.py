"""Files on the local disk or on the file system Dataflow's workers share (gs://), through Beam's
FileSystems. On Cloud Storage a folder is a prefix: it does not `exist`, and only a path ending in
'/' deletes everything under it."""
from __future__ import annotations

import shutil

from apache_beam.io.filesystems import FileSystems

COPY_CHUNK = 16 << 20  # bytes per read when copying to or from a remote file system


def is_remote(path: str) -> bool:
    return FileSystems.get_scheme(path) not in (None, "file")


def upload(local: str, path: str) -> None:
    with open(local, "rb") as src, FileSystems.create(path) as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)


def download(path: str, local: str) -> str:
    with FileSystems.open(path) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)
    return local


def remove_tree(folder: str) -> None:
    """The folder and everything under it; a folder that is not there is no error."""
    if not is_remote(folder):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        FileSystems.delete([folder.rstrip("/") + "/"])

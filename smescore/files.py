"""Files on the local disk or on the file system Dataflow's workers share (gs://), through Beam's
FileSystems. On Cloud Storage a folder is a prefix: it does not `exist`, and only a path ending in
'/' deletes everything under it."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

COPY_CHUNK = 16 << 20  # bytes per read when copying to or from a remote file system
# Bytes per write() call into a local file. On the Linux 6.18 VM the figures come from, a single
# write() of 1 MiB or more costs ~13 ms a MiB in the kernel, 40x the same bytes in calls of
# 512 KiB (dd, Python; the threshold is exactly 1 MiB); the night writes GBs of temporary files.
WRITE_CHUNK = 512 << 10


def is_remote(path: str) -> bool:
    return FileSystems.get_scheme(path) not in (None, "file")


def upload(local: str, path: str) -> None:
    with open(local, "rb") as src, FileSystems.create(path) as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)


def download(path: str, local: str) -> str:
    with FileSystems.open(path) as src, open(local, "wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            write_all(dst, chunk)
    return local


def write_all(fh, data) -> None:
    """`data` (bytes or any buffer, e.g. a pa.Buffer) into an open binary file, WRITE_CHUNK bytes
    a call."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), WRITE_CHUNK):
        fh.write(view[start:start + WRITE_CHUNK])


def write_bytes(path: str, data) -> None:
    """A new file at `path`, local or remote, holding `data`."""
    with FileSystems.create(path) as fh:
        write_all(fh, data)


def write_named(folder: str, prefix: str, suffix: str, data) -> str:
    """`data` in a new file of `folder` named by its content, `<prefix>-<sha256, 32 hex><suffix>`
    (a retried bundle rewrites the same file; no random names); the file's path."""
    path = FileSystems.join(folder, f"{prefix}-{hashlib.sha256(data).hexdigest()[:32]}{suffix}")
    write_bytes(path, data)
    return path


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)       # elsewhere: set and put back (not thread-safe; rare)
    os.umask(mask)
    return mask


def as_created(path: str) -> str:
    """Give a file or folder made private by mkstemp / mkdtemp (0600 / 0700) the mode a plain
    open() or mkdir() would have given it, so outputs are as readable as the umask allows (a
    colleague in the group can open a report or a model version)."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~umask())
    return path


def remove_tree(folder: str) -> None:
    """The folder and everything under it; a folder that is not there is no error."""
    if not is_remote(folder):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        FileSystems.delete([folder.rstrip("/") + "/"])


def remove_files(paths: list[str]) -> None:
    """The files; one that is not there is no error."""
    for path in paths:
        if not is_remote(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    remote = [p for p in paths if is_remote(p)]
    if remote:
        with contextlib.suppress(BeamIOError):     # raised for the ones already gone
            FileSystems.delete(remote)

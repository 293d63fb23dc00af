"""A test file system for the paths Dataflow's workers share (gs://)."""
import os
import posixpath
import shutil

from apache_beam.io.localfilesystem import LocalFileSystem


class SharedFileSystem(LocalFileSystem):
    """A file system of its own scheme kept in a local folder: the sink treats it as it treats
    gs:// (parts and the merged file through Beam's FileSystems), without Cloud Storage."""
    ROOT = None

    @classmethod
    def scheme(cls):
        return "sharedfs"

    def _local(self, path):
        return os.path.join(self.ROOT, path[len("sharedfs://"):])

    def join(self, base, *paths):
        return posixpath.join(base, *paths)

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def exists(self, path):
        return super().exists(self._local(path))

    def delete(self, paths):
        """As on Cloud Storage, a path ending in '/' deletes everything under it."""
        for path in paths:
            if not path.endswith("/"):
                super().delete([self._local(path)])
            elif os.path.isdir(self._local(path)):
                shutil.rmtree(self._local(path))


"""The DuckDB warehouse checked before any computation: its folder exists (never created silently:
a mistyped path would start a new, empty warehouse elsewhere), it is writable, and this run is its
only writer (a lock file beside it, waited on for --lock_timeout seconds). Holding the lock, the
run removes the staging folders that killed runs left in the temp dir.

A BigQuery sink has no file to check: its transactions serialise writers.
"""
from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import tempfile
import time
from typing import Optional

from smescore.errors import BadInput, ServiceUnavailable
from smescore.warehouse import connect_waiting

STAGING_PREFIX = "smescore-score-"     # + "<pid>-": whose staging folder it is
POLL_S = 0.2


def staging_prefix() -> str:
    return f"{STAGING_PREFIX}{os.getpid()}-"


class WarehouseLock:
    """An exclusive flock on `<warehouse>.lock`, held for the whole run (released on close, and by
    the kernel when the process dies, so a killed run never leaves it held)."""

    def __init__(self, warehouse: str, timeout_s: float):
        self.path = f"{warehouse}.lock"
        self.fh = open(self.path, "a+", encoding="utf-8")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.fh.seek(0)
                    holder = self.fh.read().strip() or "unknown"
                    self.fh.close()
                    raise ServiceUnavailable(
                        f"warehouse {warehouse} is locked by another run (lock file {self.path}, "
                        f"holder {holder}) after waiting {timeout_s:g}s; retry when it has "
                        f"finished or raise --lock_timeout") from None
                time.sleep(POLL_S)
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()

    def release(self) -> None:
        if not self.fh.closed:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


def check_location(warehouse: str, create: bool) -> None:
    folder = os.path.dirname(os.path.abspath(warehouse))
    if not os.path.isdir(folder):
        if not create:
            raise BadInput(f"warehouse {warehouse}: folder {folder} does not exist; fix the path, "
                           f"or pass --create_warehouse to start a new warehouse there")
        os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".smescore-write-probe-{os.getpid()}")
    try:       # os.access says yes to root on a read-only mount: try it
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
        if os.path.exists(warehouse):
            with open(warehouse, "r+b"):
                pass
    except OSError as err:
        raise ServiceUnavailable(f"warehouse {warehouse} is not writable ({err.strerror} in "
                                 f"{folder}); fix the permissions or choose another --warehouse") \
            from None


def remove_stale_staging(progress=print, temp_dir: Optional[str] = None) -> list[str]:
    """Staging folders of runs that no longer exist (killed: their `finally` never ran)."""
    removed = []
    for folder in sorted(glob.glob(os.path.join(temp_dir or tempfile.gettempdir(),
                                                f"{STAGING_PREFIX}*"))):
        m = re.match(rf"{STAGING_PREFIX}(\d+)-", os.path.basename(folder))
        if not m or _alive(int(m.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        progress(f"[score] removed {len(removed)} staging folder(s) of killed runs: "
                 f"{', '.join(removed)}")
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def warehouse_first(cfg, progress=print) -> Optional[WarehouseLock]:
    """All of the above, in that order; returns the held lock (None for a BigQuery sink)."""
    if cfg.sink != "duckdb":
        return None
    check_location(cfg.warehouse, cfg.create_warehouse)
    lock = WarehouseLock(cfg.warehouse, cfg.lock_timeout)
    try:
        connect_waiting(cfg.warehouse, cfg.lock_timeout).close()   # no other process holds it
        remove_stale_staging(progress)
    except BaseException:
        lock.release()
        raise
    return lock

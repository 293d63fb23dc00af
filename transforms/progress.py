"""Per-stage progress while a long job runs, next to Beam's own metrics counters.

Beam counters are only summed at the end on DirectRunner; an operator waiting on a nightly run wants
to see rows read, firms featurized and scored as they advance. Each worker process keeps its own
tallies and logs them at INFO at most every `every_s` seconds (smescore/runtime.py shows them; on
a terminal as one live line).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time

_lock = threading.Lock()
_counts: dict[str, int] = {}
_last = [0.0]
EVERY_S = 5.0
_captured: list[dict] = []


@contextlib.contextmanager
def captured():
    """Counts advanced inside are collected into the yielded dict instead of logged: a pool
    worker (transforms/process_pool.py) sends them back to the runner's process, which logs."""
    counts: dict[str, int] = {}
    _captured.append(counts)
    try:
        yield counts
    finally:
        _captured.pop()


def advance(stage: str, n: int) -> None:
    if _captured:
        counts = _captured[-1]
        counts[stage] = counts.get(stage, 0) + int(n)
        return
    with _lock:
        _counts[stage] = _counts.get(stage, 0) + int(n)
        now = time.monotonic()
        if now - _last[0] < EVERY_S:
            return
        _last[0] = now
        line = ", ".join(f"{k} {v:,}" for k, v in sorted(_counts.items()))
    logging.getLogger("smescore.progress").info("[progress] %s", line, extra={"live": True})

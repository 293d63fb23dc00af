"""The heavy per-table steps of a Beam stage, run in a pool of worker processes: both cores of one
machine on DirectRunner.

DirectRunner runs a pipeline on one Python thread, and its multi-process mode moves every table
between processes over the Fn API and loads a model per process, for no gain (measured at 25k
firms: the same wall time, +40% CPU). Here the stage stays in the runner's process and only the
pure, heavy part of an element (validating a feed batch, sharding it, the point-in-time features
of a shard, score rows and reasons) goes to a worker: `fn(element, *args)` returns a `Work` (its
outputs, tagged or not, and the counts to log), and the outputs are emitted in the order the
elements came in. A worker runs the same function on the same input as the runner's process
would, so the outputs are the same bits as with one process (`workers=1` runs `fn` in place).

One pool serves every stage of the process. Its workers are spawned (they never inherit the
runner's threads) when a pooled stage starts and exit once no stage has used them for IDLE_S
seconds, so they hold no memory while inference, the sinks and publication run. At most
`workers + 1` elements of a stage are in flight: memory grows with the workers, not the book.
Dataflow runs one SDK process per core already; there the stages run in place.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import os
import threading
from typing import Callable

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms import progress

NAMESPACE = "smescore"
IDLE_S = 2.0
ENV = "SMESCORE_WORKER_PROCESSES"
_LOCAL_RUNNERS = {"DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "BundleBasedDirectRunner"}


@dataclasses.dataclass
class Work:
    """What one element gave: outputs as (tag, value) in order (tag None: the main output), the
    Beam counters to increment and the progress lines to advance."""
    outputs: list = dataclasses.field(default_factory=list)
    counters: dict = dataclasses.field(default_factory=dict)
    progress: dict = dataclasses.field(default_factory=dict)

    def emit(self, value, tag: str | None = None) -> None:
        self.outputs.append((tag, value))

    def count(self, counter: str, n: int, progress_line: str | None = None) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + int(n)
        if progress_line and n:
            self.progress[progress_line] = self.progress.get(progress_line, 0) + int(n)


def workers_for(pipeline) -> int:
    """Worker processes for the pooled stages of `pipeline`: $SMESCORE_WORKER_PROCESSES if set,
    else one a core on a local runner; 1 (in place) on a distributed runner, and inside a worker.

    Spawned workers import the main module (under `__mp_main__`): a script that runs a job needs
    the usual `if __name__ == "__main__":` guard, or SMESCORE_WORKER_PROCESSES=1. Were a worker
    to start a job anyway, it runs in place rather than start pools of its own."""
    if multiprocessing.parent_process() is not None:
        return 1
    if os.environ.get(ENV):
        return max(1, int(os.environ[ENV]))
    if type(pipeline.runner).__name__ not in _LOCAL_RUNNERS:
        return 1
    return os.cpu_count() or 1


class _SharedPool:
    """One ProcessPoolExecutor for the process, started on first use and shut down IDLE_S
    seconds after its last user let go."""

    def __init__(self):
        self._lock = threading.Lock()
        self._executor, self._workers, self._users, self._timer = None, 0, 0, None

    def acquire(self, workers: int) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._executor is not None and (
                    getattr(self._executor, "_broken", False)          # a worker died
                    or (self._workers != workers and not self._users)):
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            if self._executor is None:
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("spawn"))
                self._workers = workers
            self._users += 1
            return self._executor

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._timer = threading.Timer(IDLE_S, self._shutdown_if_idle)
                self._timer.daemon = True
                self._timer.start()

    def _shutdown_if_idle(self) -> None:
        with self._lock:
            if self._users or self._executor is None:
                return
            executor, self._executor, self._timer = self._executor, None, None
        executor.shutdown(wait=True)


_POOL = _SharedPool()


class InWorkerProcesses(beam.DoFn):
    """`fn(element, *args, *side_inputs) -> Work` in the shared pool of `workers` processes
    (1: in this process); outputs in input order. `fn` must be a module-level function and its
    arguments must pickle."""

    def __init__(self, fn: Callable[..., Work], *args, workers: int = 1):
        self.fn, self.args, self.workers = fn, args, max(1, int(workers))
        self._counters = {}

    def start_bundle(self):
        self._pool, self._pending = None, collections.deque()

    def process(self, element, *side_inputs):
        if self.workers == 1:
            yield from self._emit(self.fn(element, *self.args, *side_inputs))
            return
        if self._pool is None:
            self._pool = _POOL.acquire(self.workers)
        self._pending.append(self._pool.submit(_in_worker, self.fn, element, *self.args,
                                               *side_inputs))
        while len(self._pending) > self.workers or (self._pending and self._pending[0].done()):
            yield from self._emit(self._pending.popleft().result())

    def finish_bundle(self):
        try:
            while self._pending:
                for out in self._emit(self._pending.popleft().result()):
                    yield _windowed(out)
        finally:
            self._let_go()

    def teardown(self):
        self._let_go()

    def _let_go(self):
        if getattr(self, "_pool", None) is not None:
            self._pool = None
            for future in getattr(self, "_pending", ()):
                future.cancel()
            self._pending = collections.deque()
            _POOL.release()

    def _emit(self, work: Work):
        for name, n in work.counters.items():
            if name not in self._counters:
                self._counters[name] = beam.metrics.Metrics.counter(NAMESPACE, name)
            self._counters[name].inc(n)
        for line, n in work.progress.items():
            progress.advance(line, n)
        for tag, value in work.outputs:
            yield value if tag is None else beam.pvalue.TaggedOutput(tag, value)


def _in_worker(fn, element, *args) -> Work:
    """`fn` in a worker process: the progress it advances itself travels back with its Work."""
    with progress.captured() as counts:
        work = fn(element, *args)
    for line, n in counts.items():
        work.progress[line] = work.progress.get(line, 0) + n
    return work


def _windowed(out):
    """An output of finish_bundle, in the global window (every element of these jobs is)."""
    if isinstance(out, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
    return GlobalWindows.windowed_value(out)

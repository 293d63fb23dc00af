"""Dynamic batching: concurrent requests share one model call, the way TF Serving batches.

Requests queue their feature tables; one worker takes everything queued (up to `max_rows`), scores
it in one call on its own thread and hands each request its rows back. While a batch is being
scored the next one fills, so the batch size, and the throughput, grow with the load.

Before a batch leaves, the worker waits (at most `max_wait_s`) only for requests it knows are on
their way: a request declares itself with `on_its_way()` while it computes its features (a
raw-record request spends ~20 ms there), and the wait ends when every declared one has submitted.
TF Serving waits its whole timeout whenever a batch is not full; here a lone request is scored at
once (measured: 2 ms of a 1-client request's latency was this wait, for nothing).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import time
from typing import Callable

import pyarrow as pa


@dataclasses.dataclass
class _Pending:
    table: object           # anything with num_rows that `combine` turns into a table
    future: asyncio.Future


class DynamicBatcher:
    def __init__(self, score: Callable[[pa.Table], list], max_rows: int = 256,
                 max_wait_s: float = 0.002, observe_batch: Callable[[int], None] = lambda n: None,
                 combine: Callable[[list], pa.Table] = pa.concat_tables):
        if max_rows < 1 or max_wait_s < 0:
            raise ValueError(f"max_rows must be >= 1 and max_wait_s >= 0, got {max_rows}, "
                             f"{max_wait_s}")
        self.score = score
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.observe_batch = observe_batch
        self.combine = combine      # runs on the model thread, off the event loop
        self._queue: list[_Pending] = []
        self._on_the_way = 0        # requests declared by on_its_way() that have not submitted
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # one model call at a time: the next batch gathers while this one runs
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def on_its_way(self):
        """Declare a request that will submit when the block ends (or give up): a batch about to
        leave waits for it, within max_wait_s. Nothing awaits between the block's end and
        `submit`'s enqueue, so the request is never uncounted in between."""
        self._on_the_way += 1
        try:
            yield
        finally:
            self._on_the_way -= 1
            if self._wakeup is not None:
                self._wakeup.set()           # a batch waiting for this request need wait no more

    async def submit(self, table) -> list:
        """The scored rows of `table` (a pa.Table, or what `combine` takes), in order, whatever
        else was in its batch."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(table, future))
        self._wakeup.set()
        return await future

    def _queued_rows(self) -> int:
        return sum(p.table.num_rows for p in self._queue)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                continue
            deadline = time.monotonic() + self.max_wait_s
            while (self._on_the_way and self._queued_rows() < self.max_rows
                   and time.monotonic() < deadline):
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                self._wakeup.clear()
            batch, rows = [], 0
            while self._queue and (not batch or rows + self._queue[0].table.num_rows
                                   <= self.max_rows):
                p = self._queue.pop(0)
                batch.append(p)
                rows += p.table.num_rows
            if self._queue:
                self._wakeup.set()           # the rest goes in the next batch
            self.observe_batch(rows)
            parts = [p.table for p in batch]
            try:
                scored = await loop.run_in_executor(
                    self._executor, lambda: self.score(self.combine(parts)))
            except Exception as err:  # noqa: BLE001 - every request of the batch gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            start = 0
            for p in batch:
                if not p.future.done():      # a client that went away cancelled its future
                    p.future.set_result(scored[start:start + p.table.num_rows])
                start += p.table.num_rows

"""Dynamic batching (service/batching.py) on its own: concurrent requests share one call, the
batch never passes max_rows, every request gets its own rows back in order, a failed call fails
only its own batch, a lone request is scored at once, and a batch waits for a request on its way
no longer than max_wait_s."""
import asyncio
import threading
import time

import pyarrow as pa
import pytest

from service.batching import DynamicBatcher


def _table(tag: str, n: int) -> pa.Table:
    return pa.table({"firm": [f"{tag}-{i}" for i in range(n)]})


class Recorder:
    def __init__(self, delay=0.05, fail_on=None):
        self.calls, self.delay, self.fail_on = [], delay, fail_on
        self.threads = set()

    def __call__(self, table):
        self.threads.add(threading.get_ident())
        firms = table.column("firm").to_pylist()
        self.calls.append(firms)
        time.sleep(self.delay)             # the model call: the next batch gathers meanwhile
        if self.fail_on and any(f.startswith(self.fail_on) for f in firms):
            raise RuntimeError("champion failed")
        return [f"scored {f}" for f in firms]


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    rec = Recorder()

    async def main():
        b = DynamicBatcher(rec, max_rows=16, max_wait_s=0.01)
        b.start()
        out = await asyncio.gather(*(b.submit(_table(f"r{k}", 1 + k % 3)) for k in range(40)))
        await b.stop()
        return out

    out = _run(main())
    for k, rows in enumerate(out):
        assert rows == [f"scored r{k}-{i}" for i in range(1 + k % 3)]
    assert sum(len(c) for c in rec.calls) == sum(1 + k % 3 for k in range(40))
    assert len(rec.calls) < 40 / 2                    # shared: far fewer calls than requests
    assert max(len(c) for c in rec.calls) <= 16
    assert len(rec.threads) == 1                      # one model call at a time, off the loop


def test_a_failed_call_fails_its_batch_only():
    rec = Recorder(fail_on="bad")

    async def main():
        b = DynamicBatcher(rec, max_rows=4, max_wait_s=0.005)
        b.start()
        first = await asyncio.gather(b.submit(_table("bad", 4)), return_exceptions=True)
        second = await b.submit(_table("good", 2))
        await b.stop()
        return first, second

    first, second = _run(main())
    assert isinstance(first[0], RuntimeError) and "champion failed" in str(first[0])
    assert second == ["scored good-0", "scored good-1"]


def test_a_lone_request_is_scored_at_once():
    rec = Recorder(delay=0.0)

    async def main():
        b = DynamicBatcher(rec, max_rows=256, max_wait_s=0.5)
        b.start()
        await b.submit(_table("warm", 1))
        start = time.perf_counter()
        await b.submit(_table("alone", 1))
        took = time.perf_counter() - start
        await b.stop()
        return took

    assert _run(main()) < 0.25                        # not the 0.5 s wait bound


def test_a_batch_waits_for_a_request_on_its_way_then_leaves_when_it_arrives():
    rec = Recorder(delay=0.0)

    async def main():
        b = DynamicBatcher(rec, max_rows=256, max_wait_s=2.0)
        b.start()

        async def slow_features(tag, seconds):
            with b.on_its_way():
                await asyncio.sleep(seconds)          # computing its features
            return await b.submit(_table(tag, 1))
        start = time.perf_counter()
        out = await asyncio.gather(b.submit(_table("first", 1)), slow_features("second", 0.1))
        took = time.perf_counter() - start
        await b.stop()
        return out, took

    out, took = _run(main())
    assert out == [["scored first-0"], ["scored second-0"]]
    assert rec.calls == [["first-0", "second-0"]]     # waited for it: one shared call
    assert 0.1 <= took < 1.0                          # and no longer than it took to come


def test_a_request_on_its_way_delays_a_batch_at_most_the_wait_bound():
    rec = Recorder(delay=0.0)

    async def main():
        b = DynamicBatcher(rec, max_rows=256, max_wait_s=0.05)
        b.start()

        async def very_slow():
            with b.on_its_way():
                await asyncio.sleep(0.6)
            return await b.submit(_table("late", 1))
        late = asyncio.ensure_future(very_slow())
        await asyncio.sleep(0)
        start = time.perf_counter()
        first = await b.submit(_table("first", 1))
        took = time.perf_counter() - start
        await late
        await b.stop()
        return first, took

    first, took = _run(main())
    assert first == ["scored first-0"]
    assert 0.04 <= took < 0.4                         # the bound, not the late request's 0.6 s
    assert rec.calls == [["first-0"], ["late-0"]]


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        DynamicBatcher(lambda t: [], max_rows=0)

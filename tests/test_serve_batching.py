"""MicroBatcher alone, with a fake batch function: gathering, routing, errors, cancellation, admission."""

from __future__ import annotations

import asyncio
import time

import pytest

from distillad.errors import ConfigError
from distillad.serve.batching import MicroBatcher, QueueFull


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_items_share_one_batch_and_get_their_own_result():
    seen: list[list[int]] = []

    def double(items):
        seen.append(list(items))
        return [2 * x for x in items]

    async def main():
        b = MicroBatcher(double, max_batch=8, max_wait_ms=200, max_queue=16)
        b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(5)))
        await b.close()
        return out, b.stats

    out, stats = _run(main())
    assert out == [0, 2, 4, 6, 8]
    assert seen == [[0, 1, 2, 3, 4]]  # one forward for five requests
    assert stats["batches"] == 1 and stats["items"] == 5 and stats["largest_batch"] == 5


def test_max_batch_splits_and_max_wait_bounds_the_wait():
    seen: list[int] = []

    def ident(items):
        seen.append(len(items))
        return list(items)

    async def main():
        b = MicroBatcher(ident, max_batch=3, max_wait_ms=0, max_queue=16)
        b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(7)))
        t0 = time.perf_counter()
        await b.submit("alone")  # nothing else comes: answered without waiting for company
        waited = time.perf_counter() - t0
        await b.close()
        return out, waited

    out, waited = _run(main())
    assert out == list(range(7))
    assert seen[:3] == [3, 3, 1] and seen[3] == 1
    assert waited < 1.0


def test_waits_for_admitted_requests_only():
    """A batch waits (up to max_wait) for requests admitted but still decoding, and not for anyone else."""
    seen: list[list[str]] = []

    def ident(items):
        seen.append(list(items))
        return list(items)

    async def one(b, name, delay):
        with b.admit() as ticket:
            await asyncio.sleep(delay)  # reading and decoding its body
            return await b.submit(name, ticket)

    async def main():
        b = MicroBatcher(ident, max_batch=8, max_wait_ms=2000, max_queue=16)
        b.start()
        t0 = time.perf_counter()
        out = await asyncio.gather(one(b, "a", 0), one(b, "b", 0.05), one(b, "c", 0.1))
        together = time.perf_counter() - t0
        t0 = time.perf_counter()
        alone = await one(b, "alone", 0)
        lone = time.perf_counter() - t0
        await b.close()
        return out, together, alone, lone

    out, together, alone, lone = _run(main())
    assert out == ["a", "b", "c"] and alone == "alone"
    assert seen == [["a", "b", "c"], ["alone"]]
    assert together < 1.5 and lone < 0.5  # neither waited the full 2 s


def test_a_failing_batch_fails_its_own_requests_only():
    def maybe_fail(items):
        if "bad" in items:
            raise RuntimeError("boom")
        return list(items)

    async def main():
        b = MicroBatcher(maybe_fail, max_batch=2, max_wait_ms=100, max_queue=16)
        b.start()
        res = await asyncio.gather(b.submit("bad"), b.submit("x"), return_exceptions=True)
        after = await b.submit("ok")  # the loop goes on
        await b.close()
        return res, after

    res, after = _run(main())
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in res)
    assert after == "ok"


def test_cancelled_requests_are_not_computed():
    seen: list[list[str]] = []

    def slow(items):
        seen.append(list(items))
        time.sleep(0.2)
        return list(items)

    async def main():
        b = MicroBatcher(slow, max_batch=1, max_wait_ms=0, max_queue=16)
        b.start()
        first = asyncio.ensure_future(b.submit("first"))
        await asyncio.sleep(0.05)  # "first" is being computed
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.submit("gone"), 0.01)
        assert await first == "first"
        assert await b.submit("last") == "last"
        await b.close()

    _run(main())
    assert ["gone"] not in seen and seen == [["first"], ["last"]]


def test_admission_is_bounded():
    b = MicroBatcher(list, max_batch=1, max_wait_ms=0, max_queue=2)
    with b.admit(), b.admit():
        assert b.in_flight == 2
        with pytest.raises(QueueFull, match="max-queue 2"):
            with b.admit():
                pass
    assert b.in_flight == 0 and b.stats["rejected"] == 1
    with b.admit():  # room again
        pass


@pytest.mark.parametrize("kw", [{"max_batch": 0}, {"max_queue": 0}, {"max_wait_ms": -1}, {"max_batch": 2.5}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        MicroBatcher(list, **kw)

"""Dynamic micro-batching: concurrent requests are gathered into one forward pass and answered one by one.

The first waiting item opens a batch; more are taken until ``max_batch`` items or ``max_wait_ms``
have passed, whichever comes first (``max_wait_ms=0``: only what is already waiting). It waits only
while admitted requests have not yet handed in their images (their bodies are being read or
decoded), so a lone request never waits for company that is not coming. The batch
runs on one worker thread (one forward at a time: models are not assumed thread-safe), so the
event loop keeps accepting requests, and those that arrive during a forward form the next batch.
Admission is bounded: past ``max_queue`` requests in flight, ``admit`` refuses at once (the HTTP
layer answers 503 + Retry-After) instead of letting memory grow. Written here rather than taken
from a library because the whole policy is these ~100 lines and must share the server's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from typing import Any, Callable, Iterator, Sequence

from ..errors import ConfigError

__all__ = ["MicroBatcher", "QueueFull", "Ticket"]


class QueueFull(Exception):
    """More requests in flight than the queue admits; retry later."""


class Ticket:
    """One admitted request; ``coming`` until it submits its first item."""

    __slots__ = ("coming",)

    def __init__(self) -> None:
        self.coming = True


class MicroBatcher:
    """Run ``run_batch(items) -> results`` (one result per item, same order) over gathered items.

    Use from one asyncio loop: ``start()``, then ``with admit() as t: await submit(item, t)``, then
    ``await close()``."""

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], max_batch: int = 16,
                 max_wait_ms: float = 5.0, max_queue: int = 64) -> None:
        for name, v, lo in (("max_batch", max_batch, 1), ("max_queue", max_queue, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not max_wait_ms >= 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.run_batch = run_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.stats = {"batches": 0, "items": 0, "largest_batch": 0, "rejected": 0, "compute_s": 0.0}
        self._in_flight = 0
        self._coming = 0  # admitted requests that have not submitted yet: worth waiting for
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="distillad-batch")

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished."""
        return self._in_flight

    def start(self) -> None:
        """Start the gathering task on the running loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the batch thread (warm-up: thread-local caches and settings are the batches')."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        """Stop gathering; items still waiting are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait()[1].cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def admit(self) -> Iterator[Ticket]:
        """Count one request in flight for the ``with`` block; ``QueueFull`` when ``max_queue`` are."""
        if self._in_flight >= self.max_queue:
            self.stats["rejected"] += 1
            raise QueueFull(f"{self._in_flight} requests in flight (--max-queue {self.max_queue})")
        ticket = Ticket()
        self._in_flight += 1
        self._coming += 1
        try:
            yield ticket
        finally:
            self._in_flight -= 1
            if ticket.coming:
                self._coming -= 1

    async def submit(self, item: Any, ticket: Ticket | None = None) -> Any:
        """Queue one item and wait for its own result (an exception of its batch is raised here).
        ``ticket``: of the admitted request the item belongs to (without one, nobody is waited for)."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if ticket is not None and ticket.coming:
            ticket.coming = False
            self._coming -= 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut  # cancelling the waiter cancels fut; the loop then skips the item

    async def _gather(self) -> list[tuple[Any, asyncio.Future[Any]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0 or self._coming <= 0:  # nobody else is on the way
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [(item, fut) for item, fut in batch if not fut.done()]  # drop requests that timed out

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, self.run_batch, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            except Exception as e:  # noqa: BLE001 - every waiter of the batch gets the error, the loop goes on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            finally:
                self.stats["compute_s"] += time.perf_counter() - t0
            self.stats["batches"] += 1
            self.stats["items"] += len(batch)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)

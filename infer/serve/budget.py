"""The decoded-bytes budget of `unetlite serve`: the read-ahead's accounting, for requests.

segment's read-ahead bounds memory by what the images will cost once decoded, not by how many
files are open (``readahead.ByteBudget``). serve does the same per request: before a request is
decoded, the header's size says what it will cost (the encoded bytes, the RGB pixels and the
output format's working bytes per pixel: ``items.working_bytes_per_pixel``, the very numbers
segment reserves), and the request waits on the event loop until that much of the budget is
free. Waiting happens on the event loop, never in the decode/encode thread pool: a pool thread
blocked on memory held by a request that needs a pool thread to finish would deadlock.

Unlike segment, which clamps an item larger than the whole budget and runs it alone, serve
refuses such a request (422, ``over_memory_budget``): one request alone must not take the server
past its bound (a 100 MP side-by-side alone peaks near 2.8 GB). A request whose header the
server cannot read holds the whole budget while it decodes, and is checked once decoded. Grants
are first come, first served, so a large request is not starved by a stream of small ones.
"""
from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

from ..pipeline.readahead import DEFAULT_BUDGET_BYTES


class BudgetTimeout(Exception):
    """The memory did not become free within the wait allowed."""


class AsyncByteBudget:
    """A FIFO counting semaphore over bytes for one event loop."""

    def __init__(self, capacity: int = DEFAULT_BUDGET_BYTES):
        self.capacity = max(1, int(capacity))
        self.used = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    def _grant(self) -> None:
        while self._waiters:
            amount, future = self._waiters[0]
            if future.done():  # timed out or cancelled
                self._waiters.popleft()
                continue
            if self.used + amount > self.capacity:
                return
            self._waiters.popleft()
            self._take(amount)
            future.set_result(amount)

    def _take(self, amount: int) -> None:
        self.used += amount
        self.peak = max(self.peak, self.used)

    async def acquire(self, nbytes: int, timeout: float) -> int:
        """Wait (FIFO) until ``nbytes`` (clamped to the capacity) are free; returns the bytes held.
        Raises BudgetTimeout after ``timeout`` seconds."""
        amount = min(max(0, int(nbytes)), self.capacity)
        if not self._waiters and self.used + amount <= self.capacity:
            self._take(amount)
            return amount
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append((amount, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if future.done() and not future.cancelled():  # granted just as the wait ended: give it back
                self.release(future.result())
            else:
                future.cancel()
                self._grant()  # the head may have been this request: let the next one try
            if isinstance(exc, asyncio.TimeoutError):
                raise BudgetTimeout() from None
            raise

    def release(self, amount: int) -> None:
        """Give bytes back (event-loop thread only)."""
        if amount:
            self.used -= amount
            self._grant()

    @asynccontextmanager
    async def hold(self, nbytes: int, timeout: float) -> AsyncIterator[int]:
        amount = await self.acquire(nbytes, timeout)
        try:
            yield amount
        finally:
            self.release(amount)


def request_cost(data_bytes: int, size: tuple[int, int] | None, bytes_per_pixel: int, max_pixels: int | None) -> int:
    """What one request reserves: segment's ``decode`` reservation (encoded bytes + pixels x
    (3 + the format's working bytes per pixel)). Without a readable header the worst allowed
    image (``max_pixels``) is assumed, which the budget then clamps."""
    if size is None:
        pixels = max_pixels if max_pixels is not None else 1 << 40
    else:
        pixels = size[0] * size[1]
    return data_bytes + pixels * (3 + bytes_per_pixel)

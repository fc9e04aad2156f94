"""The one read-ahead pipeline of `unetlite segment` and `unetlite eval`.

Files are decoded in a thread pool ahead of inference. What bounds memory is a byte
budget, not a count of files: a loader states what an item will cost once it has read
the header (``reserve(nbytes)``), and waits until that much is free. Grants are made in
submission order, so the item the consumer waits for is never starved by later ones,
and a partial batch is handed out as soon as the next item waits for memory held by
that batch (otherwise nothing could ever free it).
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from ..engine.runtimes.base import available_cpus

T = TypeVar("T")

DEFAULT_BUDGET_BYTES = 768 * 1024 * 1024   # decoded pixels + output work in flight at once
_POLL_SECONDS = 0.05


def pool_size(cpus: int | None = None) -> int:
    """Reader (and writer) threads: half the usable CPUs, at least 2, at most 8.

    Decoding and PNG encoding release the GIL in OpenCV; inference takes the other half.
    """
    cpus = available_cpus() if cpus is None else cpus
    return max(2, min(8, cpus // 2))


class Closed(Exception):
    """The pipeline was shut down while a loader waited for memory."""


class ByteBudget:
    """A counting semaphore over bytes, granted strictly in ticket order.

    A request larger than the whole capacity is clamped to it: such an item runs alone.
    """

    def __init__(self, capacity: int = DEFAULT_BUDGET_BYTES):
        self.capacity = max(1, int(capacity))
        self.used = 0
        self.peak = 0
        self._next = 0
        self._waiting: int | None = None
        self._closed = False
        self._cond = threading.Condition()

    def acquire(self, ticket: int, nbytes: int) -> int:
        """Wait for this ticket's turn and ``nbytes`` of room; returns the bytes held."""
        amount = min(max(0, int(nbytes)), self.capacity)
        with self._cond:
            while not self._closed and (ticket != self._next or self.used + amount > self.capacity):
                if ticket == self._next:
                    self._waiting = ticket
                self._cond.wait()
            if self._closed:
                raise Closed()
            self._waiting = None
            self._next += 1
            self.used += amount
            self.peak = max(self.peak, self.used)
            self._cond.notify_all()
        return amount

    def release(self, amount: int) -> None:
        if amount:
            with self._cond:
                self.used -= amount
                self._cond.notify_all()

    def starved(self, ticket: int) -> bool:
        """True while ``ticket`` is next in order and waits for room."""
        return self._waiting == ticket

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Loaded(Generic[T]):
    """One item after loading: ``value`` or ``error``, holding ``held`` bytes of the budget."""

    item: T
    value: Any = None
    error: BaseException | None = None
    held: int = 0
    budget: ByteBudget | None = None

    def release(self) -> None:
        """Give the item's memory back (call when its last large array is dropped)."""
        if self.budget is not None and self.held:
            self.budget.release(self.held)
        self.held = 0


Loader = Callable[[T, Callable[[int], None]], Any]


def _run_loader(load: Loader, item: T, ticket: int, budget: ByteBudget) -> Loaded[T]:
    result: Loaded[T] = Loaded(item, budget=budget)
    granted = False

    def reserve(nbytes: int) -> None:
        nonlocal granted
        if not granted:
            granted = True
            result.held = budget.acquire(ticket, nbytes)

    try:
        result.value = load(item, reserve)
    except Closed:
        raise
    except Exception as exc:  # every per-item failure (incl. MemoryError, cv2.error) becomes a row
        # only the exception is kept: its traceback's frames hold the file's bytes, and failed
        # items wait in the batch until enough good ones arrive (40 junk files took 6 GB)
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        result.error = exc
    finally:
        if not granted:  # the ticket must pass even when the loader failed before reserving
            try:
                reserve(0)
            except Closed:
                pass
    if result.error is not None:
        result.value = None
        result.release()
    return result


def read_ahead(items: Iterable[T], load: Loader, batch_size: int, workers: int | None = None,
               budget: ByteBudget | None = None, lookahead: int | None = None) -> Iterator[list[Loaded[T]]]:
    """Yield batches of loaded items, in input order, loading ahead in ``workers`` threads.

    A batch holds up to ``batch_size`` successfully loaded items plus any failed ones
    (``error`` set) met on the way. ``load(item, reserve)`` must call ``reserve(nbytes)``
    before allocating the bulk of its memory; the consumer calls ``Loaded.release()``
    when done with an item (a failed item holds nothing).
    """
    workers = workers or pool_size()
    budget = budget or ByteBudget()
    lookahead = lookahead or max(2 * batch_size, 4) + workers
    source = iter(items)
    pending: deque[tuple[int, Future]] = deque()
    ticket = 0
    pool = ThreadPoolExecutor(workers, thread_name_prefix="read")
    try:
        def refill() -> None:
            nonlocal ticket
            while len(pending) < lookahead:
                item = next(source, _END)
                if item is _END:
                    return
                pending.append((ticket, pool.submit(_run_loader, load, item, ticket, budget)))
                ticket += 1

        refill()
        batch: list[Loaded[T]] = []
        good = 0
        while pending:
            head_ticket, head = pending[0]
            while not head.done():
                wait([head], timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
                if not head.done() and batch and budget.starved(head_ticket):
                    yield batch  # the next item waits for memory this batch holds
                    batch, good = [], 0
            pending.popleft()
            loaded = head.result()
            refill()
            batch.append(loaded)
            good += loaded.error is None
            if good >= batch_size:
                yield batch
                batch, good = [], 0
        if batch:
            yield batch
    finally:
        budget.close()
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for _, fut in pending:  # loaded but never consumed (the consumer stopped early)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().release()


_END = object()

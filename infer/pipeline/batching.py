"""Dynamic batching: one inference thread serving many callers.

Concurrent callers (the HTTP server's requests) each submit one prepared image; the
thread takes whatever is waiting (up to ``batch_size``) and runs it as one batch. A lone
caller never waits for company, so batch-1 latency is unchanged, while under load the
session runs the larger batches it is fastest at and only one ``session.run`` is ever in
flight (no threads fighting over the same cores).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class BatchResult:
    probability: np.ndarray  # HxW float32 at model resolution
    inference_ms: float      # time of the batch's run call
    batch_size: int          # how many images shared that call


class MicroBatcher:
    """Runs ``run(NHWC batch) -> NxHxW`` on its own thread for items submitted from any thread."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], batch_size: int = 4):
        self._run = run
        self._batch_size = max(1, batch_size)
        self._queue: queue.SimpleQueue[tuple[np.ndarray, Future] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="unetlite-inference", daemon=True)
        self._thread.start()

    def submit(self, prepared: np.ndarray) -> Future:
        """Queue one prepared HxWxC image; the future resolves to a BatchResult."""
        future: Future = Future()
        self._queue.put((prepared, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _take(self) -> tuple[list[tuple[np.ndarray, Future]], bool]:
        """Block for one item, then add whatever else is already waiting. Returns (items, stop)."""
        first = self._queue.get()
        if first is None:
            return [], True
        items, stop = [first], False
        while len(items) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            items.append(item)
        return [(x, f) for x, f in items if f.set_running_or_notify_cancel()], stop

    def _loop(self) -> None:
        stop = False
        while not stop:
            items, stop = self._take()
            if not items:
                continue
            try:
                started = time.perf_counter()
                probs = self._run(np.stack([x for x, _ in items]))
                ms = (time.perf_counter() - started) * 1000.0
            except Exception as exc:  # hand the failure to every caller of this batch
                for _, future in items:
                    future.set_exception(exc)
                continue
            for (_, future), prob in zip(items, probs):
                future.set_result(BatchResult(prob, ms, len(items)))

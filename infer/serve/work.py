"""One image request's work, shared by /v1/segment and the v2 infer endpoint.

After admission (``Gate.admit``) and the body: wait for a slot (``Gate.slot``), reserve the
decoded bytes (``budget.AsyncByteBudget``), decode or take the tensor in the thread pool, infer
on the batching thread, finish (encode, or post-process) in the pool. Limits, batching and
memory are therefore the same whichever protocol a request came by.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..engine.runtimes import available_cpus
from ..io.images import ImageReadError, ImageTooLarge
from ..pipeline.batching import BatchResult, MicroBatcher
from ..pipeline.items import Decoded, SegmentSettings, as_decoded, decode as decode_step, working_bytes_per_pixel
from ..pipeline.readahead import DEFAULT_BUDGET_BYTES
from .budget import AsyncByteBudget, BudgetTimeout, request_cost
from .errors import ApiError


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 10_000_000 else f"{pixels / 1e6:.1f} MP"


def too_many_pixels(height: int, width: int, max_pixels: int, what: str = "image") -> ApiError:
    return ApiError(422, f"{what} is {width}x{height} = {megapixels(width * height)}, over the "
                         f"{megapixels(max_pixels)} limit (--max-pixels)", reason="too_many_pixels",
                    width=width, height=height, pixels=width * height, max_pixels=max_pixels)


def over_budget(height: int, width: int, cost: int, capacity: int, fmt: str) -> ApiError:
    return ApiError(422, f"a {width}x{height} image ({megapixels(width * height)}) as {fmt} needs {cost / 1e9:.2f} GB "
                         f"of working memory, more than this server's {capacity / 1e9:.2f} GB budget "
                         f"(--memory-budget); ask for a smaller image or a lighter format (mask)",
                    reason="over_memory_budget", width=width, height=height, pixels=width * height,
                    needed_bytes=cost, budget_bytes=capacity, format=fmt)


def _no_reservation(_: int) -> None:
    """The request reserved its bytes on the event loop before decoding (``AsyncByteBudget``)."""


def decode_bytes(segmenter, settings: SegmentSettings, data: bytes, name: str,
                 header: Optional[tuple[int, int]]) -> Decoded:
    """Pool thread: bytes -> ``Decoded`` with the pipeline's decode step; errors as answers
    (422 over --max-pixels, 400 undecodable, 400 when the decoded size is not the header's)."""
    try:
        decoded = decode_step(segmenter, settings, data, name, _no_reservation)
    except ImageTooLarge as exc:
        if header is not None and settings.max_pixels is not None:
            raise too_many_pixels(*header, settings.max_pixels) from None
        raise ApiError(422, str(exc), reason="too_many_pixels", max_pixels=settings.max_pixels) from None
    except ImageReadError as exc:
        raise ApiError(400, str(exc), reason="not_an_image") from None
    height, width = decoded.size
    if settings.max_pixels is not None and height * width > settings.max_pixels:
        raise too_many_pixels(height, width, settings.max_pixels)
    if header is not None and tuple(header) != (height, width):  # e.g. a TIFF with two sizes in its tags
        raise ApiError(400, f"{name}: the header says {header[1]}x{header[0]} but the image decodes as "
                            f"{width}x{height}", reason="not_an_image")
    return decoded


def tensor_input(segmenter, settings: SegmentSettings, rgb: np.ndarray) -> Decoded:
    """Pool thread: an HxWx3 uint8 RGB tensor -> ``Decoded`` (the same prepare step as decoding)."""
    return as_decoded(segmenter, rgb, rgb.shape[:2], settings)


@dataclass
class Outcome:
    value: Any               # what ``finish`` returned
    batch: BatchResult       # inference time and batch size
    size: tuple[int, int]    # (height, width) of the answer


class ImageWork:
    """The pool, the batchers, the budget: one per app."""

    def __init__(self, segmenter, gate, *, batch_size: int, workers: int = 0, queue_wait: float = 10.0,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES, metrics=None):
        self.segmenter, self.gate, self.queue_wait, self.metrics = segmenter, gate, queue_wait, metrics
        self.pool = ThreadPoolExecutor(workers or available_cpus(), thread_name_prefix="unetlite-serve")
        plain = segmenter.run
        tta = lambda batch: segmenter.run(batch, tta=True)  # noqa: E731  a batch is all TTA or none
        if metrics is not None:
            plain, tta = metrics.timed_run(plain), metrics.timed_run(tta)
        self.batchers = {False: MicroBatcher(plain, batch_size), True: MicroBatcher(tta, batch_size)}
        self.budget = AsyncByteBudget(budget_bytes)

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
        self.pool.shutdown(wait=True)

    def _rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejections.labels(reason).inc()

    async def run(self, settings: SegmentSettings, finish: Callable[[Decoded, BatchResult], Any], *,
                  data: bytes | None = None, name: str = "request body", rgb: np.ndarray | None = None,
                  extra_bytes_per_pixel: int = 0) -> Outcome:
        """Slot, budget, decode (``data``) or take (``rgb``), infer, ``finish`` in the pool.
        ``extra_bytes_per_pixel``: what ``finish`` allocates beyond the format's working bytes."""
        from ..io.images import image_size

        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        if rgb is not None:
            header: Optional[tuple[int, int]] = rgb.shape[:2]
            cost = rgb.nbytes + header[0] * header[1] * (working_bytes_per_pixel(settings) + extra_bytes_per_pixel)
        else:
            assert data is not None
            header = image_size(data)
            if header is not None and settings.max_pixels is not None and header[0] * header[1] > settings.max_pixels:
                raise too_many_pixels(*header, settings.max_pixels)  # before any wait: no memory needed to say so
            cost = request_cost(len(data), header, working_bytes_per_pixel(settings) + extra_bytes_per_pixel,
                                settings.max_pixels)
        if header is not None and cost > self.budget.capacity:  # would not fit even alone: refuse, never clamp
            raise over_budget(header[0], header[1], cost, self.budget.capacity, settings.fmt)
        async with self.gate.slot():  # a 503 here is counted by the gate
            left = max(0.0, self.queue_wait - (time.perf_counter() - started))
            try:
                held = await self.budget.acquire(cost, left)
            except BudgetTimeout:
                self._rejected("memory")
                raise ApiError(503, f"server busy: {self.budget.used} of {self.budget.capacity} bytes of decoded "
                                    f"images in use and {cost} more needed; none freed within "
                                    f"{self.queue_wait:g} s (--queue-wait); retry later",
                               {"Retry-After": "1"}, reason="memory", needed_bytes=cost,
                               budget_bytes=self.budget.capacity) from None
            try:
                waited = time.perf_counter() - started
                if rgb is not None:
                    decoded = await loop.run_in_executor(self.pool, tensor_input, self.segmenter, settings, rgb)
                else:
                    decoded = await loop.run_in_executor(self.pool, decode_bytes, self.segmenter, settings, data,
                                                         name, header)
                    if header is None:  # no header the server reads: held the whole budget, check now
                        height, width = decoded.size
                        actual = request_cost(len(data), decoded.size,
                                              working_bytes_per_pixel(settings) + extra_bytes_per_pixel, None)
                        if actual > self.budget.capacity:
                            raise over_budget(height, width, actual, self.budget.capacity, settings.fmt)
                submitted = time.perf_counter()
                result = await asyncio.wrap_future(self.batchers[settings.tta].submit(decoded.model_input))
                decoded.model_input = None
                if self.metrics is not None:
                    in_batcher = time.perf_counter() - submitted - result.inference_ms / 1000.0
                    self.metrics.queue_wait.observe(waited + max(0.0, in_batcher))
                value = await loop.run_in_executor(self.pool, finish, decoded, result)
                return Outcome(value, result, decoded.size)
            finally:
                self.budget.release(held)

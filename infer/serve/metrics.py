"""Prometheus metrics of `unetlite serve` (``GET /metrics``, text format, prometheus-client).

Each app has its own ``CollectorRegistry``, so several apps in one process (tests) never clash
and nothing of the process-global registry leaks in. Names and meanings:

- ``unetlite_requests_total{endpoint, method, status}``: HTTP answers, by route template
  (``/v1/segment``, ``/v2/models/{model}/infer``, ...; unknown paths are ``other``).
- ``unetlite_request_duration_seconds{endpoint}``: whole request, first byte in to last byte out.
- ``unetlite_queue_wait_seconds``: admitted image requests waiting for a slot, for decoded-bytes
  budget and for their inference batch to start.
- ``unetlite_inference_seconds``: one model call (a batch).
- ``unetlite_batch_size``: images per model call.
- ``unetlite_requests_in_flight``: HTTP requests being handled now.
- ``unetlite_requests_queued``: admitted image requests not yet holding a slot.
- ``unetlite_requests_running``: image requests holding a slot (decode, inference, encode).
- ``unetlite_admission_rejections_total{reason}``: 503s from admission: ``queue_full``,
  ``queue_wait``, ``memory`` (decoded-bytes budget), ``draining`` (shutting down).
- ``unetlite_decode_budget_bytes`` / ``unetlite_decode_budget_used_bytes``: the decoded-bytes
  budget and what requests hold of it.
- ``unetlite_model_info{runtime, precision, model, ...} 1``: what is served.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServeMetrics:
    """The collectors of one app; ``render()`` is the /metrics body."""

    def __init__(self, segmenter, admitted: Callable[[], int], running: Callable[[], int],
                 inflight: Callable[[], int], budget_capacity: int, budget_used: Callable[[], int]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("unetlite_requests", "HTTP requests answered, by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=registry)
        self.duration = Histogram("unetlite_request_duration_seconds", "whole HTTP request time",
                                  ["endpoint"], buckets=_SECONDS, registry=registry)
        self.queue_wait = Histogram("unetlite_queue_wait_seconds", "time an admitted image request waited "
                                    "(slot, decoded-bytes budget, inference batch)", buckets=_SECONDS,
                                    registry=registry)
        self.inference = Histogram("unetlite_inference_seconds", "time of one model call (a batch)",
                                   buckets=_SECONDS, registry=registry)
        self.batch_size = Histogram("unetlite_batch_size", "images per model call", buckets=_BATCHES,
                                    registry=registry)
        self.rejections = Counter("unetlite_admission_rejections", "503 answers from admission, by reason",
                                  ["reason"], registry=registry)
        for reason in ("queue_full", "queue_wait", "memory", "draining"):
            self.rejections.labels(reason)  # present at 0 from the start
        Gauge("unetlite_requests_in_flight", "HTTP requests being handled", registry=registry) \
            .set_function(inflight)
        Gauge("unetlite_requests_queued", "admitted image requests not yet holding a slot", registry=registry) \
            .set_function(lambda: max(0, admitted() - running()))
        Gauge("unetlite_requests_running", "image requests holding a slot", registry=registry).set_function(running)
        Gauge("unetlite_decode_budget_bytes", "decoded-bytes budget of the server", registry=registry) \
            .set(budget_capacity)
        Gauge("unetlite_decode_budget_used_bytes", "decoded-bytes budget held by requests", registry=registry) \
            .set_function(budget_used)
        Info("unetlite_model", "the model served and how it runs", registry=registry).info({
            "runtime": str(segmenter.provider), "precision": str(segmenter.precision),
            "model": Path(str(segmenter.path)).name, "runtime_version": str(getattr(segmenter.runner, "version", "")),
        })

    def timed_run(self, run: Callable) -> Callable:
        """``run`` (the batcher's model call) observed: inference time and batch size."""
        def observed(batch):
            started = time.perf_counter()
            try:
                return run(batch)
            finally:
                self.inference.observe(time.perf_counter() - started)
                self.batch_size.observe(len(batch))
        return observed

    def answered(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.duration.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)

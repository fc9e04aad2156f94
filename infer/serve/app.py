"""The HTTP service behind `unetlite serve` (FastAPI): endpoints, limits, errors, request log.

Every answer that is not a picture (or the page) is JSON; errors are ``{"error": "...", "reason":
"...", ...}`` with the status saying what kind (400 not an image, 401 token, 408 slow body, 413
too big, 422 too many pixels or bad parameter, 503 busy or shutting down; ``serve.errors``). Limits are checked before the work
they protect: Content-Length and the streamed byte count before buffering, the number of
admitted requests before reading any body, the header's pixel count before decoding, and the
decoded bytes the image will need against the server's budget (``serve.budget``) before
decoding starts.
Decoding and encoding run in a thread pool sized to the cores and inference on one
batching thread (``batching.MicroBatcher``), so the event loop, and ``/healthz``, never wait
for a model (``serve.work``). Besides /v1: the page at ``/`` and offline ``/docs``
(``serve.web``), ``/metrics`` (``serve.metrics``) and the Open Inference Protocol under ``/v2``
(``serve.v2``). Imported only by ``serve.server``: FastAPI is an optional extra.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Literal, Optional

import cv2
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.modelinfo import InfoError, inspect
from ..io.formats import FORMATS
from ..pipeline.items import Decoded, SegmentSettings, encode_output
from ..pipeline.readahead import DEFAULT_BUDGET_BYTES
from .errors import ApiError, error_body, error_response
from .work import ImageWork

log = logging.getLogger("unetlite.serve")

Format = Literal[tuple(FORMATS)]  # type: ignore[valid-type]  # the format registry, listed in the OpenAPI docs


@dataclass(frozen=True)
class ServeConfig:
    threshold: float                 # default threshold (the model's unless --threshold)
    max_bytes: int = 20_000_000      # request body limit
    max_pixels: int = 100_000_000    # decoded image limit (imageio.DEFAULT_MAX_PIXELS)
    max_concurrency: int = 4         # requests decoding / inferring / encoding at once
    max_queue: int = 16              # more requests admitted (reading body, waiting for a slot)
    queue_wait: float = 10.0         # seconds an admitted request may wait for a slot
    read_timeout: float = 30.0       # seconds to receive a request body
    batch_size: int = 4              # images per inference call, at most
    workers: int = 0                 # decode/encode thread pool (0: the CPUs this process may use)
    token: Optional[str] = None      # bearer token required on /v1/*, /v2/models/*, /metrics when set
    budget_bytes: int = DEFAULT_BUDGET_BYTES  # decoded images + output work in flight (segment's read-ahead budget)


@dataclass
class ServerState:
    """Shared between the app and the uvicorn server (signal handling)."""
    draining: bool = False   # SIGTERM seen: new requests get 503, running ones finish
    inflight: int = 0        # HTTP requests being handled
    served: int = 0          # HTTP requests answered
    metrics: Any = None      # the app's ServeMetrics (None without prometheus-client)


def _error(status: int, message: str, headers: dict[str, str] | None = None, reason: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, reason), status_code=status, headers=headers)


class Gate:
    """Admission control with a bounded queue.

    At most ``running`` requests hold a slot (decode, inference, encode); at most ``waiting``
    more are admitted (reading their body or waiting for a slot, each for ``wait_s`` at most).
    Anything beyond gets 503 at once, so memory is bounded by the limits, not by the load.
    """

    def __init__(self, running: int, waiting: int, wait_s: float):
        self.limit_running, self.limit_admitted, self.wait_s = running, running + waiting, wait_s
        self.admitted = 0
        self.running = 0
        self.rejected = lambda reason: None   # metrics hook: called with "queue_full" / "queue_wait"
        self._semaphore: asyncio.Semaphore | None = None  # created inside the server's event loop

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self.admitted >= self.limit_admitted:
            self.rejected("queue_full")
            raise ApiError(503, f"server busy: {self.admitted} requests already admitted "
                                f"(--max-concurrency {self.limit_running} + --max-queue "
                                f"{self.limit_admitted - self.limit_running}); retry later", {"Retry-After": "1"},
                           reason="busy")
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit_running)
        sem = self._semaphore
        if sem.locked():
            try:
                await asyncio.wait_for(sem.acquire(), self.wait_s)
            except asyncio.TimeoutError:
                self.rejected("queue_wait")
                raise ApiError(503, f"server busy: {self.running} requests running and none finished within "
                                    f"{self.wait_s:g} s (--queue-wait); retry later", {"Retry-After": "1"},
                               reason="busy") from None
        else:
            await sem.acquire()  # free: returns without suspending
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            sem.release()


def _printable(name: str, limit: int = 80) -> str:
    """A client-supplied file name made safe for messages and logs."""
    return "".join(c for c in name if c.isprintable())[:limit]


async def _read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``max_bytes``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, f"request body is {int(length)} bytes; the limit is {max_bytes} (--max-bytes)",
                       {"Connection": "close"}, reason="body_too_large", bytes=int(length), max_bytes=max_bytes)

    async def collect() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise ApiError(413, f"request body exceeds the limit of {max_bytes} bytes (--max-bytes)",
                               {"Connection": "close"}, reason="body_too_large", max_bytes=max_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"request body not received within {timeout:g} s", {"Connection": "close"},
                       reason="body_timeout", seconds=timeout) from None


async def _image_bytes(request: Request, config: ServeConfig) -> tuple[bytes, str]:
    """(encoded image, name for messages) from a raw body or a multipart field ``image``."""
    body = await _read_body(request, config.max_bytes, config.read_timeout)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        if not body:
            raise ApiError(400, "empty request body: send the image as the body or as a multipart file field 'image'",
                           reason="not_an_image")
        return body, "request body"

    async def replay() -> dict[str, Any]:  # the body is already read (and bounded): parse it from memory
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "multipart body has no file field 'image'", reason="not_an_image")
        name = _printable(upload.filename or "") or "field 'image'"
        return await upload.read(), name
    finally:
        await form.close()


def _encode(decoded: Decoded, probability: np.ndarray, settings: SegmentSettings, threshold: float,
            as_json: bool) -> bytes:
    """Pool thread: segment's output bytes (``segment.encode_output``); for JSON that is the mask
    PNG, and the foreground fraction is measured on the very mask sent."""
    picture = encode_output(decoded, probability, settings, threshold)
    if not as_json:
        return picture
    mask = cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_GRAYSCALE)
    height, width = decoded.size
    return json.dumps({"width": width, "height": height, "foreground_fraction": np.count_nonzero(mask) / mask.size,
                       "mask_png_base64": base64.b64encode(picture).decode("ascii")}).encode()


def _model_description(segmenter, threshold: float) -> dict[str, Any]:
    """What `unetlite info --json` shows, plus what this server runs it with."""
    try:
        described: dict[str, Any] = asdict(inspect(segmenter.path))
    except InfoError as exc:  # loaded by onnxruntime, yet not describable: say so, keep serving
        described = {"path": str(segmenter.path), "unavailable": [str(exc)]}
    return {**described, "provider": segmenter.provider, "threshold": threshold}


_SEGMENT_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                       "properties": {"image": {"type": "string", "format": "binary"}}}},
}}}
_SEGMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the picture at the input's size (PNG; overlay and side-by-side JPEG), or JSON with "
                         "Accept: application/json",
          "content": {"image/png": {}, "image/jpeg": {}, "application/json": {"example": {
              "width": 500, "height": 375, "foreground_fraction": 0.31, "mask_png_base64": "iVBORw0..."}}}},
    **{code: {"description": text, "content": {"application/json": {"example": {"error": "..."}}}}
       for code, text in ((400, "not an image, or undecodable"), (401, "missing or wrong token"),
                          (408, "body not received in time"), (413, "body over --max-bytes"),
                          (422, "image over --max-pixels, or a bad parameter"),
                          (503, "busy (queue wait ran out) or shutting down"))},
}


def _metrics(segmenter, gate: Gate, state: "ServerState", budget_bytes: int, budget_used):
    """The app's Prometheus collectors, or None without prometheus-client (``/metrics`` then says
    how to install it)."""
    from .metrics import ServeMetrics
    try:
        return ServeMetrics(segmenter, admitted=lambda: gate.admitted, running=lambda: gate.running,
                            inflight=lambda: state.inflight, budget_capacity=budget_bytes, budget_used=budget_used)
    except ImportError:  # prometheus-client is part of [serve]; without it the rest still serves
        log.warning("no /metrics: prometheus-client is not installed (install with: pip install '.[serve]')")
        return None


def create_fastapi(segmenter, config: ServeConfig, gate: Gate, state: "ServerState | None" = None) -> FastAPI:
    state = state or ServerState()
    metrics = _metrics(segmenter, gate, state, config.budget_bytes, lambda: work.budget.used)
    work = ImageWork(segmenter, gate, batch_size=config.batch_size, workers=config.workers,
                     queue_wait=config.queue_wait, budget_bytes=config.budget_bytes, metrics=metrics)
    if metrics is not None:
        gate.rejected = lambda reason: metrics.rejections.labels(reason).inc()
    state.metrics = metrics
    model_description = _model_description(segmenter, config.threshold)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        work.close()

    app = FastAPI(title="unetlite", version="0.1.0", lifespan=lifespan, redoc_url=None, docs_url=None,
                  description="U-Net segmentation as an HTTP service: a page at /, the API below, the Open "
                              "Inference Protocol (v2) and Prometheus /metrics. Errors are JSON {\"error\": \"...\", "
                              "\"reason\": \"...\"}. When the server has a token, /v1/*, /v2/models/* and /metrics "
                              "need 'Authorization: Bearer TOKEN'.")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}), reason)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
                 for e in exc.errors()]
        return _error(422, "; ".join(parts), reason="bad_parameter")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:  # logged by the gatekeeper
        return _error(500, "internal server error (see the server log)")

    def get(path: str, **kwargs):
        """GET in the docs, HEAD answered too (probes use it; not listed)."""
        def register(fn):
            app.head(path, include_in_schema=False)(fn)
            return app.get(path, **kwargs)(fn)
        return register

    @get("/healthz", tags=["v1"], summary="liveness: 200 while the model is loaded; 503 once shutting down")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "provider": segmenter.provider, "admitted": gate.admitted, "running": gate.running}

    @get("/v1/model", tags=["v1"], summary="the model's contract, inputs/outputs, opset, size (as `unetlite info`)")
    async def model() -> dict[str, Any]:
        return model_description

    @get("/metrics", tags=["operations"], summary="Prometheus metrics (text format)", response_class=Response,
         responses={200: {"content": {"text/plain": {}}}})
    async def metrics_text() -> Response:
        if metrics is None:
            from ..extras import install_hint
            raise ApiError(501, f"metrics need prometheus-client (not installed); install with: "
                                f"{install_hint('serve')}", reason="not_installed")
        from .metrics import CONTENT_TYPE
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/segment", tags=["v1"], summary="segment one image", openapi_extra=_SEGMENT_BODY, responses=_SEGMENT_RESPONSES,
              response_class=Response)
    async def segment(request: Request,
                      fmt: Format = Query("mask", alias="format", description="what to answer"),
                      threshold: Optional[float] = Query(None, ge=0.0, le=1.0,
                                                         description="probability threshold (default: the model's)"),
                      clean: bool = Query(False, description="keep the main foreground regions, fill their holes "
                                                             "(as segment --clean)"),
                      tta: bool = Query(False, description="average with the mirrored image, 2x the work "
                                                           "(as segment --tta)"),
                      edge: str = Query("hard", pattern="^(soft|hard)$",
                                        description="soft: edge-aware alpha for cutout/composite/overlay (as segment "
                                                    "--edge soft); hard (default): binary mask"),
                      background: Optional[str] = Query(None, max_length=40,
                                                        description="with format=composite: blur[:STRENGTH] or R,G,B "
                                                                    "(as segment --background; no server files)")
                      ) -> Response:
        threshold = config.threshold if threshold is None else threshold
        as_json = "application/json" in request.headers.get("accept", "").lower()
        spec = _background(background, fmt, edge)
        settings = SegmentSettings("mask" if as_json else fmt, threshold=threshold, clean=clean, tta=tta,
                                   max_pixels=config.max_pixels, background=None if as_json else spec,
                                   edge=edge)  # JSON carries segment's mask PNG
        async with gate.admit():
            data, name = await _image_bytes(request, config)
            outcome = await work.run(settings, lambda decoded, result: _encode(
                decoded, result.probability, settings, threshold, as_json), data=data, name=name)
        body, result = outcome.value, outcome.batch
        headers = {"X-Unetlite-Provider": segmenter.provider, "X-Unetlite-Precision": segmenter.precision,
                   "X-Unetlite-Inference-Ms": f"{result.inference_ms:.2f}",
                   "X-Unetlite-Batch-Size": str(result.batch_size), "X-Unetlite-Threshold": f"{threshold:g}"}
        media = "application/json" if as_json else FORMATS[fmt].media_type
        return Response(body, media_type=media, headers=headers)

    from .v2 import add_v2_routes
    from .web import add_page_and_docs

    add_v2_routes(app, segmenter=segmenter, work=work, gate=gate,
                  read_body=lambda request: _read_body(request, config.max_bytes, config.read_timeout),
                  default_threshold=config.threshold, max_pixels=config.max_pixels,
                  ready=lambda: not state.draining)
    add_page_and_docs(app)
    return app


_BACKGROUND_TEXT = re.compile(r"^(blur(:[0-9.]+)?|[0-9]{1,3},[0-9]{1,3},[0-9]{1,3})$", re.IGNORECASE)


def _background(text: str | None, fmt: str, edge: str):
    """segment's --background for a request: blur or a colour only (a path would read the server's files)."""
    from ..pipeline.backgrounds import BackgroundError, check_photo_settings, parse_background
    if text is None:
        return None
    if not _BACKGROUND_TEXT.match(text.strip()):
        raise ApiError(422, f"background {text[:40]!r}: expected blur[:STRENGTH] or R,G,B", reason="bad_parameter")
    try:
        spec = parse_background(text)
        check_photo_settings(fmt, spec, edge)
    except BackgroundError as exc:
        raise ApiError(422, str(exc), reason="bad_parameter") from None
    return spec


# Paths the token guards: the work and what it reveals. Open: liveness/readiness probes (/healthz,
# /v2/health/*, /v2), the page and its assets, the docs: none of them touch an image or the model.
PROTECTED = ("/v1/", "/v2/models", "/metrics")


class Gatekeeper:
    """Outermost ASGI layer: token, shutdown refusal, in-flight count, metrics and the one log line
    per request.

    It wraps the whole FastAPI app, so an unexpected exception (already answered 500 as JSON by
    FastAPI) is logged here once, with its traceback in the server log only.
    """

    def __init__(self, app: FastAPI, config: ServeConfig, state: ServerState):
        self.app, self.config, self.state = app, config, state

    def _refusal(self, scope: dict) -> tuple[int, str, dict[str, str], str] | None:
        if self.state.draining:
            return 503, "server is shutting down", {"Connection": "close", "Retry-After": "1"}, "shutting_down"
        if self.config.token and scope["path"].startswith(PROTECTED):
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"")
            expected = b"Bearer " + self.config.token.encode()
            if not hmac.compare_digest(given, expected):
                reason = "wrong token" if given else "missing token (send 'Authorization: Bearer TOKEN')"
                return 401, reason, {"WWW-Authenticate": "Bearer"}, "token"
        return None

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal:
                if refusal[3] == "shutting_down" and self.state.metrics is not None:
                    self.state.metrics.rejections.labels("draining").inc()
                await _send_json(send_and_note, *refusal)
            else:
                self.state.inflight += 1
                try:
                    await self.app(scope, receive, send_and_note)
                finally:
                    self.state.inflight -= 1
        except Exception:
            log.exception("unexpected error handling %s %s", scope["method"], scope["path"])
            if not status:
                await _send_json(send_and_note, 500, "internal server error (see the server log)", {})
        finally:
            self.state.served += 1
            client = scope.get("client") or ("-", 0)
            path = scope.get("raw_path", b"").decode("latin-1")[:200] or scope["path"]
            seconds = time.perf_counter() - started
            log.info("%s %s %s %d %.1f ms", client[0], scope["method"], path, status, seconds * 1000.0)
            if self.state.metrics is not None:
                self.state.metrics.answered(self._endpoint(scope), scope["method"], status, seconds)

    def _endpoint(self, scope: dict) -> str:
        """The route template of the request (a bounded label), ``other`` for unknown paths."""
        route = scope.get("route")
        if route is None:  # refused before routing (token, draining): find the route it was for
            from starlette.routing import Match
            route = next((r for r in self.app.router.routes if r.matches(dict(scope))[0] == Match.FULL), None)
        path = getattr(route, "path", None)
        return "other" if path is None else (path or "/")


async def _send_json(send, status: int, message: str, headers: dict[str, str], reason: str | None = None) -> None:
    body = json.dumps(error_body(message, reason)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def create_app(segmenter, config: ServeConfig, state: ServerState | None = None) -> Gatekeeper:
    """The ASGI application for one loaded Segmenter."""
    state = state or ServerState()
    gate = Gate(config.max_concurrency, config.max_queue, config.queue_wait)
    return Gatekeeper(create_fastapi(segmenter, config, gate, state), config, state)

"""The HTTP service behind `unetlite serve` (FastAPI): endpoints, limits, errors, request log.

Every answer that is not a picture is JSON; errors are ``{"error": "..."}`` with the status
saying what kind (400 not an image, 401 token, 408 slow body, 413 too big, 422 too many
pixels or bad parameter, 503 busy or shutting down). Limits are checked before the work
they protect: Content-Length and the streamed byte count before buffering, the number of
admitted requests before reading any body, the header's pixel count before decoding.
Decoding and encoding run in a thread pool sized to the cores and inference on one
batching thread (``batching.MicroBatcher``), so the event loop, and ``/healthz``, never wait
for a model. Imported only by ``serve.run``: FastAPI is an optional extra.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
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

from .backends import available_cpus
from .batching import MicroBatcher
from .imageio import ImageReadError, ImageTooLarge
from .info import InfoError, inspect
from .outputs import FORMATS
from .segment import Decoded, SegmentSettings, encode_output, image_decoder

log = logging.getLogger("unetlite.serve")

Format = Literal[tuple(FORMATS)]  # type: ignore[valid-type]  # segment's formats, listed in the OpenAPI docs
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg"}


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
    token: Optional[str] = None      # bearer token required on /v1/* when set


@dataclass
class ServerState:
    """Shared between the app and the uvicorn server (signal handling)."""
    draining: bool = False   # SIGTERM seen: new requests get 503, running ones finish
    inflight: int = 0        # HTTP requests being handled
    served: int = 0          # HTTP requests answered


class ApiError(Exception):
    """An error answer: status, one-line message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


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
        self._semaphore: asyncio.Semaphore | None = None  # created inside the server's event loop

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self.admitted >= self.limit_admitted:
            raise ApiError(503, f"server busy: {self.admitted} requests already admitted "
                                f"(--max-concurrency {self.limit_running} + --max-queue "
                                f"{self.limit_admitted - self.limit_running}); retry later", {"Retry-After": "1"})
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
                raise ApiError(503, f"server busy: {self.running} requests running and none finished within "
                                    f"{self.wait_s:g} s (--queue-wait); retry later", {"Retry-After": "1"}) from None
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
                       {"Connection": "close"})

    async def collect() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise ApiError(413, f"request body exceeds the limit of {max_bytes} bytes (--max-bytes)",
                               {"Connection": "close"})
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"request body not received within {timeout:g} s", {"Connection": "close"}) from None


async def _image_bytes(request: Request, config: ServeConfig) -> tuple[bytes, str]:
    """(encoded image, name for messages) from a raw body or a multipart field ``image``."""
    body = await _read_body(request, config.max_bytes, config.read_timeout)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        if not body:
            raise ApiError(400, "empty request body: send the image as the body or as a multipart file field 'image'")
        return body, "request body"

    async def replay() -> dict[str, Any]:  # the body is already read (and bounded): parse it from memory
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "multipart body has no file field 'image'")
        name = _printable(upload.filename or "") or "field 'image'"
        return await upload.read(), name
    finally:
        await form.close()


def _no_reservation(_: int) -> None:
    """Serve bounds memory by its admission limits, not by segment's read-ahead byte budget."""


def _decode(decode, data: bytes, name: str) -> Decoded:
    """Pool thread: bytes -> ``Decoded`` with segment's decoder (``segment.image_decoder``), its
    errors as answers: 422 over --max-pixels, 400 anything else undecodable."""
    try:
        return decode(data, name, _no_reservation)
    except ImageTooLarge as exc:
        raise ApiError(422, str(exc)) from None
    except ImageReadError as exc:
        raise ApiError(400, str(exc)) from None


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


def create_fastapi(segmenter, config: ServeConfig, gate: Gate) -> FastAPI:
    pool = ThreadPoolExecutor(config.workers or available_cpus(), thread_name_prefix="unetlite-serve")
    batcher = MicroBatcher(segmenter.run, config.batch_size)
    model_description = _model_description(segmenter, config.threshold)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()
        pool.shutdown(wait=True)

    app = FastAPI(title="unetlite", version="0.1.0", lifespan=lifespan, redoc_url=None,
                  description="U-Net segmentation as an HTTP service. Errors are JSON {\"error\": \"...\"}. "
                              "When the server has a token, /v1/* needs 'Authorization: Bearer TOKEN'.")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
                 for e in exc.errors()]
        return _error(422, "; ".join(parts))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:  # logged by the gatekeeper
        return _error(500, "internal server error (see the server log)")

    @app.get("/healthz", summary="liveness: 200 while the model is loaded; 503 once shutting down")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "provider": segmenter.provider, "admitted": gate.admitted, "running": gate.running}

    @app.get("/v1/model", summary="the model's contract, inputs/outputs, opset, size (as `unetlite info`)")
    async def model() -> dict[str, Any]:
        return model_description

    @app.post("/v1/segment", summary="segment one image", openapi_extra=_SEGMENT_BODY, responses=_SEGMENT_RESPONSES,
              response_class=Response)
    async def segment(request: Request,
                      fmt: Format = Query("mask", alias="format", description="what to answer"),
                      threshold: Optional[float] = Query(None, ge=0.0, le=1.0,
                                                         description="probability threshold (default: the model's)"),
                      clean: bool = Query(False, description="keep the main foreground regions, fill their holes "
                                                             "(as segment --clean)")
                      ) -> Response:
        loop = asyncio.get_running_loop()
        threshold = config.threshold if threshold is None else threshold
        as_json = "application/json" in request.headers.get("accept", "").lower()
        settings = SegmentSettings("mask" if as_json else fmt, threshold=threshold, clean=clean,
                                   max_pixels=config.max_pixels)  # JSON carries segment's mask PNG
        async with gate.admit():
            data, name = await _image_bytes(request, config)
            async with gate.slot():
                decoded = await loop.run_in_executor(pool, _decode, image_decoder(segmenter, settings), data, name)
                del data
                result = await asyncio.wrap_future(batcher.submit(decoded.model_input))
                body = await loop.run_in_executor(pool, _encode, decoded, result.probability, settings, threshold,
                                                 as_json)
        headers = {"X-Unetlite-Provider": segmenter.provider, "X-Unetlite-Precision": segmenter.precision,
                   "X-Unetlite-Inference-Ms": f"{result.inference_ms:.2f}",
                   "X-Unetlite-Batch-Size": str(result.batch_size), "X-Unetlite-Threshold": f"{threshold:g}"}
        media = "application/json" if as_json else MEDIA_TYPES[FORMATS[fmt]]
        return Response(body, media_type=media, headers=headers)

    return app


class Gatekeeper:
    """Outermost ASGI layer: token, shutdown refusal, in-flight count and the one log line per request.

    It wraps the whole FastAPI app, so an unexpected exception (already answered 500 as JSON by
    FastAPI) is logged here once, with its traceback in the server log only.
    """

    def __init__(self, app: FastAPI, config: ServeConfig, state: ServerState):
        self.app, self.config, self.state = app, config, state

    def _refusal(self, scope: dict) -> tuple[int, str, dict[str, str]] | None:
        if self.state.draining:
            return 503, "server is shutting down", {"Connection": "close", "Retry-After": "1"}
        if self.config.token and scope["path"].startswith("/v1/"):
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"")
            expected = b"Bearer " + self.config.token.encode()
            if not hmac.compare_digest(given, expected):
                reason = "wrong token" if given else "missing token (send 'Authorization: Bearer TOKEN')"
                return 401, reason, {"WWW-Authenticate": "Bearer"}
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
            log.info("%s %s %s %d %.1f ms", client[0], scope["method"], path, status,
                     (time.perf_counter() - started) * 1000.0)


async def _send_json(send, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def create_app(segmenter, config: ServeConfig, state: ServerState | None = None) -> Gatekeeper:
    """The ASGI application for one loaded Segmenter."""
    gate = Gate(config.max_concurrency, config.max_queue, config.queue_wait)
    return Gatekeeper(create_fastapi(segmenter, config, gate), config, state or ServerState())

"""The Open Inference Protocol (KServe v2, REST) of `unetlite serve`, for Triton/KServe clients.

Endpoints: ``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/unetlite`` (model metadata), ``/v2/models/unetlite/ready``, ``POST
/v2/models/unetlite/infer`` (also under ``/versions/1``). HEAD answers wherever GET does.

One image per request, either input (exactly one):

- ``image``: UINT8 ``[H, W, 3]`` RGB (``[1, H, W, 3]`` too);
- ``image_bytes``: BYTES ``[1]``: an encoded picture (JPEG, PNG, ...), decoded as /v1 does,
  EXIF orientation included. In JSON (not binary) the element is the file in base64.

Outputs (all unless the request names some): ``mask`` UINT8 ``[H, W]`` with 0/255, the very
pixels of /v1/segment's mask PNG; ``probability`` FP32 ``[H, W]`` in [0, 1] at the image's size.
Request parameters: ``threshold`` (0-1; default the model's), ``clean`` and ``tta`` (booleans).
The binary tensor extension is supported both ways (``Inference-Header-Content-Length``), as
tritonclient uses by default. JSON is for small tensors: a request's JSON part over 1 MB is
refused (413), and so are JSON outputs over 250 000 values (ask for binary data). The answer is
built in the pool while the request holds its share of the decoded-bytes budget, which counts
the output tensors and the response body (twice their bytes) on top of the mask's working bytes.

Admission, the slot and queue limits, the decoded-bytes budget, batching with /v1 requests,
--max-bytes, --max-pixels and the token are those of /v1 (``work.ImageWork``).
"""
from __future__ import annotations

import base64
import json
import struct
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..pipeline.items import SegmentSettings, post_process
from .errors import ApiError
from .work import ImageWork, too_many_pixels

MODEL = "unetlite"
VERSION = "1"
INPUTS = ({"name": "image", "datatype": "UINT8", "shape": [-1, -1, 3]},
          {"name": "image_bytes", "datatype": "BYTES", "shape": [1]})
OUTPUTS = ({"name": "mask", "datatype": "UINT8", "shape": [-1, -1]},
           {"name": "probability", "datatype": "FP32", "shape": [-1, -1]})
JSON_OUTPUT_LIMIT = 250_000     # values in a JSON (non-binary) output (500x500)
OUTPUT_BYTES = {"mask": 1, "probability": 4}  # per pixel
JSON_HEAD_LIMIT = 1_000_000     # bytes of a request's JSON part: big tensors come as binary data
HEADER = "inference-header-content-length"

ReadBody = Callable[[Request], Awaitable[bytes]]


def _bad(message: str) -> ApiError:
    return ApiError(400, message, reason="bad_request")


def _unknown_model(name: str) -> ApiError:
    return ApiError(404, f"unknown model {name!r}; this server has {MODEL!r}", reason="unknown_model")


def _parse_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """(JSON header, binary part) of an infer request."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(f"Inference-Header-Content-Length {header_length!r} does not fit a {len(body)}-byte body")
        split = int(header_length)
        head, binary = body[:split], body[split:]
    else:
        head, binary = body, b""
    if len(head) > JSON_HEAD_LIMIT:  # parsed on the event loop into Python objects: keep that small
        raise ApiError(413, f"the JSON part of the request is {len(head)} bytes; the limit is {JSON_HEAD_LIMIT}: "
                            "send tensors as binary data (Inference-Header-Content-Length)",
                       reason="body_too_large", bytes=len(head), max_bytes=JSON_HEAD_LIMIT)
    try:
        request = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"the inference request is not JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise _bad("the inference request has no 'inputs' list")
    return request, binary


def _shape(tensor: dict[str, Any]) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise _bad(f"input {tensor.get('name')!r}: 'shape' must be a list of sizes")
    return shape


def _take_input(request: dict[str, Any], binary: bytes, max_pixels: int | None) -> tuple[str, Any]:
    """('image', HxWx3 uint8 array) or ('image_bytes', encoded bytes)."""
    inputs = request["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad("send exactly one input: 'image' (UINT8 [H,W,3]) or 'image_bytes' (BYTES [1])")
    tensor = inputs[0]
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), _shape(tensor)
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise _bad(f"input {name!r}: binary_data_size {size!r} does not fit the {len(binary)} binary bytes")
        raw: bytes | None = binary[:size]
    else:
        raw = None
        if "data" not in tensor:
            raise _bad(f"input {name!r} has neither 'data' nor binary data")

    if name == "image":
        if datatype != "UINT8":
            raise _bad(f"input 'image' must be UINT8, not {datatype!r}")
        if len(shape) == 4 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 3 or shape[2] != 3:
            raise _bad(f"input 'image' must have shape [H, W, 3] (one RGB image), not {tensor['shape']}; send "
                       "several images as concurrent requests, the server batches them")
        height, width = shape[0], shape[1]
        if height == 0 or width == 0:
            raise _bad("input 'image' is empty")
        if max_pixels is not None and height * width > max_pixels:
            raise too_many_pixels(height, width, max_pixels)
        count = height * width * 3
        if raw is not None:
            if len(raw) != count:
                raise _bad(f"input 'image': {len(raw)} bytes for shape {shape} (needs {count})")
            array = np.frombuffer(raw, np.uint8)
        else:
            try:
                array = np.asarray(tensor["data"], dtype=np.int64).reshape(-1)
            except (TypeError, ValueError):
                raise _bad("input 'image': 'data' must be numbers") from None
            if array.size != count or array.min(initial=0) < 0 or array.max(initial=0) > 255:
                raise _bad(f"input 'image': 'data' must hold {count} values 0-255 for shape {shape}")
            array = array.astype(np.uint8)
        return "image", np.ascontiguousarray(array.reshape(height, width, 3))

    if name == "image_bytes":
        if datatype != "BYTES":
            raise _bad(f"input 'image_bytes' must be BYTES, not {datatype!r}")
        if int(np.prod(shape)) != 1:
            raise _bad(f"input 'image_bytes' must hold one element (shape [1]), not {tensor['shape']}")
        if raw is not None:  # the binary form: 4-byte little-endian length, then the bytes
            if len(raw) < 4:
                raise _bad("input 'image_bytes': binary data shorter than its length prefix")
            (length,) = struct.unpack_from("<I", raw)
            if length != len(raw) - 4:
                raise _bad(f"input 'image_bytes': length prefix {length} but {len(raw) - 4} bytes follow")
            return "image_bytes", raw[4:]
        data = tensor["data"]
        element = data[0] if isinstance(data, list) and len(data) == 1 else None
        if not isinstance(element, str):
            raise _bad("input 'image_bytes': JSON 'data' must be one base64 string (or send binary data)")
        try:
            return "image_bytes", base64.b64decode(element, validate=True)
        except ValueError:
            raise _bad("input 'image_bytes': JSON 'data' is not base64") from None

    raise _bad(f"unknown input {name!r}; this model takes 'image' (UINT8 [H,W,3]) or 'image_bytes' (BYTES [1])")


def _parameters(request: dict[str, Any], default_threshold: float) -> tuple[float, bool, bool]:
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("'parameters' must be an object")
    threshold = params.get("threshold", default_threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ApiError(422, f"parameter threshold must be a number 0-1, not {threshold!r}", reason="bad_parameter")
    flags = []
    for key in ("clean", "tta"):
        value = params.get(key, False)
        if not isinstance(value, bool):
            raise ApiError(422, f"parameter {key} must be true or false, not {value!r}", reason="bad_parameter")
        flags.append(value)
    return float(threshold), flags[0], flags[1]


def _requested(request: dict[str, Any]) -> list[tuple[str, bool]]:
    """[(output name, binary?)] in the order asked (all outputs when none are named)."""
    binary_default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    asked = request.get("outputs")
    if not asked:
        return [(o["name"], binary_default) for o in OUTPUTS]
    known = {o["name"] for o in OUTPUTS}
    out = []
    for item in asked:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in known:
            raise _bad(f"unknown output {name!r}; this model gives 'mask' (UINT8) and 'probability' (FP32)")
        out.append((name, bool((item.get("parameters") or {}).get("binary_data", binary_default))))
    return out


def _outputs(decoded, result, threshold: float, clean: bool, wanted: list[str]) -> dict[str, np.ndarray]:
    """Pool thread: the post-process step (as /v1), then the tensors asked for."""
    from ..io.formats import mask_image

    seg = post_process(result.probability, decoded.size, threshold, clean)
    tensors = {"mask": lambda: mask_image(seg.mask), "probability": lambda: np.ascontiguousarray(seg.probability,
                                                                                                   np.float32)}
    return {name: tensors[name]() for name in wanted}


def _answer(request: dict[str, Any], asked: list[tuple[str, bool]], tensors: dict[str, np.ndarray]) -> Response:
    datatypes = {o["name"]: o["datatype"] for o in OUTPUTS}
    outputs, chunks = [], []
    for name, binary in asked:
        array = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatypes[name], "shape": list(array.shape)}
        if binary:
            chunk = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            if array.size > JSON_OUTPUT_LIMIT:
                raise ApiError(422, f"output {name!r} has {array.size} values, more than {JSON_OUTPUT_LIMIT} in JSON; "
                                    "ask for it as binary data (parameters binary_data: true)",
                               reason="bad_parameter")
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    head: dict[str, Any] = {"model_name": MODEL, "model_version": VERSION, "outputs": outputs}
    if "id" in request:
        head["id"] = request["id"]
    head_bytes = json.dumps(head).encode()
    if not chunks:
        return Response(head_bytes, media_type="application/json")
    return Response(b"".join([head_bytes, *chunks]), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head_bytes))})


def add_v2_routes(app: FastAPI, *, segmenter, work: ImageWork, gate, read_body: ReadBody, default_threshold: float,
                  max_pixels: int | None, ready: Callable[[], bool]) -> None:
    """Mount the Open Inference Protocol endpoints on ``app``."""
    platform = "openvino" if "openvino" in str(segmenter.provider).lower() else "onnxruntime_onnx"

    def check(model: str, version: str | None = None) -> None:
        if model != MODEL:
            raise _unknown_model(model)
        if version is not None and version != VERSION:
            raise ApiError(404, f"model {MODEL!r} has no version {version!r}; it has {VERSION!r}",
                           reason="unknown_model")

    def metadata() -> dict[str, Any]:
        return {"name": MODEL, "versions": [VERSION], "platform": platform,
                "inputs": [dict(i) for i in INPUTS], "outputs": [dict(o) for o in OUTPUTS],
                "parameters": {"threshold": default_threshold, "provider": segmenter.provider,
                               "precision": segmenter.precision}}

    def get(path: str, **kwargs):
        """GET in the docs, HEAD answered too (not listed)."""
        def register(fn):
            app.head(path, include_in_schema=False)(fn)
            return app.get(path, tags=["v2 (Open Inference Protocol)"], **kwargs)(fn)
        return register

    @get("/v2", summary="server metadata")
    async def server_metadata() -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version
        try:
            installed = version("unetlite")
        except PackageNotFoundError:
            installed = "unknown"
        return {"name": "unetlite", "version": installed, "extensions": ["binary_tensor_data"]}

    @get("/v2/health/live", summary="liveness: 200 while the process serves")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @get("/v2/health/ready", summary="readiness: 200 when the model is loaded and not shutting down")
    async def server_ready() -> JSONResponse:
        ok = ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @get("/v2/models/{model}", summary="model metadata: inputs, outputs, datatypes, shapes")
    async def model_metadata(model: str) -> dict[str, Any]:
        check(model)
        return metadata()

    @get("/v2/models/{model}/versions/{version}", include_in_schema=False)
    async def model_version_metadata(model: str, version: str) -> dict[str, Any]:
        check(model, version)
        return metadata()

    @get("/v2/models/{model}/ready", summary="model readiness")
    async def model_ready(model: str) -> JSONResponse:
        check(model)
        ok = ready()
        return JSONResponse({"name": MODEL, "ready": ok}, status_code=200 if ok else 503)

    @get("/v2/models/{model}/versions/{version}/ready", include_in_schema=False)
    async def model_version_ready(model: str, version: str) -> JSONResponse:
        check(model, version)
        ok = ready()
        return JSONResponse({"name": MODEL, "ready": ok}, status_code=200 if ok else 503)

    async def infer(request: Request) -> Response:
        async with gate.admit():
            body = await read_body(request)
            parsed, binary = _parse_request(body, request.headers.get(HEADER))
            del body
            kind, value = _take_input(parsed, binary, max_pixels)
            del binary
            threshold, clean, tta = _parameters(parsed, default_threshold)
            asked = _requested(parsed)
            settings = SegmentSettings("mask", threshold=threshold, clean=clean, tta=tta, max_pixels=max_pixels)
            wanted = [name for name, _ in asked]

            def finish(decoded, result) -> Response:
                return _answer(parsed, asked, _outputs(decoded, result, threshold, clean, wanted))

            extra = 2 * sum(OUTPUT_BYTES[name] for name in set(wanted))  # the tensors, then the body
            if kind == "image":
                outcome = await work.run(settings, finish, rgb=value, extra_bytes_per_pixel=extra)
            else:
                outcome = await work.run(settings, finish, data=value, name="input 'image_bytes'",
                                         extra_bytes_per_pixel=extra)
        response = outcome.value
        response.headers["X-Unetlite-Inference-Ms"] = f"{outcome.batch.inference_ms:.2f}"
        response.headers["X-Unetlite-Batch-Size"] = str(outcome.batch.batch_size)
        return response

    infer_doc = {"requestBody": {"required": True, "content": {"application/json": {"example": {
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [2, 2, 3], "data": [0] * 12}],
        "parameters": {"threshold": 0.5}, "outputs": [{"name": "mask"}]}}}}}

    @app.post("/v2/models/{model}/infer", summary="segment one image (UINT8 [H,W,3] or encoded BYTES)",
              tags=["v2 (Open Inference Protocol)"], openapi_extra=infer_doc)
    async def model_infer(model: str, request: Request) -> Response:
        check(model)
        return await infer(request)

    @app.post("/v2/models/{model}/versions/{version}/infer", include_in_schema=False)
    async def model_version_infer(model: str, version: str, request: Request) -> Response:
        check(model, version)
        return await infer(request)

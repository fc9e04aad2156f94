"""`unetlite serve`: the real server in a subprocess on a free loopback port, a real HTTP client
(httpx), the bundled model, real images. Nothing mocked."""
from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")

from serve.serving import STARTUP_S, Server, released_together, start_server  # noqa: E402

from unetlite.infer.cli import main as cli_main  # noqa: E402
from unetlite.infer.io.images import decode_image, encode_image  # noqa: E402
from unetlite.infer.engine.modelinfo import inspect  # noqa: E402
from unetlite.infer.io.formats import FORMATS, mask_image, render  # noqa: E402
from unetlite.infer.engine.segmenter import Segmenter, default_model_path  # noqa: E402

TOKEN = "s3cret-test-token"
MAX_BYTES = 2_000_000


@pytest.fixture(scope="module")
def server():
    srv = start_server("--max-bytes", str(MAX_BYTES))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def guarded():
    """Token on, one request at a time, no queue wait: busy is easy to reach for real."""
    srv = start_server("--max-concurrency", "1", "--queue-wait", "0", env={"UNETLITE_TOKEN": TOKEN})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(providers="cpu", spin=False)


@pytest.fixture(scope="module")
def pet_files(pets_dir) -> list[Path]:
    names = (pets_dir / "test.txt").read_text().split()[:4]
    return [pets_dir / "images" / f"{n}.jpg" for n in names]


@pytest.fixture(scope="module")
def big_jpeg(pet_files) -> bytes:
    """A real photo enlarged to 1600x1200: slow enough to keep the server busy, big enough for
    segment's reduced JPEG decoding to apply."""
    rgb = decode_image(pet_files[0].read_bytes())
    return encode_image(cv2.resize(rgb, (1600, 1200), interpolation=cv2.INTER_CUBIC), ".jpg")


def expected(segmenter: Segmenter, data: bytes, fmt: str = "mask", threshold: float | None = None,
             clean: bool = False) -> bytes:
    """What the server must answer: Segmenter + the same rendering and encoding as segment."""
    rgb = decode_image(data)
    seg = segmenter.predict([rgb], threshold=threshold, clean=clean)[0]
    return encode_image(render(fmt, rgb, seg.probability, seg.mask), FORMATS[fmt].extension)


def post(srv: Server, data=None, *, params=None, headers=None, files=None, timeout: float = 120) -> "httpx.Response":
    return httpx.post(f"{srv.url}/v1/segment", content=data, params=params, headers=headers, files=files,
                      timeout=timeout)


def assert_json_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, message
    return message


# --- endpoints -------------------------------------------------------------------------------

def test_healthz_docs_and_openapi(server):
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["provider"] == "CPUExecutionProvider"
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "/docs/assets/swagger-ui-bundle.js" in docs.text and "cdn." not in docs.text  # packaged, offline
    assert httpx.get(f"{server.url}/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert httpx.get(f"{server.url}/docs/openapi-3.0.json").json()["openapi"].startswith("3.0")
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "static/app.js" in page.text
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/segment", "/v1/model", "/healthz"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/segment"]["post"]["requestBody"]["content"]


def test_model_endpoint_matches_info(server):
    answer = httpx.get(f"{server.url}/v1/model").json()
    info = json.loads(json.dumps(asdict(inspect(default_model_path()))))  # tuples -> lists, as JSON has them
    assert {k: answer[k] for k in info} == info
    assert answer["provider"] == "CPUExecutionProvider"
    assert answer["threshold"] == info["contract"]["threshold"]


def test_masks_identical_to_segmenter(server, segmenter, pet_files):
    for path in pet_files:
        data = path.read_bytes()
        want = expected(segmenter, data)
        raw = post(server, data)
        assert raw.status_code == 200, raw.text
        assert raw.headers["content-type"] == "image/png"
        assert raw.content == want, path.name
        assert raw.headers["x-unetlite-provider"] == segmenter.provider
        assert float(raw.headers["x-unetlite-inference-ms"]) > 0
        multipart = post(server, files={"image": (path.name, data, "image/jpeg")})
        assert multipart.status_code == 200 and multipart.content == want, path.name


@pytest.mark.parametrize("fmt", ["cutout", "overlay", "prob", "side-by-side"])
def test_formats_threshold_and_clean(server, segmenter, pet_files, fmt):
    data = pet_files[1].read_bytes()
    response = post(server, data, params={"format": fmt, "threshold": "0.3", "clean": "true"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == FORMATS[fmt].media_type
    assert response.headers["x-unetlite-threshold"] == "0.3"
    assert response.content == expected(segmenter, data, fmt, threshold=0.3, clean=True)
    picture = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
    height, width = decode_image(data).shape[:2]
    assert picture.shape[:2] == (height, width * (3 if fmt == "side-by-side" else 1))


def test_json_answer(server, segmenter, pet_files):
    data = pet_files[2].read_bytes()
    response = post(server, data, headers={"Accept": "application/json"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"width", "height", "foreground_fraction", "mask_png_base64"}
    rgb = decode_image(data)
    seg = segmenter.predict([rgb])[0]
    assert (body["height"], body["width"]) == rgb.shape[:2]
    assert base64.b64decode(body["mask_png_base64"]) == encode_image(mask_image(seg.mask), ".png")
    assert body["foreground_fraction"] == pytest.approx(float(seg.mask.mean()), abs=1e-12)
    assert 0.0 < body["foreground_fraction"] < 1.0  # the pet model finds a pet, not all or nothing


def test_large_jpeg_answer_equals_segment_output(server, big_jpeg, tmp_path):
    """A mask never depends on the command: serve decodes as segment does (reduced JPEG decode)."""
    source = tmp_path / "big.jpg"
    source.write_bytes(big_jpeg)
    assert cli_main(["segment", str(source), "-o", str(tmp_path / "out"), "--providers", "cpu", "--no-progress"]) == 0
    [written] = [p for p in (tmp_path / "out").rglob("*.png")]
    response = post(server, big_jpeg)
    assert response.status_code == 200
    assert response.content == written.read_bytes()
    assert cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED).shape == (1200, 1600)
    as_json = post(server, big_jpeg, headers={"Accept": "application/json"}).json()  # the JSON answer's mask too
    assert base64.b64decode(as_json["mask_png_base64"]) == written.read_bytes()
    assert (as_json["height"], as_json["width"]) == (1200, 1600)


# --- errors ----------------------------------------------------------------------------------

def sof_patched(data: bytes, height: int, width: int) -> bytes:
    """A real JPEG whose frame header claims another size (a decompression bomb's header)."""
    pos = 2
    while data[pos] == 0xFF and data[pos + 1] not in (0xC0, 0xC1, 0xC2):  # walk the header segments
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    assert data[pos] == 0xFF, "no frame header found"
    at = pos + 5  # marker(2) length(2) precision(1), then height and width
    return data[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[at + 4:]


def test_bad_images_are_json_errors(server, pet_files, pets_dir):
    data = pet_files[0].read_bytes()
    assert_json_error(post(server, data[: len(data) // 2]), 400, "request body", "truncated")
    assert_json_error(post(server, (pets_dir / "trainval.txt").read_bytes()), 400, "not a decodable image")
    assert_json_error(post(server, b""), 400, "empty")
    assert_json_error(post(server, files={"image": ("half.jpg", data[:500], "image/jpeg")}), 400, "half.jpg")
    assert_json_error(post(server, files={"picture": ("a.jpg", data, "image/jpeg")}), 400, "'image'")
    assert_json_error(post(server, sof_patched(data, 65000, 65000)), 422, "65000x65000")
    assert "Traceback" not in server.text()


def test_bad_parameters_are_json_errors(server, pet_files):
    data = pet_files[0].read_bytes()
    for threshold in ("1.5", "-0.1", "nan", "abc"):
        assert_json_error(post(server, data, params={"threshold": threshold}), 422, "threshold")
    assert_json_error(post(server, data, params={"format": "gif"}), 422, "format")
    assert_json_error(httpx.get(f"{server.url}/v1/segment"), 405)
    assert_json_error(httpx.get(f"{server.url}/nothing-here"), 404)


def test_body_over_max_bytes_is_413(server, pet_files):
    rgb = decode_image(pet_files[3].read_bytes())
    huge = encode_image(cv2.resize(rgb, (2400, 1800), interpolation=cv2.INTER_CUBIC), ".png")  # a real image
    assert len(huge) > MAX_BYTES
    assert_json_error(post(server, huge), 413, str(MAX_BYTES))  # refused from Content-Length

    def chunks():  # no Content-Length: the server counts what streams in
        for i in range(0, len(huge), 65536):
            yield huge[i:i + 65536]
    assert_json_error(post(server, chunks()), 413, str(MAX_BYTES))
    assert post(server, pet_files[3].read_bytes()).status_code == 200  # and it keeps serving


def test_request_log_has_one_line_per_request(server):
    before = len(server.log)
    httpx.get(f"{server.url}/healthz?probe=1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("/healthz" in line for line in server.log[before:]):
        time.sleep(0.05)
    lines = [line for line in server.log[before:] if "GET /healthz" in line]
    assert len(lines) == 1 and re.search(r"GET /healthz 200 [\d.]+ ms", lines[0]), server.log[before:]


# --- token, busy, shutdown -------------------------------------------------------------------

def test_token(guarded, pet_files):
    data = pet_files[0].read_bytes()
    missing = post(guarded, data)
    assert_json_error(missing, 401, "missing token")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_json_error(post(guarded, data, headers={"Authorization": "Bearer wrong"}), 401, "wrong token")
    assert_json_error(httpx.get(f"{guarded.url}/v1/model"), 401)
    assert post(guarded, data, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200  # liveness stays open
    assert TOKEN not in guarded.text()


def burst(srv: Server, data: bytes, count: int, params=None) -> list:
    """``count`` requests released together from as many threads."""
    return released_together(lambda i: post(srv, data, params=params, headers={"Authorization": f"Bearer {TOKEN}"}),
                             count)


def test_busy_server_answers_503_then_recovers(guarded, big_jpeg):
    results = burst(guarded, big_jpeg, 6, params={"format": "overlay"})
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    refused = next(r for r in results if r.status_code == 503)
    assert_json_error(refused, 503, "busy")
    assert refused.headers["retry-after"] == "1"
    again = post(guarded, big_jpeg, headers={"Authorization": f"Bearer {TOKEN}"})
    assert again.status_code == 200  # the slot was given back


def test_healthz_answers_while_inference_runs(guarded, big_jpeg):
    """Inference is off the event loop: /healthz sees a request holding the slot."""
    def work() -> None:
        for _ in range(6):
            post(guarded, big_jpeg, params={"format": "overlay"}, headers={"Authorization": f"Bearer {TOKEN}"})
    worker = threading.Thread(target=work)
    worker.start()
    seen_running = False
    while worker.is_alive() and not seen_running:
        seen_running = httpx.get(f"{guarded.url}/healthz", timeout=30).json()["running"] >= 1
    worker.join()
    assert seen_running


def test_sigterm_finishes_running_requests_and_refuses_new(segmenter, pet_files):
    srv = start_server()
    try:
        data = pet_files[0].read_bytes()
        release, answer = threading.Event(), {}

        def slow_body():  # a request that is in flight while the signal arrives
            yield data[: len(data) // 2]
            release.wait(60)
            yield data[len(data) // 2:]

        def send() -> None:
            answer["response"] = post(srv, slow_body())
        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{srv.url}/healthz").json()["admitted"] < 1:
            assert time.monotonic() < deadline, "the slow request never arrived"
            time.sleep(0.02)
        srv.proc.send_signal(signal.SIGTERM)
        while httpx.get(f"{srv.url}/healthz").status_code != 503:
            assert time.monotonic() < deadline, "the server never started draining"
            time.sleep(0.02)
        assert_json_error(post(srv, data), 503, "shutting down")
        release.set()
        sender.join(60)
        assert answer["response"].status_code == 200
        assert answer["response"].content == expected(segmenter, data)
        assert srv.proc.wait(60) == 143
        assert "SIGTERM" in srv.text() and "Traceback" not in srv.text()
    finally:
        release.set()
        srv.stop()


# --- command line ----------------------------------------------------------------------------

def run_cli(*args: str, prelude: str = "pass") -> subprocess.CompletedProcess:
    code = f"import sys; {prelude}; from unetlite.infer.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=STARTUP_S)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = run_cli("serve", "--port", port)
    assert busy.returncode == 2 and busy.stderr.strip().count("\n") == 0
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    missing = run_cli("serve", "--port", "0", "--model", str(tmp_path / "none.onnx"))
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    assert run_cli("serve", "--port", "70000").returncode == 2
    assert run_cli("serve", "--max-bytes", "lots").returncode == 2


def test_missing_serve_extra_says_how_to_install():
    """As on an install without unetlite[serve]: importing fastapi fails."""
    result = run_cli("serve", "--port", "0", prelude="sys.modules['fastapi'] = None")
    assert result.returncode == 2
    assert result.stderr.strip() == ("unetlite serve: serve needs FastAPI, uvicorn and python-multipart (fastapi is "
                                     "not installed); install with: pip install '.[serve]'")

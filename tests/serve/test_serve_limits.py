"""Issue 16's serve items against a real `unetlite serve`: the decoded-bytes budget bounds the
server's peak memory whatever the images declare, HEAD answers on the health endpoints, and a
request line or header too big for uvicorn gets a JSON 400 while the server goes on."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")

from serve.serving import released_together, start_server  # noqa: E402

PEAK_LIMIT_KB = 1_500_000  # the bound issue 16 asks for (1.5 GB)


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def sparse_png(side: int) -> bytes:
    """A real PNG of side x side pixels that compresses to a few hundred KB (a decompression bomb
    that decodes for real)."""
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[::7, ::5] = 200
    ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return data.tobytes()


def concurrently(url: str, data: bytes, count: int, params: dict) -> list:
    return released_together(lambda i: httpx.post(f"{url}/v1/segment", content=data, params=params, timeout=600), count)


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    yield srv
    srv.stop()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc for peak RSS")
def test_decoded_bytes_budget_bounds_peak_memory(server):
    bomb = sparse_png(9999)  # 99.98 MP, under --max-pixels; about 300 KB
    assert len(bomb) < 1_000_000
    answers = concurrently(server.url, bomb, 4, {"format": "side-by-side"})
    for answer in answers:  # alone it would peak near 2.8 GB: refused before decoding
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["reason"] == "over_memory_budget" and body["width"] == body["height"] == 9999
        assert body["needed_bytes"] > body["budget_bytes"] and "--memory-budget" in body["error"]
    assert peak_rss_kb(server.proc.pid) < PEAK_LIMIT_KB
    fits = sparse_png(4400)  # 19 MP side-by-side: fits the budget alone, so these run one at a time
    answers = concurrently(server.url, fits, 4, {"format": "side-by-side"})
    assert [a.status_code for a in answers] == [200] * 4
    picture = cv2.imdecode(np.frombuffer(answers[0].content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert picture.shape[:2] == (4400, 3 * 4400)
    big = sparse_png(8000)  # 64 MP: as a mask (11 bytes a pixel) it fits the budget
    mask = httpx.post(f"{server.url}/v1/segment", content=big, timeout=600)
    assert mask.status_code == 200, mask.text
    assert cv2.imdecode(np.frombuffer(mask.content, np.uint8), cv2.IMREAD_UNCHANGED).shape == (8000, 8000)
    peak = peak_rss_kb(server.proc.pid)
    assert peak < PEAK_LIMIT_KB, f"peak RSS {peak / 1e6:.2f} GB"
    assert "Traceback" not in server.text()


@pytest.mark.parametrize("path", ["/healthz", "/v2/health/live", "/v2/health/ready"])
def test_head_on_health_endpoints(server, path):
    head = httpx.head(server.url + path)
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(server.url + path).status_code == 200


def raw_request(url: str, request: bytes) -> bytes:
    """What the server answers to raw bytes (it may close before all is sent: a refusal)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_oversized_url_and_header_get_a_json_400_and_the_server_goes_on(server):
    """uvicorn refuses a request head over h11's limit before the app sees it; serve's protocol
    class (``serve.protocol``) makes that 400 JSON like every other error. Whether a 70 KB request
    line is over the limit depends on how it arrives (h11 bounds the unparsed part): either it is
    refused so, or answered normally."""
    def split(answer: bytes) -> tuple[bytes, bytes]:
        head, _, body = answer.partition(b"\r\n\r\n")
        return head, body

    long_url = b"GET /healthz?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    head, body = split(raw_request(server.url, long_url))
    assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.1 200")), head[:200]
    assert json.loads(body)
    huge_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 2_000_000 + b"\r\n\r\n"
    head, body = split(raw_request(server.url, huge_header))
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head.lower(), head[:200]
    assert json.loads(body)["reason"] == "bad_request"
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert "Traceback" not in server.text()


def test_without_the_optional_packages_metrics_and_docs_say_how_to_install():
    """As on an install that lacks prometheus-client and swagger-ui-bundle: the rest serves."""
    srv = start_server(prelude="sys.modules['prometheus_client'] = None; sys.modules['swagger_ui_bundle'] = None")
    try:
        metrics = httpx.get(f"{srv.url}/metrics")
        assert metrics.status_code == 501 and "pip install '.[serve]'" in metrics.json()["error"]
        docs = httpx.get(f"{srv.url}/docs")
        assert docs.status_code == 200 and "swagger-ui-bundle" in docs.text and "pip install '.[serve]'" in docs.text
        assert httpx.get(f"{srv.url}/").status_code == 200
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
    finally:
        assert srv.stop() == 143
    assert "Traceback" not in srv.text()

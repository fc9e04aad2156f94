"""/metrics of a real `unetlite serve`, parsed with prometheus_client's own parser: counters move
with real requests, by endpoint and status; admission 503s are counted; the token covers it."""
from __future__ import annotations

import threading

import cv2
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
parser = pytest.importorskip("prometheus_client.parser")

from serve.serving import start_server  # noqa: E402

from unetlite.infer.io.images import decode_image, encode_image  # noqa: E402

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server():
    """One request at a time and no queue: admission refusals are easy to cause for real."""
    srv = start_server("--max-concurrency", "1", "--max-queue", "0", env={"UNETLITE_TOKEN": TOKEN})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def photo(pets_dir) -> bytes:
    name = (pets_dir / "test.txt").read_text().split()[0]
    return (pets_dir / "images" / f"{name}.jpg").read_bytes()


def scrape(srv) -> dict:
    """{(name, frozenset(labels)): value} from /metrics."""
    response = httpx.get(f"{srv.url}/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in parser.text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_need_the_token(server):
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_families_and_info(server):
    samples = scrape(server)
    names = {name for name, _ in samples}
    for family in ("unetlite_requests_total", "unetlite_request_duration_seconds_bucket",
                   "unetlite_queue_wait_seconds_bucket", "unetlite_inference_seconds_bucket",
                   "unetlite_batch_size_bucket", "unetlite_requests_in_flight", "unetlite_requests_queued",
                   "unetlite_requests_running", "unetlite_admission_rejections_total",
                   "unetlite_decode_budget_bytes", "unetlite_model_info"):
        assert family in names, family
    [info] = [dict(labels) for name, labels in samples if name == "unetlite_model_info"]
    assert info["runtime"] == "CPUExecutionProvider" and info["precision"] == "fp32"
    assert info["model"] == "unet_pets.onnx"
    assert value(samples, "unetlite_requests_in_flight") >= 1  # the scrape itself


def test_counters_move_by_endpoint_and_status(server, photo):
    before = scrape(server)
    ok = httpx.post(f"{server.url}/v1/segment", content=photo, headers=AUTH, timeout=120)
    assert ok.status_code == 200
    assert httpx.post(f"{server.url}/v1/segment", content=b"not an image", headers=AUTH).status_code == 400
    assert httpx.post(f"{server.url}/v1/segment", params={"threshold": "2"}, content=photo,
                      headers=AUTH).status_code == 422
    assert httpx.post(f"{server.url}/v1/segment", content=photo).status_code == 401
    assert httpx.head(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/no/such/{'x' * 30}").status_code == 404
    after = scrape(server)

    def moved(status: str, endpoint: str = "/v1/segment", method: str = "POST") -> float:
        labels = dict(endpoint=endpoint, method=method, status=status)
        return value(after, "unetlite_requests_total", **labels) - value(before, "unetlite_requests_total", **labels)

    assert moved("200") == 1 and moved("400") == 1 and moved("422") == 1
    assert moved("401") == 1  # refused before routing, still counted for its endpoint
    assert moved("200", endpoint="/healthz", method="HEAD") == 1
    assert moved("404", endpoint="other", method="GET") == 1  # unknown paths share one label
    for histogram in ("unetlite_inference_seconds_count", "unetlite_batch_size_count",
                      "unetlite_queue_wait_seconds_count"):
        assert value(after, histogram) - value(before, histogram) == 1, histogram
    duration = "unetlite_request_duration_seconds_count"
    assert value(after, duration, endpoint="/v1/segment") - value(before, duration, endpoint="/v1/segment") == 4


def test_admission_refusals_are_counted(server, photo):
    big = encode_image(cv2.resize(decode_image(photo), (1600, 1200), interpolation=cv2.INTER_CUBIC), ".jpg")
    before = scrape(server)
    barrier, statuses = threading.Barrier(6), []

    def one() -> None:
        barrier.wait()
        statuses.append(httpx.post(f"{server.url}/v1/segment", params={"format": "overlay"}, content=big,
                                   headers=AUTH, timeout=120).status_code)
    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 200 in statuses and 503 in statuses, statuses
    after = scrape(server)
    refused = statuses.count(503)
    rejections = (value(after, "unetlite_admission_rejections_total", reason="queue_full")
                  - value(before, "unetlite_admission_rejections_total", reason="queue_full"))
    answered = (value(after, "unetlite_requests_total", endpoint="/v1/segment", method="POST", status="503")
                - value(before, "unetlite_requests_total", endpoint="/v1/segment", method="POST", status="503"))
    assert rejections == refused and answered == refused

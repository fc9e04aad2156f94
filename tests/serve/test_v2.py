"""The Open Inference Protocol (KServe v2) of a real `unetlite serve`, spoken by a client nobody
here wrote: tritonclient's InferenceServerClient. Its masks equal /v1/segment's."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
triton = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (pip install '.[dev]')")
from tritonclient.utils import InferenceServerException  # noqa: E402
from serve.serving import start_server  # noqa: E402

from unetlite.infer.engine.segmenter import Segmenter  # noqa: E402
from unetlite.infer.io.images import decode_image, encode_image  # noqa: E402

TOKEN = "v2-token"


def auth() -> dict[str, str]:
    """A fresh header dict each call: tritonclient writes its own headers into the one it is given."""
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server():
    srv = start_server("--max-pixels", "2000000", env={"UNETLITE_TOKEN": TOKEN})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=300.0)
    yield c
    c.close()


@pytest.fixture(scope="module")
def photos(pets_dir) -> list[bytes]:
    names = (pets_dir / "test.txt").read_text().split()[:3]
    return [(pets_dir / "images" / f"{n}.jpg").read_bytes() for n in names]


def v1_mask(server, data: bytes, **params) -> np.ndarray:
    response = httpx.post(f"{server.url}/v1/segment", content=data, params=params, headers=auth(), timeout=120)
    assert response.status_code == 200, response.text
    return cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)


def bytes_input(data: bytes):
    tensor = triton.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=np.object_))
    return tensor


def image_input(rgb: np.ndarray, binary: bool = True):
    tensor = triton.InferInput("image", list(rgb.shape), "UINT8")
    tensor.set_data_from_numpy(rgb, binary_data=binary)
    return tensor


def test_health_and_metadata(server, client):
    assert client.is_server_live() and client.is_server_ready()  # probes need no token
    assert client.is_model_ready("unetlite", headers=auth())
    assert client.get_server_metadata()["name"] == "unetlite"
    meta = client.get_model_metadata("unetlite", headers=auth())
    assert meta["name"] == "unetlite"
    assert {(i["name"], i["datatype"], tuple(i["shape"])) for i in meta["inputs"]} == {
        ("image", "UINT8", (-1, -1, 3)), ("image_bytes", "BYTES", (1,))}
    assert {(o["name"], o["datatype"], tuple(o["shape"])) for o in meta["outputs"]} == {
        ("mask", "UINT8", (-1, -1)), ("probability", "FP32", (-1, -1))}
    for path in ("/v2/health/live", "/v2/health/ready", "/healthz"):
        assert httpx.head(server.url + path).status_code == 200, path


def test_token_covers_models(server, client):
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("unetlite")
    assert missing.value.status() == "401"
    with pytest.raises(InferenceServerException) as wrong:
        client.infer("unetlite", [bytes_input(b"x")], headers={"Authorization": "Bearer nope"})
    assert wrong.value.status() == "401"


def test_encoded_image_mask_equals_v1(server, client, photos):
    for data in photos:
        result = client.infer("unetlite", [bytes_input(data)], headers=auth())
        mask = result.as_numpy("mask")
        want = v1_mask(server, data)
        assert mask.dtype == np.uint8 and mask.shape == want.shape
        assert np.array_equal(mask, want)
        probability = result.as_numpy("probability")
        assert probability.dtype == np.float32 and probability.shape == want.shape
        assert np.array_equal(probability >= 0.5, want > 0)


def test_uint8_tensor_mask_equals_v1_and_segmenter(server, client, photos):
    segmenter = Segmenter(providers="cpu", spin=False)
    for data in photos:
        rgb = decode_image(data)
        png = encode_image(rgb, ".png")  # the same pixels as the tensor, losslessly
        for binary in (True, False):
            result = client.infer("unetlite", [image_input(rgb, binary)], headers=auth(),
                                  outputs=[triton.InferRequestedOutput("mask", binary_data=binary)],
                                  parameters={"threshold": 0.4, "clean": True})
            mask = result.as_numpy("mask")
            assert result.as_numpy("probability") is None  # only what was asked for
            assert np.array_equal(mask, v1_mask(server, png, threshold="0.4", clean="true"))
        seg = segmenter.predict([rgb], threshold=0.4, clean=True)[0]
        assert np.array_equal(mask, seg.mask * np.uint8(255))


def test_limits_and_errors(server, client, photos):
    big = np.zeros((1500, 1500, 3), np.uint8)  # 2.25 MP against --max-pixels 2000000
    with pytest.raises(InferenceServerException) as over:
        client.infer("unetlite", [image_input(big)], headers=auth())
    assert over.value.status() == "422" and "over the 2.0 MP limit" in over.value.message()
    with pytest.raises(InferenceServerException) as junk:
        client.infer("unetlite", [bytes_input(b"not a picture")], headers=auth())
    assert junk.value.status() == "400"
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("resnet", [bytes_input(photos[0])], headers=auth())
    assert unknown.value.status() == "404"
    with pytest.raises(InferenceServerException) as threshold:
        client.infer("unetlite", [bytes_input(photos[0])], headers=auth(), parameters={"threshold": 3})
    assert threshold.value.status() == "422"
    grey = triton.InferInput("image", [4, 4], "UINT8")
    grey.set_data_from_numpy(np.zeros((4, 4), np.uint8))
    with pytest.raises(InferenceServerException) as shape:
        client.infer("unetlite", [grey], headers=auth())
    assert shape.value.status() == "400" and "[H, W, 3]" in shape.value.message()
    assert "Traceback" not in server.text()

"""segment, serve (a real server on loopback) and segment --ray write the same bytes for the same
images and settings: they all run the pipeline's steps."""
from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from unetlite.infer.cli import main

# (format, clean, tta, edge, background)
SETTINGS = [("mask", False, False, "hard", None), ("overlay", True, True, "hard", None),
            ("side-by-side", False, True, "hard", None), ("overlay", False, False, "soft", None),
            ("composite", False, False, "soft", "0,120,255"), ("composite", True, False, "hard", "blur:4")]


def _photo_args(edge: str, background: str | None) -> list[str]:
    return ["--edge", edge] + (["--background", background] if background else [])


@pytest.fixture(scope="module")
def photos(pets_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("same_in")
    for path in sorted((pets_dir / "images").glob("*.jpg"))[:3]:
        shutil.copy(path, root)
    return root


def _segment(photos: Path, out: Path, fmt: str, clean: bool, tta: bool, *extra: str) -> dict[str, bytes]:
    argv = ["segment", str(photos), "-o", str(out), "--format", fmt, "--providers", "cpu", "--no-progress", *extra]
    argv += ["--clean"] * clean + ["--tta"] * tta
    assert main(argv) == 0
    return {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def server_url():
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from serve.serving import start_server   # the serve tests' real server on a free loopback port
    server = start_server()
    yield server.url
    server.stop()


def _serve(url: str, image: Path, fmt: str, clean: bool, tta: bool, edge: str, background: str | None) -> bytes:
    query = f"format={fmt}&clean={str(clean).lower()}&tta={str(tta).lower()}&edge={edge}"
    query += f"&background={background}" if background else ""
    request = urllib.request.Request(f"{url}/v1/segment?{query}", data=image.read_bytes(), method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


@pytest.mark.parametrize("fmt, clean, tta, edge, background", SETTINGS)
def test_segment_and_serve_write_the_same_bytes(photos, tmp_path, server_url, fmt, clean, tta, edge, background):
    plain = _segment(photos, tmp_path / "plain", fmt, clean, tta, *_photo_args(edge, background))
    for image in sorted(photos.iterdir()):
        name = next(n for n in plain if n.startswith(image.name))
        assert _serve(server_url, image, fmt, clean, tta, edge, background) == plain[name], name


def test_serve_refuses_a_background_path(photos, server_url):
    """A path would let a client make the server read its own files: only blur and colours are taken."""
    image = sorted(photos.iterdir())[0]
    with pytest.raises(urllib.error.HTTPError) as caught:
        _serve(server_url, image, "composite", False, False, "soft", "/etc/hostname")
    assert caught.value.code == 422


def test_segment_and_ray_write_the_same_bytes(photos, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for fmt, clean, tta, edge, background in (SETTINGS[0], SETTINGS[1], SETTINGS[4]):
            extra = _photo_args(edge, background)
            plain = _segment(photos, tmp_path / f"plain-{fmt}", fmt, clean, tta, *extra)
            on_ray = _segment(photos, tmp_path / f"ray-{fmt}", fmt, clean, tta, *extra, "--ray", "--ray-workers", "1")
            assert on_ray == plain
    finally:
        ray.shutdown()

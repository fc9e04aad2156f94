"""segment, serve (a real server on loopback) and segment --ray write the same bytes for the same
images and settings: they all run the pipeline's steps."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from unetlite.infer.cli import main

SETTINGS = [("mask", False, False), ("overlay", True, True), ("side-by-side", False, True)]


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
    proc = subprocess.Popen([sys.executable, "-m", "unetlite.infer.cli", "serve", "--port", "0", "--providers", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    found: dict[str, str] = {}
    ready = threading.Event()

    def pump() -> None:
        for line in proc.stderr:
            match = re.search(r"listening on (http://\S+?:\d+)", line)
            if match:
                found["url"] = match.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(180) or "url" not in found:
        proc.kill()
        pytest.fail("server did not start")
    yield found["url"]
    proc.terminate()
    proc.wait(60)


def _serve(url: str, image: Path, fmt: str, clean: bool, tta: bool) -> bytes:
    query = f"format={fmt}&clean={str(clean).lower()}&tta={str(tta).lower()}"
    request = urllib.request.Request(f"{url}/v1/segment?{query}", data=image.read_bytes(), method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


@pytest.mark.parametrize("fmt, clean, tta", SETTINGS)
def test_segment_and_serve_write_the_same_bytes(photos, tmp_path, server_url, fmt, clean, tta):
    plain = _segment(photos, tmp_path / "plain", fmt, clean, tta)
    for image in sorted(photos.iterdir()):
        name = next(n for n in plain if n.startswith(image.name))
        assert _serve(server_url, image, fmt, clean, tta) == plain[name], name


def test_segment_and_ray_write_the_same_bytes(photos, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for fmt, clean, tta in SETTINGS[:2]:
            plain = _segment(photos, tmp_path / f"plain-{fmt}", fmt, clean, tta)
            on_ray = _segment(photos, tmp_path / f"ray-{fmt}", fmt, clean, tta, "--ray", "--ray-workers", "1")
            assert on_ray == plain
    finally:
        ray.shutdown()

"""Shared fixtures: real data and a tiny real model trained on it (committed: tests/data/tiny_unet.onnx).

Data: ../shared/data (or $UNETLITE_SHARED_DATA) when present, else the small real fixture set in
tests/data (24 Oxford-IIIT Pet pairs, the 100-frame clip; see tests/data/README.md), so the suite
passes on a fresh clone. Tests that need the full data use the `full_data` fixture or marker and
skip with a reason without it. Nothing here reads data at import time.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data"
SHARED = Path(os.environ.get("UNETLITE_SHARED_DATA", REPO.parent / "shared" / "data"))
FULL_DATA = (SHARED / "oxford_pets").is_dir() and (SHARED / "video").is_dir()
PETS = SHARED / "oxford_pets" if (SHARED / "oxford_pets").is_dir() else FIXTURES / "pets"
VIDEO = SHARED / "video" if (SHARED / "video").is_dir() else FIXTURES / "video"
NEEDS_FULL_DATA = "needs ../shared/data (full Oxford pets subset / all videos)"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"full_data: {NEEDS_FULL_DATA}; skipped without it")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("full_data") and not FULL_DATA:
        pytest.skip(NEEDS_FULL_DATA)


def pytest_report_header(config: pytest.Config) -> str:
    full = "" if FULL_DATA else f"; no full data at {SHARED}: tests marked full_data skip"
    return f"unetlite test data: pets {PETS}, video {VIDEO}{full}"


@pytest.fixture(scope="session")
def full_data() -> Path:
    """The shared data root; skips the test when only the in-repo fixture set is here."""
    if not FULL_DATA:
        pytest.skip(NEEDS_FULL_DATA)
    return SHARED


def pet_names(split: str = "trainval", count: int | None = None) -> list[str]:
    names = (PETS / f"{split}.txt").read_text().split()
    return names[:count] if count else names


@pytest.fixture(scope="session")
def pets_dir() -> Path:
    """Oxford-IIIT Pet pairs in the flat layout (images/, trimaps/, trainval.txt, test.txt)."""
    if not (PETS / "trainval.txt").is_file():
        pytest.skip(f"no pets data at {PETS} (run tests/data/make_fixtures.py)")
    return PETS


@pytest.fixture(scope="session")
def video_dir() -> Path:
    """Folder holding at least vtest_people_short_384x288.mp4 (all four videos with full data)."""
    if not (VIDEO / "vtest_people_short_384x288.mp4").is_file():
        pytest.skip(f"no test video in {VIDEO}")
    return VIDEO


TINY_ONNX = FIXTURES / "tiny_unet.onnx"  # committed; made by tests/data/make_tiny_model.py
TINY_RECORD = FIXTURES / "tiny_unet.json"  # its parameter count, recipe and IoU on the fixture pairs


def _tiny_recipe():
    """tests/data/make_tiny_model.py as a module: the one recipe behind the tiny model."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tiny_model", FIXTURES / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory):
    """(model, path to its .keras file): the committed tiny model's recipe trained here (seed 0, the
    16 fixture pets), for train/export tests. Skips without the [train] extra."""
    pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    model, _ = _tiny_recipe().train()
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A copy of the committed tiny real model tests/data/tiny_unet.onnx (U-Net, 4 filters, depth 3,
    trained on the fixture pets; dynamic size: any H, W multiple of 8; uint8 input). Needs neither
    TensorFlow, Keras nor tf2onnx. A copy, so a test that writes beside it touches nothing in the repo."""
    import shutil

    path = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    shutil.copyfile(TINY_ONNX, path)
    return path


@pytest.fixture(scope="session")
def tiny_record() -> dict:
    """tests/data/tiny_unet.json: parameters (the Keras count, what `unetlite info` reports), recipe, quality."""
    import json

    return json.loads(TINY_RECORD.read_text())

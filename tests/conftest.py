"""Shared fixtures: real data and a tiny real model trained on it.

Data: ../shared/data (or $UNETLITE_SHARED_DATA) when present, else the small real fixture set in
tests/data (24 Oxford-IIIT Pet pairs, the 100-frame clip; see tests/data/README.md), so the suite
passes on a fresh clone. Tests that need the full data use the `full_data` fixture or marker and
skip with a reason without it. Nothing here reads data at import time.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


def _tiny_names() -> list[str]:
    """The tiny model's training images: up to 96 trainval names of whatever PETS holds."""
    return pet_names("trainval", 96)


def _train_tiny(size: int = 64, steps: int = 240, seed: int = 0):
    """A small U-Net (4 filters, depth 3) fitted for a fixed number of steps on real pets (96 shared
    or the 16 fixture images): a real, non-random model, cheap enough for every test run."""
    keras = pytest.importorskip("keras")
    from unetlite.infer.imageio import read_image, read_label
    from unetlite.infer.preprocess import prepare, resize_mask, trimap_to_mask
    from unetlite.train.model import UNetConfig, build_unet
    from unetlite.infer.contract import ModelContract

    keras.utils.set_random_seed(seed)
    contract = ModelContract(input_height=size, input_width=size)
    names = _tiny_names()
    x = np.stack([prepare(read_image(PETS / "images" / f"{n}.jpg", apply_orientation=False), contract) for n in names])
    y = np.stack([trimap_to_mask(resize_mask(read_label(PETS / "trimaps" / f"{n}.png"), (size, size)))
                  for n in names])[..., None].astype("float32")
    repeat = -(-96 // len(names))  # few long epochs rather than many short ones (per-epoch overhead)
    x, y = np.concatenate([x] * repeat), np.concatenate([y] * repeat)
    model = build_unet(UNetConfig(base_filters=4, depth=3, input_size=size))
    model.compile(optimizer=keras.optimizers.RMSprop(2e-3), loss="binary_crossentropy")
    model.fit(x, y, batch_size=8, epochs=max(1, steps * 8 // len(x)), verbose=0)
    return model


@pytest.fixture(scope="session")
def tiny_keras(pets_dir, tmp_path_factory):
    """(model, path to its .keras file)."""
    model = _train_tiny()
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_keras, tmp_path_factory) -> Path:
    """The tiny model exported with dynamic size (any H, W multiple of 8)."""
    pytest.importorskip("tf2onnx")
    from unetlite.export.convert import export_onnx

    path = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    export_onnx(tiny_keras[0], path, dynamic_size=True, training_data=f"oxford_pets ({len(_tiny_names())} trainval images, test fixture)")
    return path

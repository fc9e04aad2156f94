"""Shared fixtures: real data from ../shared/data and a tiny real model trained on it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("UNETLITE_SHARED_DATA", REPO.parent / "shared" / "data"))
PETS = DATA / "oxford_pets"
VIDEO = DATA / "video"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pet_names(split: str = "trainval", count: int | None = None) -> list[str]:
    names = (PETS / f"{split}.txt").read_text().split()
    return names[:count] if count else names


@pytest.fixture(scope="session")
def pets_dir() -> Path:
    if not PETS.is_dir():
        pytest.skip(f"real data not found at {PETS}")
    return PETS


def _train_tiny(size: int = 64, steps: int = 240, seed: int = 0):
    """A small U-Net (4 filters, depth 3) fitted for a few steps on real pets: enough to be a
    real, non-random model, cheap enough for every test run."""
    keras = pytest.importorskip("keras")
    from unetlite.infer.imageio import read_image, read_label
    from unetlite.infer.preprocess import prepare, resize_mask, trimap_to_mask
    from unetlite.train.model import UNetConfig, build_unet
    from unetlite.infer.contract import ModelContract

    keras.utils.set_random_seed(seed)
    contract = ModelContract(input_height=size, input_width=size)
    names = pet_names("trainval", 96)
    x = np.stack([prepare(read_image(PETS / "images" / f"{n}.jpg", apply_orientation=False), contract) for n in names])
    y = np.stack([trimap_to_mask(resize_mask(read_label(PETS / "trimaps" / f"{n}.png"), (size, size)))
                  for n in names])[..., None].astype("float32")
    model = build_unet(UNetConfig(base_filters=4, depth=3, input_size=size))
    model.compile(optimizer=keras.optimizers.RMSprop(2e-3), loss="binary_crossentropy")
    model.fit(x, y, batch_size=8, epochs=max(1, steps * 8 // len(names)), verbose=0)
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
    export_onnx(tiny_keras[0], path, dynamic_size=True, training_data="oxford_pets (96 trainval images, test fixture)")
    return path

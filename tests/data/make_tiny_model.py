"""Make tests/data/tiny_unet.onnx: the tiny real U-Net every inference test runs on.

    python tests/data/make_tiny_model.py        # needs the [train] extra (TensorFlow, Keras, tf2onnx)

Recipe (what tests/conftest.py used to train in every test session): a U-Net with 4 base filters and
depth 3 at 64x64, seed 0, RMSprop(2e-3), binary cross-entropy, batch 8, 240 steps, on the 16
trainval pairs of the in-repo fixture set (tests/data/pets) only, so it is reproducible from the
repository alone. It is exported with a dynamic size (any H, W multiple of 8, uint8 input, opset 17).

Also writes tests/data/tiny_unet.json: the Keras parameter count (what `unetlite info` must report)
and the model's IoU on the fixture pairs next to constant predictors, as a record that the masks
are meaningful. Reads only tests/data; writes only the two files above.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
PETS = HERE / "pets"
OUT = HERE / "tiny_unet.onnx"
RECORD = HERE / "tiny_unet.json"
SIZE, STEPS, SEED, BASE_FILTERS, DEPTH = 64, 240, 0, 4, 3


def names(split: str) -> list[str]:
    return (PETS / f"{split}.txt").read_text().split()


def mask(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """The trimap's pet pixels (trimap == 1) as 0/1 uint8, optionally resized nearest-neighbour."""
    from unetlite.infer import trimap_to_mask

    trimap = cv2.imread(str(PETS / "trimaps" / f"{name}.png"), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if size is not None and trimap.shape[:2] != size:
        trimap = cv2.resize(trimap, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return trimap_to_mask(trimap)


def train():
    """(Keras model, number of training images). Also used by tests/conftest.py's `tiny_keras`."""
    import keras

    from unetlite.infer import ModelContract, prepare, read_image
    from unetlite.train.model import UNetConfig, build_unet

    keras.utils.set_random_seed(SEED)
    contract = ModelContract(input_height=SIZE, input_width=SIZE)
    train_names = names("trainval")
    x = np.stack([prepare(read_image(PETS / "images" / f"{n}.jpg", apply_orientation=False), contract)
                  for n in train_names])
    y = np.stack([mask(n, (SIZE, SIZE)) for n in train_names])[..., None].astype("float32")
    repeat = -(-96 // len(train_names))  # few long epochs rather than many short ones
    x, y = np.concatenate([x] * repeat), np.concatenate([y] * repeat)
    model = build_unet(UNetConfig(base_filters=BASE_FILTERS, depth=DEPTH, input_size=SIZE))
    model.compile(optimizer=keras.optimizers.RMSprop(2e-3), loss="binary_crossentropy")
    model.fit(x, y, batch_size=8, epochs=max(1, STEPS * 8 // len(x)), verbose=0)
    return model, len(train_names)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def quality(path: Path) -> dict:
    """Mean IoU of the exported model (onnxruntime, full-size masks) on each split of the fixture
    pairs, and of the two constant predictors (all pet, all background) on the same pairs."""
    from unetlite.infer import Segmenter, read_image

    seg = Segmenter(path, providers="cpu")
    result = {}
    for split in ("trainval", "test"):
        model, everything = [], []
        for n in names(split):
            truth = mask(n)
            model.append(iou(seg(read_image(PETS / "images" / f"{n}.jpg", apply_orientation=False)).mask > 0, truth))
            everything.append(iou(np.ones_like(truth, bool), truth))
        result[split] = {"model_iou": round(float(np.mean(model)), 4), "all_pet_iou": round(float(np.mean(everything)), 4),
                         "all_background_iou": 0.0, "pairs": len(model)}
    return result


def main() -> None:
    import tensorflow as tf

    from unetlite.export.convert import export_onnx

    tf.config.experimental.enable_op_determinism()  # same weights on every run (CPU)
    model, count = train()
    export_onnx(model, OUT, dynamic_size=True,
                training_data=f"oxford_pets ({count} trainval images, tests/data/pets fixture)")
    record = {
        "file": OUT.name, "bytes": OUT.stat().st_size, "sha256": hashlib.sha256(OUT.read_bytes()).hexdigest(),
        "parameters": int(model.count_params()),
        "recipe": {"base_filters": BASE_FILTERS, "depth": DEPTH, "input_size": SIZE, "steps": STEPS, "seed": SEED,
                   "optimizer": "RMSprop(2e-3)", "loss": "binary_crossentropy", "batch_size": 8,
                   "data": "tests/data/pets trainval.txt"},
        "quality": quality(OUT),
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

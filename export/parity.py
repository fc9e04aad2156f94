"""Does the exported model segment like its source? Keras vs ONNX (and fp32 vs int8) on images.

Both sides get the same pixels: images are read with ``read_image`` and prepared with the
contract stored in the ONNX file (``prepare``), exactly as the engine does at run time.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from unetlite.infer.io.images import IMAGE_EXTENSIONS, ImageReadError, read_image
from unetlite.infer.pipeline.metrics import confusion, iou_from_counts, mask_iou
from unetlite.infer.engine.preprocess import prepare

log = logging.getLogger(__name__)

MIN_IOU = 0.999          # masks of the two models must agree on all but ~0.1% of foreground pixels
MAX_ABS_DIFF = 1e-3      # and probabilities within this (float32 conversion noise is ~1e-6)
BATCH = 8


@dataclass(frozen=True)
class ParityResult:
    """Agreement of two models' outputs on the same prepared images."""

    max_abs_diff: float      # largest |p_reference - p_candidate| over all pixels
    mask_iou: float          # IoU of the thresholded masks, pooled over all images (1.0 if both empty)
    images: int
    passed: bool
    min_image_iou: float = 1.0  # the worst single image

    def summary(self) -> str:
        return (f"max |diff| {self.max_abs_diff:.2e}, mask IoU {self.mask_iou:.6f} "
                f"(worst image {self.min_image_iou:.4f}) on {self.images} images")


def agreement(reference: np.ndarray, candidate: np.ndarray, threshold: float,
              min_iou: float = MIN_IOU, max_abs_diff: float | None = MAX_ABS_DIFF) -> ParityResult:
    """Compare NxHxW probability maps; ``max_abs_diff=None`` judges masks only (int8)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: {reference.shape} vs {candidate.shape}")
    diff = float(np.abs(reference.astype(np.float64) - candidate).max()) if reference.size else 0.0
    a, b = reference >= threshold, candidate >= threshold
    counts = [confusion(x, y) for x, y in zip(a, b)]
    pooled = iou_from_counts(sum(c[0] for c in counts), sum(c[1] for c in counts))
    worst = min((mask_iou(x, y) for x, y in zip(a, b)), default=1.0)
    passed = pooled >= min_iou and (max_abs_diff is None or diff <= max_abs_diff)
    return ParityResult(max_abs_diff=diff, mask_iou=pooled, images=len(reference), passed=passed,
                        min_image_iou=worst)


# ---- images -------------------------------------------------------------------------------------

def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(folder, "not a directory" if folder.exists() else "directory not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ImageReadError(folder, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def spread(items: Sequence, count: int) -> list:
    """``count`` items evenly spaced over the sequence: sorted datasets (by class name) stay diverse."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def read_images(files: Sequence[Path]) -> list[np.ndarray]:
    """Decode files as RGB; unreadable ones are logged and skipped."""
    images = []
    for path in files:
        try:
            images.append(read_image(path))
        except ImageReadError as exc:
            log.warning("skipped %s", exc)
    return images


def synthetic_images(count: int = 8, size: tuple[int, int] = (240, 320), seed: int = 0) -> list[np.ndarray]:
    """Smooth, deterministic RGB images (blurred colour fields with elliptical blobs).

    The offline fallback when no image folder is given: they exercise every layer with
    natural-looking, spatially correlated input, but they are not real photographs.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    images = []
    for _ in range(count):
        field = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
        image = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
        for _ in range(int(rng.integers(1, 4))):
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3)))
            color = tuple(float(c) for c in rng.uniform(0, 255, 3))
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        image = cv2.GaussianBlur(image, (0, 0), 2.0) + rng.normal(0, 3, image.shape).astype(np.float32)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


# ---- running the two sides ----------------------------------------------------------------------

@contextlib.contextmanager
def _model_file(model) -> Iterator[Path]:
    """A path for onnxruntime: the file itself, or serialized bytes/ModelProto in a temp file."""
    if isinstance(model, (str, os.PathLike)):
        yield Path(model)
        return
    data = model if isinstance(model, bytes) else model.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="unetlite-parity-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        yield path


def _batches(images: Sequence[np.ndarray], contract) -> Iterator[np.ndarray]:
    for start in range(0, len(images), BATCH):
        yield np.stack([prepare(img, contract) for img in images[start:start + BATCH]])


def onnx_probabilities(model, images: Sequence[np.ndarray]) -> tuple[np.ndarray, object]:
    """(NxHxW probabilities at the model's input size, the model's contract); CPU, like CI."""
    from unetlite.infer.engine.segmenter import Segmenter

    with _model_file(model) as path:
        segmenter = Segmenter(path, providers="cpu")
        probs = [segmenter.run(batch) for batch in _batches(images, segmenter.contract)]
    return np.concatenate(probs), segmenter.contract


def keras_probabilities(keras_model, images: Sequence[np.ndarray], contract) -> np.ndarray:
    return np.concatenate([np.asarray(keras_model.predict_on_batch(batch))[..., 0]
                           for batch in _batches(images, contract)])


def check_parity(keras_model, onnx_model, images: Sequence[np.ndarray], threshold: float | None = None,
                 min_iou: float = MIN_IOU, max_abs_diff: float = MAX_ABS_DIFF) -> ParityResult:
    """Keras vs ONNX on RGB uint8 ``images``, both fed by the ONNX file's own contract.

    ``onnx_model``: a path, serialized bytes or an onnx.ModelProto. ``threshold``
    defaults to the contract's.
    """
    if not len(images):
        raise ValueError("parity needs at least one image")
    onnx_probs, contract = onnx_probabilities(onnx_model, images)
    keras_probs = keras_probabilities(keras_model, images, contract)
    return agreement(keras_probs, onnx_probs, contract.threshold if threshold is None else threshold,
                     min_iou, max_abs_diff)

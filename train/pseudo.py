"""Pseudo-labels for unlabelled images: a teacher's confident pixels become training targets.

The teacher (any unetlite ONNX model, run by the TensorFlow-free engine) segments each
image and its mirror; the averaged probability is kept where it is confident
(>= ``high`` -> pet, <= ``low`` -> background) and the rest is marked IGNORE, so the
student is never taught the teacher's doubts. Images where the teacher is unsure over
much of the frame, or finds no pet at all, are left out.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from unetlite.infer.io.images import IMAGE_EXTENSIONS, ImageReadError, read_image
from unetlite.infer.engine.preprocess import resize_image
from unetlite.infer.engine.segmenter import Segmenter

from .data import Arrays

log = logging.getLogger(__name__)


def pseudo_label(folder: str | Path, teacher: str | Path, size: tuple[int, int], low: float = 0.1,
                 high: float = 0.9, max_unsure: float = 0.3, min_pet: float = 0.03,
                 batch_size: int = 8) -> Arrays:
    """Model-size images and {0, 1, IGNORE} masks for every usable image in ``folder``."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    segmenter = Segmenter(teacher, providers="cpu")
    names, images, masks, failed = [], [], [], []
    dropped = 0
    for start in range(0, len(files), batch_size):
        chunk, pictures = [], []
        for path in files[start:start + batch_size]:
            try:
                pictures.append(resize_image(read_image(path), size))
                chunk.append(path)
            except ImageReadError as exc:
                failed.append((exc.path, exc.reason))
        if not pictures:
            continue
        probs = segmenter.run(np.stack([segmenter.prepare(p) for p in pictures]), tta=True)
        for path, picture, prob in zip(chunk, pictures, probs):
            mask = np.full(prob.shape, 2, np.uint8)
            mask[prob >= high] = 1
            mask[prob <= low] = 0
            if (mask == 2).mean() > max_unsure or (mask == 1).mean() < min_pet:
                dropped += 1
                continue
            names.append(path.stem)
            images.append(picture)
            masks.append(mask)
    log.info("pseudo-labels: %d of %d images kept (%d too unsure or without a pet, %d unreadable)",
             len(names), len(files), dropped, len(failed))
    height, width = size
    return Arrays(names, np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8),
                  np.stack(masks) if masks else np.zeros((0, height, width), np.uint8), failed)

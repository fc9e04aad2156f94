"""Strong augmentation, applied identically to an image and its mask.

The reference paper's point is that a U-Net learns from very few images when the
training set is augmented hard; the original U-Net's key ingredient was elastic
deformation (random displacements on a coarse 3x3 grid, smoothly interpolated).
Everything here is numpy + OpenCV so it runs inside tf.data via numpy_function.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5                 # probability of a horizontal flip
    rotation_deg: float = 15.0         # uniform in [-r, r]
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.08                # fraction of the side, uniform in [-s, s]
    elastic: float = 0.5               # probability of an elastic deformation
    elastic_grid: int = 3              # coarse grid of random displacements (as in U-Net)
    elastic_std_px: float = 6.0        # displacement std at 256 px (10 px at the paper's 572 px tiles)
    brightness: float = 0.15           # additive, fraction of 255
    contrast: float = 0.2              # multiplicative, 1 +/- c


# For fine-tuning a model that has started to memorise its few training images.
STRONG = AugmentConfig(rotation_deg=25.0, scale=(0.7, 1.3), shift=0.12, elastic=0.7, elastic_std_px=8.0,
                       brightness=0.25, contrast=0.3)
PRESETS = {"standard": AugmentConfig(), "strong": STRONG, "none": None}


@lru_cache(maxsize=4)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def sample_maps(height: int, width: int, rng: np.random.Generator,
                cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps (for cv2.remap) combining a random affine warp and an elastic deformation."""
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    scale = rng.uniform(*cfg.scale)
    tx, ty = rng.uniform(-cfg.shift, cfg.shift, size=2) * (width, height)
    # Inverse affine: output pixel -> source pixel.
    forward = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    forward[:, 2] += (tx, ty)
    inverse = cv2.invertAffineTransform(forward).astype(np.float32)
    xs, ys = _grid(height, width)
    map_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    map_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    if rng.random() < cfg.elastic:
        std = cfg.elastic_std_px * max(height, width) / 256
        for m in (map_x, map_y):
            coarse = rng.normal(0.0, std, (cfg.elastic_grid, cfg.elastic_grid)).astype(np.float32)
            m += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return map_x, map_y


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """uint8 HxWx3 image and uint8 HxW mask -> augmented copies (same geometry for both)."""
    height, width = mask.shape[:2]
    map_x, map_y = sample_maps(height, width, rng, cfg)
    image = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < cfg.hflip:
        image, mask = cv2.flip(image, 1), cv2.flip(mask, 1)
    gain = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    bias = rng.uniform(-cfg.brightness, cfg.brightness) * 255 + (1 - gain) * 127.5
    image = cv2.convertScaleAbs(image, alpha=gain, beta=bias)  # saturating uint8
    return image, mask

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


@dataclass(frozen=True)
class PasteConfig:
    """Copy-paste: a labelled pet cut out with its mask and pasted onto a pet-free scene.

    Oxford photos show one big centred pet; pasting at many scales (down to ~3% of the frame),
    positions (cut by the border) and with occluders teaches shape over texture, so lawns
    and floors stop looking like fur.
    """

    probability: float = 0.5
    area: tuple[float, float] = (0.03, 0.6)   # pet bounding box / frame, log-uniform
    border_cut: float = 0.3                   # up to this fraction of the pet may leave the frame
    occlusion: float = 0.25                   # probability of an occluding patch over the pet


def random_crop(background: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random (height, width) crop of a background at least that large, randomly flipped."""
    height, width = size
    y = int(rng.integers(0, background.shape[0] - height + 1))
    x = int(rng.integers(0, background.shape[1] - width + 1))
    crop = background[y:y + height, x:x + width]
    return cv2.flip(crop, 1) if rng.random() < 0.5 else crop


def paste_pet(image: np.ndarray, mask: np.ndarray, background: np.ndarray, rng: np.random.Generator,
              cfg: PasteConfig = PasteConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Paste the pet of (image, mask) onto ``background`` (same size); returns the new pair."""
    ys, xs = np.nonzero(mask == 1)
    if ys.size < 16:
        return image, mask
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    height, width = mask.shape
    lo, hi = np.log(cfg.area[0]), np.log(cfg.area[1])
    area = float(np.exp(rng.uniform(lo, hi))) * height * width
    scale = np.sqrt(area / ((y1 - y0) * (x1 - x0)))
    ph, pw = max(2, int(round((y1 - y0) * scale))), max(2, int(round((x1 - x0) * scale)))
    if ph > 2 * height or pw > 2 * width:
        return image, mask
    pet = cv2.resize(image[y0:y1, x0:x1], (pw, ph), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize((mask[y0:y1, x0:x1] == 1).astype(np.float32), (pw, ph), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
    # Top-left corner: the pet may leave the frame by up to border_cut of its size on any side.
    cut_y, cut_x = int(cfg.border_cut * ph), int(cfg.border_cut * pw)
    top = int(rng.integers(-cut_y, max(-cut_y + 1, height - ph + cut_y + 1)))
    left = int(rng.integers(-cut_x, max(-cut_x + 1, width - pw + cut_x + 1)))
    fy0, fy1, fx0, fx1 = max(top, 0), min(top + ph, height), max(left, 0), min(left + pw, width)
    if fy1 <= fy0 or fx1 <= fx0:
        return image, mask
    a = alpha[fy0 - top:fy1 - top, fx0 - left:fx1 - left, None]
    out = background.astype(np.float32)
    out[fy0:fy1, fx0:fx1] = out[fy0:fy1, fx0:fx1] * (1 - a) + pet[fy0 - top:fy1 - top, fx0 - left:fx1 - left] * a
    new_mask = np.zeros_like(mask)
    new_mask[fy0:fy1, fx0:fx1] = (a[..., 0] >= 0.5)
    if rng.random() < cfg.occlusion:  # a patch of the scene in front of part of the pet
        oh = int((fy1 - fy0) * rng.uniform(0.15, 0.45)) + 1
        ow = int((fx1 - fx0) * rng.uniform(0.15, 0.45)) + 1
        oy = int(rng.integers(fy0, max(fy0 + 1, fy1 - oh + 1)))
        ox = int(rng.integers(fx0, max(fx0 + 1, fx1 - ow + 1)))
        sy, sx = int(rng.integers(0, height - oh + 1)), int(rng.integers(0, width - ow + 1))
        out[oy:oy + oh, ox:ox + ow] = background[sy:sy + oh, sx:sx + ow]
        new_mask[oy:oy + oh, ox:ox + ow] = 0
    return np.clip(out, 0, 255).astype(np.uint8), new_mask

"""Turning a segmentation into pictures: masks, cutouts, overlays, paper-style panels."""
from __future__ import annotations

import cv2
import numpy as np

# --format name -> file extension of what it writes
FORMATS = {"mask": ".png", "cutout": ".png", "overlay": ".jpg", "prob": ".png", "side-by-side": ".jpg"}
OVERLAY_COLOR = (0, 255, 0)  # RGB


def mask_image(mask: np.ndarray) -> np.ndarray:
    """0/1 mask -> 0/255 uint8 picture."""
    return (mask > 0).astype(np.uint8) * np.uint8(255)


def probability_image(probability: np.ndarray) -> np.ndarray:
    """[0,1] float map -> 8-bit grey picture."""
    return cv2.convertScaleAbs(probability, alpha=255.0)


def cutout(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGBA with the background transparent."""
    return np.dstack([rgb, mask_image(mask)])


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = OVERLAY_COLOR,
            alpha: float = 0.5) -> np.ndarray:
    """Tint the foreground with ``color``; cv2 blending and masked copy, no fancy indexing."""
    tint = np.empty_like(rgb)
    tint[:] = color
    blended = cv2.addWeighted(rgb, 1.0 - alpha, tint, alpha, 0.0)
    out = rgb.copy()
    cv2.copyTo(blended, mask.astype(np.uint8), out)
    return out


def composite(rgb: np.ndarray, mask: np.ndarray, background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """The foreground on a flat background colour (image*mask for black)."""
    out = np.empty_like(rgb)
    out[:] = background
    cv2.copyTo(rgb, mask.astype(np.uint8), out)
    return out


def side_by_side(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image | mask | image*mask, as in the reference paper's figures."""
    grey = cv2.cvtColor(mask_image(mask), cv2.COLOR_GRAY2RGB)
    return cv2.hconcat([rgb, grey, composite(rgb, mask)])


def render(fmt: str, rgb: np.ndarray, probability: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The picture ``unetlite segment --format fmt`` writes (RGB, RGBA or grey)."""
    if fmt == "mask":
        return mask_image(mask)
    if fmt == "prob":
        return probability_image(probability)
    if fmt == "cutout":
        return cutout(rgb, mask)
    if fmt == "overlay":
        return overlay(rgb, mask)
    if fmt == "side-by-side":
        return side_by_side(rgb, mask)
    raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")

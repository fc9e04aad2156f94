"""The one post-processing path: probability -> original size -> threshold -> clean-up.

segment, video, eval, serve and Ray all call :func:`postprocess`, so a mask never
depends on which command produced it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Segmentation:
    """One image's result at its original size."""

    probability: np.ndarray   # float32 HxW in [0, 1]
    mask: np.ndarray          # uint8 HxW, 1 = foreground
    threshold: float


def resize_probability(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Model-resolution probability map -> (height, width) with bilinear interpolation."""
    height, width = size
    if prob.shape == (height, width):
        return prob
    return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)


def clean_mask(mask: np.ndarray, min_fraction: float = 0.1) -> np.ndarray:
    """Keep the main foreground components and fill holes enclosed by them.

    A component survives when its area is at least ``min_fraction`` of the largest one;
    background regions that do not touch the border are filled.
    """
    mask = (mask > 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count > 2:  # background + more than one component
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = np.flatnonzero(areas >= min_fraction * areas.max()) + 1
        mask = np.isin(labels, keep).astype(np.uint8)
    # Holes: background components (4-connected) that do not touch the border.
    inverse = (1 - mask).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inverse, connectivity=4)
    if count > 2:
        h, w = mask.shape
        x, y, bw, bh = (stats[:, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                               cv2.CC_STAT_HEIGHT))
        touches = (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
        holes = np.flatnonzero(~touches[1:]) + 1
        if holes.size:
            mask[np.isin(labels, holes)] = 1
    return mask


def postprocess(probability: np.ndarray, size: tuple[int, int], threshold: float,
                clean: bool = False) -> Segmentation:
    """Model-resolution probability -> Segmentation at ``size`` (height, width)."""
    prob = resize_probability(np.asarray(probability, dtype=np.float32), size)
    mask = (prob >= threshold).astype(np.uint8)
    if clean:
        mask = clean_mask(mask)
    return Segmentation(prob, mask, threshold)

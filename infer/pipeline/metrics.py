"""Segmentation metrics on numpy masks (no TensorFlow): the numbers `unetlite eval` reports.

Same semantics as the training metric (unetlite.train.metrics): foreground IoU, and an
image where neither mask has any foreground scores 1.0.
"""
from __future__ import annotations

import numpy as np


def confusion(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """(intersection, union, correct, total) pixel counts of two same-shape binary masks.

    Counts, not ratios, so a whole dataset's IoU is sum(intersections) / sum(unions).
    """
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    intersection = int(np.count_nonzero(a & b))
    union = int(np.count_nonzero(a | b))
    total = int(a.size)
    correct = total - (union - intersection)  # pixels where a and b agree
    return intersection, union, correct, total


def iou_from_counts(intersection: int, union: int) -> float:
    """IoU from pixel counts; an empty union (nothing to find, nothing found) is a perfect 1.0."""
    return intersection / union if union else 1.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Foreground intersection over union; 1.0 when both masks are empty."""
    intersection, union, _, _ = confusion(a, b)
    return iou_from_counts(intersection, union)

"""Overlap-tile inference at native resolution, as in the original U-Net paper.

The image is mirror-padded (so border pixels get context), cut into overlapping
model-size tiles, and the tile predictions are blended with a smooth window
normalised by the summed weights, which leaves no seams.
"""
from __future__ import annotations

import numpy as np

TILE_BATCH = 8


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile origins covering [0, length); the last tile is aligned to the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def blend_window(height: int, width: int) -> np.ndarray:
    """Separable ramp (Hann-like) weights, never zero so every pixel is covered."""
    def ramp(n: int) -> np.ndarray:
        return np.maximum(np.hanning(n + 2)[1:-1], 1e-3).astype(np.float32)
    return np.outer(ramp(height), ramp(width))


def predict_tiled(segmenter, rgb: np.ndarray, overlap: float = 0.5) -> np.ndarray:
    """RGB uint8 image of any size -> float32 HxW probability at native resolution."""
    tile_h, tile_w = segmenter.contract.input_size
    height, width = rgb.shape[:2]
    margin_y, margin_x = int(tile_h * overlap / 2), int(tile_w * overlap / 2)
    # Pad: a margin of mirrored context all round, and at least one full tile in each direction.
    pad_y = max(0, tile_h - (height + 2 * margin_y))
    pad_x = max(0, tile_w - (width + 2 * margin_x))
    padded = np.pad(rgb, ((margin_y, margin_y + pad_y), (margin_x, margin_x + pad_x), (0, 0)), mode="reflect")
    full_h, full_w = padded.shape[:2]
    step_y, step_x = max(1, int(tile_h * (1 - overlap))), max(1, int(tile_w * (1 - overlap)))
    origins = [(y, x) for y in _starts(full_h, tile_h, step_y) for x in _starts(full_w, tile_w, step_x)]

    window = blend_window(tile_h, tile_w)
    total = np.zeros((full_h, full_w), np.float32)
    weight = np.zeros((full_h, full_w), np.float32)
    for i in range(0, len(origins), TILE_BATCH):
        chunk = origins[i:i + TILE_BATCH]
        batch = np.stack([segmenter.prepare(padded[y:y + tile_h, x:x + tile_w], (tile_h, tile_w)) for y, x in chunk])
        for (y, x), prob in zip(chunk, segmenter.run(batch)):
            total[y:y + tile_h, x:x + tile_w] += prob * window
            weight[y:y + tile_h, x:x + tile_w] += window
    return (total / weight)[margin_y:margin_y + height, margin_x:margin_x + width]

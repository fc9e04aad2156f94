"""Preprocessing: the single source of truth, shared by training and inference.

Training (``unetlite.train``) imports these functions so a model never sees pixels
prepared differently from the ones it was trained on.
"""
from __future__ import annotations

import cv2
import numpy as np

from .contract import ModelContract

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}


def resize_image(rgb: np.ndarray, size: tuple[int, int], method: str = ModelContract.resize) -> np.ndarray:
    """Resize an HxWxC uint8 image to (height, width) with the contract's interpolation.

    "area" averages when shrinking, which is what keeps a 12 MP photo's mask the same as
    its small copy's (INTER_LINEAR skips pixels and aliases); OpenCV's INTER_AREA acts
    like nearest-neighbour when enlarging, so enlargement uses bilinear interpolation.
    """
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    interpolation = _INTERPOLATION[method]
    if method == "area" and (height > rgb.shape[0] or width > rgb.shape[1]):
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label map; nearest-neighbour keeps label values exact."""
    height, width = size
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def to_float(rgb: np.ndarray, contract: ModelContract = ModelContract()) -> np.ndarray:
    """uint8 RGB -> float32 model input (channel order and scale from the contract)."""
    if contract.channel_order.upper() == "BGR":
        rgb = rgb[..., ::-1]
    out = rgb.astype(np.float32)
    out *= np.float32(contract.scale)
    return out


def prepare(rgb: np.ndarray, contract: ModelContract = ModelContract(),
            size: tuple[int, int] | None = None) -> np.ndarray:
    """One RGB uint8 image -> float32 HxWx3 model input at ``size`` (default: the contract's)."""
    return to_float(resize_image(rgb, size or contract.input_size, contract.resize), contract)


def trimap_to_mask(trimap: np.ndarray) -> np.ndarray:
    """Oxford-IIIT Pet trimap (1 pet, 2 background, 3 border) -> binary uint8 mask (pet = 1)."""
    return (trimap == 1).astype(np.uint8)


TRIMAP_BORDER = 3


def outline_band(label: np.ndarray, kind: str = "trimap") -> np.ndarray | None:
    """The trimap's border class (a band over the pet's outline) as a bool mask; None for 0/255 masks,
    which have no such band. Scoring conventions differ on it: Oxford counts it as background."""
    return label == TRIMAP_BORDER if kind == "trimap" else None


def label_to_mask(label: np.ndarray, kind: str = "trimap") -> np.ndarray:
    """A stored label (Oxford trimap, or a 0/255 binary mask) -> binary uint8 mask (pet = 1)."""
    if kind == "mask":
        return (label >= 128).astype(np.uint8)
    return trimap_to_mask(label)


def prepare_input(rgb: np.ndarray, contract: ModelContract, size: tuple[int, int] | None = None,
                  dtype: str = "float32") -> np.ndarray:
    """One RGB uint8 image -> HxWx3 model input: float32 scaled, or uint8 pixels for a model
    that scales inside its graph (4x fewer bytes to copy)."""
    if dtype != "uint8":
        return prepare(rgb, contract, size)
    pixels = resize_image(rgb, size or contract.input_size, contract.resize)
    return pixels[..., ::-1] if contract.channel_order.upper() == "BGR" else pixels

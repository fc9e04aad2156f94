"""Soft edges: an edge-aware alpha matte from a binary mask and the picture, and alpha compositing.

The model's mask is computed at model resolution and scaled up, so its edge is a blurry staircase
that cuts straight through fur. A guided filter (He, Sun and Tang, "Guided Image Filtering", 2010;
the fast variant of He and Sun, 2015) fits, in every small window, alpha as a linear function of
the picture's brightness: where the picture has an edge (fur against the floor) alpha follows it,
where it is flat alpha stays smooth. It is a handful of box filters (cv2.boxFilter), so it runs in
a few milliseconds per HD frame; the coefficients are computed at a reduced size and scaled up
(the fast guided filter), the alpha itself at full resolution.

Guarantees the compositing tests rely on: alpha is exactly 0 farther than ``radius`` pixels
outside the mask and exactly 1 farther than ``radius`` inside it (the filter of a constant window
is that constant; values within 1/255 of 0 or 1 are snapped), so a replaced background is the
replacement, untouched, away from the subject.
"""
from __future__ import annotations

import cv2
import numpy as np

EDGES = ("soft", "hard")
DEFAULT_EPS = 1e-3         # regularisation, in (brightness in [0, 1])^2: smaller follows edges harder
WORK_SIDE = 360            # coefficients are computed with the shorter side at most this (fast guided filter)
SNAP = 1.0 / 255.0         # alpha within this of 0 or 1 is made exactly 0 or 1


def default_radius(height: int, width: int) -> int:
    """The window radius for a picture of this size: about 1/120 of its shorter side, at least 2 px."""
    return max(2, round(min(height, width) / 120))


def _grey(picture: np.ndarray) -> np.ndarray:
    """Brightness in [0, 1], float32 (channel order does not matter for a guide)."""
    if picture.ndim == 3 and picture.shape[2] >= 3:
        picture = cv2.cvtColor(np.ascontiguousarray(picture[..., :3]), cv2.COLOR_BGR2GRAY)
    return picture.astype(np.float32) * np.float32(1.0 / 255.0)


def _coefficients(guide: np.ndarray, target: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's window-averaged linear coefficients (mean_a, mean_b): output = mean_a * guide + mean_b."""
    box = (2 * radius + 1, 2 * radius + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, box, borderType=cv2.BORDER_REFLECT)

    mean_i = mean(guide)
    mean_p = mean(target)
    cov_ip = mean(cv2.multiply(guide, target)) - mean_i * mean_p
    var_i = mean(cv2.multiply(guide, guide)) - mean_i * mean_i
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return mean(a), mean(b)


def guided_filter(guide: np.ndarray, target: np.ndarray, radius: int, eps: float = DEFAULT_EPS,
                  work_side: int | None = WORK_SIDE) -> np.ndarray:
    """Guided filter of ``target`` (float32 HxW) by ``guide`` (float32 HxW, values in [0, 1]).

    ``work_side``: compute the linear coefficients with the picture's shorter side scaled to at
    most this many pixels, then scale them up and apply them at full resolution (None: no scaling).
    """
    height, width = target.shape[:2]
    scale = 1.0 if work_side is None else min(1.0, work_side / min(height, width))
    if scale >= 1.0:
        mean_a, mean_b = _coefficients(guide, target, radius, eps)
        return mean_a * guide + mean_b
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    mean_a, mean_b = _coefficients(cv2.resize(guide, size, interpolation=cv2.INTER_AREA),
                                   cv2.resize(target, size, interpolation=cv2.INTER_AREA),
                                   max(1, round(radius * scale)), eps)
    # Full-resolution work only where the result can differ from the target: the band around its
    # edge (elsewhere mean_a is ~0 and mean_b is the constant target). Its bounding box, with a margin.
    band = (np.abs(mean_a) > 1e-4) | ((mean_b > 1e-4) & (mean_b < 1.0 - 1e-4))
    out = target.copy()
    rows, cols = np.flatnonzero(band.any(axis=1)), np.flatnonzero(band.any(axis=0))
    if rows.size == 0:
        return out
    fy, fx = height / size[1], width / size[0]
    y0, y1 = max(0, int((rows[0] - 2) * fy)), min(height, int((rows[-1] + 3) * fy) + 1)
    x0, x1 = max(0, int((cols[0] - 2) * fx)), min(width, int((cols[-1] + 3) * fx) + 1)
    # Scale the coefficients up to full size (only the box is kept): warpAffine maps exactly the
    # same pixel centres as a full resize would, without computing the rest.
    m = np.float32([[1 / fx, 0, ((x0 + 0.5) / fx - 0.5)], [0, 1 / fy, ((y0 + 0.5) / fy - 0.5)]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    box_a = cv2.warpAffine(mean_a, m, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    box_b = cv2.warpAffine(mean_b, m, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    out[y0:y1, x0:x1] = box_a * guide[y0:y1, x0:x1] + box_b
    return out


def soft_alpha(picture: np.ndarray, mask: np.ndarray, radius: int | None = None, eps: float = DEFAULT_EPS,
               work_side: int | None = WORK_SIDE) -> np.ndarray:
    """Edge-aware alpha (float32 HxW in [0, 1]) for ``mask`` (0/1, HxW) guided by ``picture``
    (HxW grey or HxWx3/4 uint8 at the mask's size). Exactly 0 / 1 away from the mask's edge
    (see the module doc)."""
    mask = np.asarray(mask)
    height, width = mask.shape[:2]
    if picture.shape[:2] != (height, width):
        raise ValueError(f"picture {picture.shape[:2]} and mask {mask.shape[:2]} differ in size")
    r = radius if radius is not None else default_radius(height, width)
    target = (mask > 0).astype(np.float32)
    if not target.any() or target.all():
        return target
    alpha = guided_filter(_grey(picture), target, r, eps, work_side)
    # Snap: within 1/255 of 0 or 1 is exactly 0 or 1 (float rounding of constant windows included).
    cv2.threshold(alpha, SNAP, 0.0, cv2.THRESH_TOZERO, dst=alpha)
    alpha[alpha > 1.0 - SNAP] = 1.0
    return alpha


def hard_alpha(mask: np.ndarray) -> np.ndarray:
    """The binary mask as an alpha (float32 0/1)."""
    return (np.asarray(mask) > 0).astype(np.float32)


def alpha_for(edge: str, picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``--edge soft`` (guided filter) or ``hard`` (the binary mask)."""
    if edge == "hard":
        return hard_alpha(mask)
    if edge == "soft":
        return soft_alpha(picture, mask)
    raise ValueError(f"unknown edge {edge!r}; choose from {', '.join(EDGES)}")


def alpha_channel(alpha: np.ndarray) -> np.ndarray:
    """float alpha in [0, 1] -> uint8 0..255."""
    return cv2.convertScaleAbs(alpha, alpha=255.0)


def blend(foreground: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """foreground * alpha + background * (1 - alpha), uint8 HxWxC (cv2.blendLinear: one pass).
    Where alpha is exactly 0 the result is exactly ``background``, where 1 exactly ``foreground``."""
    if background.shape != foreground.shape:
        raise ValueError(f"background {background.shape} and foreground {foreground.shape} differ")
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    out = cv2.blendLinear(foreground, background, alpha, np.float32(1.0) - alpha)
    # blendLinear rounds (w1*a + w2*b) / (w1 + w2 + eps): pin the exact 0 and 1 regions.
    cv2.copyTo(background, (alpha == 0.0).astype(np.uint8), out)
    cv2.copyTo(foreground, (alpha == 1.0).astype(np.uint8), out)
    return out


def premultiplied_cutout(picture: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """HxWx4 uint8: the picture with ``alpha`` as its 4th channel, colour zeroed where alpha is 0
    (nothing of the removed background is recoverable by dropping the alpha channel)."""
    a8 = alpha_channel(alpha)
    rgb = picture[..., :3].copy()
    rgb[a8 == 0] = 0
    return np.dstack([rgb, a8])

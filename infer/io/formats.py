"""The output-format registry: what each ``--format`` writes, and how it is drawn.

One entry per format: extension, media type, whether it shows the photo's own pixels (else the
decoder may drop them), the writer's working bytes per pixel (what the read-ahead budget
reserves), whether a video can carry it, and its render function. segment, video and serve take
their choices, help, extensions and media types from :data:`FORMATS`; a new format is one
:func:`register` call (or entry) plus its render function.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

OVERLAY_COLOR = (0, 255, 0)  # RGB
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg"}


@dataclass(frozen=True)
class Style:
    """Colours a render may use, in the picture's own channel order (video frames are BGR)."""

    overlay: tuple[int, int, int] = OVERLAY_COLOR
    background: tuple[int, int, int] = (0, 0, 0)

    def reversed(self) -> "Style":
        """The same colours for a BGR picture."""
        return replace(self, overlay=self.overlay[::-1], background=self.background[::-1])


Render = Callable[[np.ndarray, np.ndarray, np.ndarray, Style], np.ndarray]  # (pixels, probability, mask, style)


@dataclass(frozen=True)
class OutputFormat:
    name: str
    extension: str                 # what segment writes: ".png", ".jpg"
    needs_pixels: bool             # shows the photo (False: mask/prob may decode at reduced size)
    writer_bytes_per_pixel: int    # float probability, mask, picture, colour conversion, encoder buffers
    render: Render
    help: str
    video: bool = True             # a video frame can carry it (3 channels or grey)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.extension]


def mask_image(mask: np.ndarray) -> np.ndarray:
    """0/1 mask -> 0/255 uint8 picture."""
    return (mask > 0).astype(np.uint8) * np.uint8(255)


def probability_image(probability: np.ndarray) -> np.ndarray:
    """[0,1] float map -> 8-bit grey picture."""
    import cv2  # here, not at import: the CLI reads this registry for --help
    return cv2.convertScaleAbs(probability, alpha=255.0)


def cutout(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGBA with the background transparent, and its RGB zeroed: dropping the alpha channel must
    not bring the background back (and zeros compress: a 12 MP cutout is a fraction of the size)."""
    alpha = mask_image(mask)
    out = np.zeros((*rgb.shape[:2], 4), np.uint8)
    np.copyto(out[..., :3], rgb, where=(alpha > 0)[..., None])
    out[..., 3] = alpha
    return out


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = OVERLAY_COLOR,
            alpha: float = 0.5) -> np.ndarray:
    """Tint the foreground with ``color``; cv2 blending and masked copy, no fancy indexing."""
    import cv2  # here, not at import: the CLI reads this registry for --help
    tint = np.empty_like(rgb)
    tint[:] = color
    blended = cv2.addWeighted(rgb, 1.0 - alpha, tint, alpha, 0.0)
    out = rgb.copy()
    cv2.copyTo(blended, mask.astype(np.uint8), out)
    return out


def composite(rgb: np.ndarray, mask: np.ndarray, background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """The foreground on a flat background colour (image*mask for black)."""
    import cv2  # here, not at import: the CLI reads this registry for --help
    out = np.empty_like(rgb)
    out[:] = background
    cv2.copyTo(rgb, mask.astype(np.uint8), out)
    return out


def side_by_side(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image | mask | image*mask, as in the reference paper's figures."""
    import cv2  # here, not at import: the CLI reads this registry for --help
    grey = cv2.cvtColor(mask_image(mask), cv2.COLOR_GRAY2RGB)
    return cv2.hconcat([rgb, grey, composite(rgb, mask)])


FORMATS: dict[str, OutputFormat] = {}


def register(fmt: OutputFormat) -> OutputFormat:
    """Add a format: segment, video (when ``fmt.video``) and serve offer it from then on."""
    FORMATS[fmt.name] = fmt
    return fmt


register(OutputFormat("mask", ".png", False, 8, lambda px, prob, mask, style: mask_image(mask),
                      "0/255 PNG"))
register(OutputFormat("cutout", ".png", True, 20, lambda px, prob, mask, style: cutout(px, mask),
                      "RGBA PNG, background transparent", video=False))
register(OutputFormat("overlay", ".jpg", True, 20,
                      lambda px, prob, mask, style: overlay(px, mask, color=style.overlay), "tinted foreground, JPEG"))
register(OutputFormat("prob", ".png", False, 8, lambda px, prob, mask, style: probability_image(prob),
                      "8-bit probability PNG"))
register(OutputFormat("side-by-side", ".jpg", True, 36, lambda px, prob, mask, style: side_by_side(px, mask),
                      "image | mask | image*mask, JPEG"))
register(OutputFormat("composite", ".png", True, 20,
                      lambda px, prob, mask, style: composite(px, mask, style.background),
                      "the foreground on a flat background colour, PNG"))

# Old spellings still accepted by `unetlite video`: its "cutout" was the pet on a colour.
VIDEO_ALIASES = {"cutout": "composite"}


def get(name: str) -> OutputFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown output format {name!r}; choose from {', '.join(FORMATS)}") from None


def video_formats() -> tuple[str, ...]:
    """The formats a video can carry."""
    return tuple(name for name, fmt in FORMATS.items() if fmt.video)


def help_text(names) -> str:
    """'name: what it is' for each format, for --format's help."""
    return "; ".join(f"{name}: {FORMATS[name].help}" for name in names)


def render(fmt: str, rgb: np.ndarray, probability: np.ndarray, mask: np.ndarray, style: Style = Style()) -> np.ndarray:
    """The picture ``unetlite segment --format fmt`` writes (RGB, RGBA or grey)."""
    return get(fmt).render(rgb, probability, mask, style)

"""The shared steps from pixels to output bytes: decode, prepare, infer a batch, post-process, encode.

segment, eval, video, serve and Ray all run these functions, so an output never depends on which
front end produced it. ``segmenter`` arguments need only what each step uses (``contract`` and
``prepare`` for decoding: Ray's read tasks pass a picklable :class:`ModelInputs`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..engine.contract import ModelContract
from ..engine.postprocess import Segmentation, postprocess
from ..engine.preprocess import prepare_input
from ..io import formats
from ..io.images import DEFAULT_MAX_PIXELS

Reserve = Callable[[int], None]


@dataclass(frozen=True)
class SegmentSettings:
    """How a run segments and writes (the pixel-changing part is the manifest's OutputConfig)."""

    fmt: str = "mask"
    batch_size: int = 4
    tile: bool = False
    threshold: float | None = None      # None: the model's
    clean: bool = False
    tta: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    reduced_decode: bool = True          # mask/prob: decode JPEGs at reduced size, write at full size
    workers: int | None = None           # reader and writer threads (default: from usable CPUs)
    budget_bytes: int | None = None      # read-ahead memory (default: readahead.DEFAULT_BUDGET_BYTES)
    # --background (a backgrounds.BackgroundSpec; format composite) and --edge for cutout/composite/
    # overlay. "hard" without a background: the plain format's pixels (the library's default; the
    # CLI's is soft). mask, prob and side-by-side never change. See backgrounds.render_photo.
    background: object | None = None
    edge: str = "hard"


@dataclass
class Decoded:
    """A loaded image: what inference and the writer need of it."""

    rgb: np.ndarray | None          # None once only the model input is needed (mask/prob)
    model_input: np.ndarray | None  # None in tile mode
    size: tuple[int, int]           # the output's (height, width): the oriented original
    alpha: np.ndarray | None = None  # the input's own alpha (8-bit, output size): 0 stays background


@dataclass(frozen=True)
class ModelInputs:
    """What decoding needs to prepare inputs exactly as ``Segmenter.prepare`` does, without a
    session: picklable (Ray's read tasks), and built from the file's metadata alone."""

    contract: ModelContract
    input_dtype: str

    def prepare(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        return prepare_input(rgb, self.contract, size, self.input_dtype)


def keeps_rgb(settings: SegmentSettings) -> bool:
    """Whether the photo's pixels are needed after decoding: tiling reads them, and so does every
    format that shows them."""
    return settings.tile or formats.get(settings.fmt).needs_pixels


def working_bytes_per_pixel(settings: SegmentSettings) -> int:
    """Memory the decoder reserves per output pixel beyond the RGB pixels themselves."""
    return formats.get(settings.fmt).writer_bytes_per_pixel + (8 if settings.tile else 0)


def prepare_pixels(segmenter, pixels: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """The prepare step: pixels -> the model's input (its size, dtype and channel order).

    BGR pixels (video frames) are prepared with the contract's channel order flipped, which feeds
    the model exactly what the RGB conversion would, without converting the full frame.
    """
    if channel_order.upper() == "RGB":
        return segmenter.prepare(pixels)
    contract = segmenter.contract
    flipped = "RGB" if contract.channel_order.upper() == "BGR" else "BGR"
    return prepare_input(pixels, dataclasses.replace(contract, channel_order=flipped), dtype=segmenter.input_dtype)


def as_decoded(segmenter, rgb: np.ndarray, size: tuple[int, int], settings: SegmentSettings) -> Decoded:
    """A decoded picture -> what inference and the writer keep of it (``size``: the output's)."""
    return Decoded(rgb if keeps_rgb(settings) else None, None if settings.tile else prepare_pixels(segmenter, rgb),
                   (int(size[0]), int(size[1])))


def decode(segmenter, settings: SegmentSettings, data: bytes, name: str | Path, reserve: Reserve,
           apply_orientation: bool = True) -> Decoded:
    """The decode step for encoded image bytes: read the header, reserve the memory the image will
    need, decode (reduced when the output never shows the photo's pixels), prepare.

    Input alpha is respected: transparent pixels are composited on neutral grey for the model and
    stay background in every output (the mask is ANDed with alpha > 0)."""
    from ..io.images import HEAD_BYTES, check_head, decode_image_alpha, image_size

    reduce = settings.reduced_decode and not keeps_rgb(settings)
    per_pixel = working_bytes_per_pixel(settings)
    check_head(name, data[:HEAD_BYTES], len(data), apply_orientation, settings.max_pixels)  # same refusals as files
    size = image_size(data, apply_orientation)
    if size is not None and (settings.max_pixels is None or size[0] * size[1] <= settings.max_pixels):
        reserve(len(data) + size[0] * size[1] * (3 + per_pixel))  # decode_image refuses the rest unallocated
    rgb, alpha = decode_image_alpha(data, name, apply_orientation, settings.max_pixels,
                                    reduce_to=segmenter.contract.input_size if reduce and size else None)
    if size is None:  # header not readable here: OpenCV's own limit bounded the decode
        size = rgb.shape[:2]
        reserve(size[0] * size[1] * (3 + per_pixel))
    decoded = as_decoded(segmenter, rgb, size, settings)
    decoded.alpha = alpha
    return decoded


def image_decoder(segmenter, settings: SegmentSettings, apply_orientation: bool = True) -> Callable:
    """``decode(data, name, reserve) -> Decoded``: :func:`decode` with its settings bound."""
    return lambda data, name, reserve: decode(segmenter, settings, data, name, reserve, apply_orientation)


def load(segmenter, settings: SegmentSettings, path: Path, reserve: Reserve, apply_orientation: bool = True) -> Decoded:
    """A file's bytes (bounded by what ``max_pixels`` allows), then :func:`decode`.

    The memory is reserved before the bytes are read: the file's size plus what its header
    (in the first megabyte) says the decode needs. A file refused by its header (over the limit,
    a video, an unknown format, far larger than its pixels) is never read further. When the
    header is further in, the item reserves as if it had ``max_pixels`` (it runs alone)."""
    from ..io.images import byte_limit, check_head, read_bytes

    per_pixel = 3 + working_bytes_per_pixel(settings)

    def before_rest(head: bytes, size: int) -> None:
        dims = check_head(path, head, size, apply_orientation, settings.max_pixels)
        pixels = dims[0] * dims[1] if dims else (settings.max_pixels or DEFAULT_MAX_PIXELS)
        reserve(size + pixels * per_pixel)   # once: decode's own reserve() is then a no-op

    return decode(segmenter, settings, read_bytes(path, byte_limit(settings.max_pixels), before_rest), path,
                  reserve, apply_orientation)


def image_loader(segmenter, settings: SegmentSettings, apply_orientation: bool = True) -> Callable:
    """The read-ahead loader ``load(path, reserve) -> Decoded`` of segment and eval."""
    return lambda path, reserve: load(segmenter, settings, path, reserve, apply_orientation)


def infer_batch(segmenter, decoded: Sequence[Decoded], tile: bool = False, tta: bool = False) -> list[np.ndarray]:
    """The infer step: probabilities for a batch at model resolution, or full size in tile mode
    (``tta``: flip-averaged by the Segmenter)."""
    if tile:
        return segmenter.probabilities([d.rgb for d in decoded], tile=True, tta=tta)
    return list(segmenter.run(np.stack([d.model_input for d in decoded]), tta=tta))


def post_process(probability: np.ndarray, size: tuple[int, int], threshold: float, clean: bool) -> Segmentation:
    """The post-process step (the engine's one ``postprocess``)."""
    return postprocess(probability, size, threshold, clean)


def render(settings: SegmentSettings, pixels: np.ndarray | None, seg: Segmentation,
           style: formats.Style = formats.Style()) -> np.ndarray:
    """The format's picture of one result (with ``settings.background`` / a soft ``settings.edge``:
    backgrounds.render_photo's)."""
    edge = getattr(settings, "edge", "hard")
    background = getattr(settings, "background", None)
    if pixels is not None and (background is not None or edge != "hard"):
        from .backgrounds import render_photo, uses_photo_render
        if uses_photo_render(settings.fmt, background, edge):
            return render_photo(settings.fmt, pixels, seg.mask, background, edge, style)
    return formats.get(settings.fmt).render(pixels, seg.probability, seg.mask, style)


def encode_output(decoded: Decoded, probability: np.ndarray, settings: SegmentSettings, threshold: float) -> bytes:
    """The encode step: post-process, the format's picture, encoded as the format's file type."""
    from ..io.images import encode_image

    seg = post_process(probability, decoded.size, threshold, settings.clean)
    if decoded.alpha is not None and decoded.alpha.shape[:2] == seg.mask.shape[:2]:
        transparent = decoded.alpha == 0   # what the input already removed stays removed
        seg.mask[transparent] = 0
        seg.probability[transparent] = 0
    return encode_image(render(settings, decoded.rgb, seg), formats.get(settings.fmt).extension)

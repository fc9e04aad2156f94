"""Reading untrusted images safely; writing encoded images atomically.

Reading: the size is read from the file's header first (``headers``: no pixel is decoded)
so an image over the pixel limit is refused by name before it can allocate anything;
truncation is judged by the file's structure, so data after the end marker (phone
trailers) is accepted; JPEGs far larger than needed decode at 1/2, 1/4 or 1/8 size inside
libjpeg (``reduce_to``). OpenCV's own pixel limit is set as a backstop for anything the
header readers do not know.

Writing: ``write_image`` encodes and hands the bytes to ``atomic.write_atomic`` (temp file,
fsync, rename, folder fsync). The names of ``headers`` and ``atomic`` that callers use are
re-exported here.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .headers import DEFAULT_MAX_PIXELS  # noqa: E402  (no cv2 there: the CLI's --help reads it)

# OpenCV reads this variable once, when cv2 is first imported (checked with opencv-python 5.0):
# setting it later has no effect. It bounds decodes of formats whose size we cannot read.
OPENCV_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
if "cv2" not in sys.modules:
    os.environ.setdefault(OPENCV_LIMIT_ENV, str(DEFAULT_MAX_PIXELS))

import cv2  # noqa: E402  (after the environment variable above)
import numpy as np  # noqa: E402

# headers.py and atomic.py import no OpenCV; their public names are re-exported from here
from ..errors import UnetliteError  # noqa: E402
from .atomic import STALE_TEMP_SECONDS, WriteError, commit_temp, display_path  # noqa: E402,F401
from .atomic import is_temp_name, make_temp, remove_stale_temps, write_atomic  # noqa: E402,F401
from .headers import _jpeg_complete, _png_chunks, image_size  # noqa: E402

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".pam", ".jp2", ".j2k"})

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class ImageReadError(UnetliteError):
    """An input that cannot be used; str() is "path: reason" on one line.

    ``path`` is the printable form (``display_path``); ``reason`` is one line.
    """

    def __init__(self, path: str | bytes | os.PathLike, reason: str):
        self.path = display_path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLarge(ImageReadError):
    """The image has more pixels than the limit; refused before decoding."""


# ---------------------------------------------------------------- truncation by structure

def _check_complete(path: str | os.PathLike, data: bytes) -> None:
    """Refuse truncated JPEG/PNG files, which OpenCV would decode silently as half-grey images."""
    if data[:2] == b"\xff\xd8" and not _jpeg_complete(data):
        raise ImageReadError(path, "truncated JPEG: data ends before the end-of-image marker")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if not any(ctype == b"IEND" for ctype, _, _ in _png_chunks(data)):
            raise ImageReadError(path, "truncated PNG: data ends before the IEND chunk")


# ---------------------------------------------------------------- decoding

def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 10_000_000 else f"{pixels / 1e6:.1f} MP"


def _too_large(path, height: int, width: int, max_pixels: int, what: str = "--max-pixels") -> ImageTooLarge:
    return ImageTooLarge(path, f"image is {width}x{height} = {_megapixels(width * height)}, over the "
                               f"{_megapixels(max_pixels)} limit ({what})")


def _check_size(path, size: tuple[int, int] | None, max_pixels: int | None) -> None:
    if max_pixels is not None and size is not None and size[0] * size[1] > max_pixels:
        raise _too_large(path, size[0], size[1], max_pixels)


def _imdecode(path, data: bytes, flags: int, size: tuple[int, int] | None) -> np.ndarray | None:
    """cv2.imdecode with OpenCV's exceptions turned into one-line ImageReadErrors."""
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            limit = int(os.environ.get(OPENCV_LIMIT_ENV, 1 << 30))
            how = f"OpenCV's {OPENCV_LIMIT_ENV}; set it before starting to raise it"
            if size is not None:
                raise _too_large(path, size[0], size[1], limit, how) from None
            raise ImageTooLarge(path, f"image is over the {_megapixels(limit)} limit ({how})") from None
        detail = (exc.err or str(exc)).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImageReadError(path, f"not a decodable image (OpenCV: {detail})") from None
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode this image") from None


def _reduction(data: bytes, size: tuple[int, int] | None, reduce_to: tuple[int, int] | None) -> int:
    """1, 2, 4 or 8: the largest factor that keeps both sides >= ``reduce_to``.

    Only for JPEG, where libjpeg scales in the DCT (that is what makes it fast); OpenCV would
    decode other formats at full size and shrink them with linear interpolation.
    """
    if reduce_to is None or size is None or data[:2] != b"\xff\xd8":
        return 1
    for factor in (8, 4, 2):
        if size[0] >= factor * reduce_to[0] and size[1] >= factor * reduce_to[1]:
            return factor
    return 1


# IMREAD_REDUCED_COLOR_N includes IMREAD_COLOR (BGR), which OpenCV 5 refuses next to
# IMREAD_COLOR_RGB: keep only the scale bits.
_REDUCED = {factor: (flag & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB for factor, flag in
            ((1, 0), (2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))}


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", apply_orientation: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 reduce_to: tuple[int, int] | None = None) -> np.ndarray:
    """Decode encoded image bytes as HxWx3 uint8 RGB (``path`` only names them in errors).

    The header is read first: an image over ``max_pixels`` (None: no limit) raises
    ImageTooLarge before anything is decoded. Truncated JPEG/PNG raise ImageReadError.
    ``reduce_to`` (height, width): a JPEG at least 2x/4x/8x larger in both sides is decoded
    at 1/2, 1/4 or 1/8 size (still RGB, still EXIF-oriented) -- for callers that shrink it
    anyway; they learn the original size from ``image_size``.
    """
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    size = image_size(data, apply_orientation)
    _check_size(path, size, max_pixels)
    _check_complete(path, data)
    factor = _reduction(data, size, reduce_to)
    flags = _REDUCED[factor]
    if not apply_orientation:
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    image = _imdecode(path, data, flags, size)
    if image is None or image.size == 0:
        raise ImageReadError(path, "not a decodable image (unknown format or corrupt data)")
    if size is None:  # a format whose header we cannot read: OpenCV's limit bounded the decode
        _check_size(path, image.shape[:2], max_pixels)
    return image


# No format stores a pixel in more than 12 bytes (float RGB); a bigger file is not an image
# within the pixel limit, and reading it whole would defeat the limit.
MAX_BYTES_PER_PIXEL = 12


def byte_limit(max_pixels: int | None) -> int | None:
    """The largest file ``read_bytes`` accepts for an image of at most ``max_pixels``."""
    return None if max_pixels is None else MAX_BYTES_PER_PIXEL * max_pixels + (1 << 20)


def read_bytes(path: str | os.PathLike, max_bytes: int | None = byte_limit(DEFAULT_MAX_PIXELS)) -> bytes:
    """A file's bytes for ``decode_image``/``image_size``, never more than ``max_bytes``.

    ImageReadError (one line) when the file is missing, a folder, unreadable or empty;
    ImageTooLarge when it holds more than ``max_bytes`` (None: no limit).
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if max_bytes is None or size <= max_bytes:
                # read at most one byte too many: a file that grows, or a device, stays bounded
                data = fh.read(-1 if max_bytes is None else max_bytes + 1)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if max_bytes is not None and (size > max_bytes or len(data) > max_bytes):
        raise ImageTooLarge(path, f"file is over {max_bytes / 1e9:.2g} GB, more than any image within "
                                  f"the pixel limit takes (--max-pixels)")
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def read_image(path: str | os.PathLike, apply_orientation: bool = True,
               max_pixels: int | None = DEFAULT_MAX_PIXELS,
               reduce_to: tuple[int, int] | None = None) -> np.ndarray:
    """Read any image file as HxWx3 uint8 RGB.

    Grayscale, RGBA, palette, 16-bit and CMYK inputs become 8-bit RGB; EXIF
    orientation is applied unless ``apply_orientation`` is False (training data,
    whose label maps are aligned with the stored pixels).
    Raises ImageReadError with a one-line reason for anything unusable, and
    ImageTooLarge for images over ``max_pixels`` (None: no limit). ``reduce_to``: see
    ``decode_image``.
    """
    return decode_image(read_bytes(path, byte_limit(max_pixels)), path, apply_orientation=apply_orientation,
                        max_pixels=max_pixels, reduce_to=reduce_to)


def read_label(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a single-channel label map (e.g. a trimap) with its raw values, as stored.

    Same checks as ``read_image``: pixel limit from the header, truncation by structure.
    """
    data = read_bytes(path, byte_limit(max_pixels))
    size = image_size(data, apply_orientation=False)
    _check_size(path, size, max_pixels)
    _check_complete(path, data)
    label = _imdecode(path, data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION, size)
    if label is None or label.size == 0:
        raise ImageReadError(path, "not a decodable label image")
    if size is None:
        _check_size(path, label.shape[:2], max_pixels)
    if label.ndim == 3:
        label = label[..., 0]
    return label


def encode_image(image: np.ndarray, ext: str, rgb: bool = True) -> bytes:
    """Encode an RGB/RGBA/gray uint8 array to bytes in the format named by ``ext``."""
    if rgb and image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"cannot encode image as {ext}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, image: np.ndarray, rgb: bool = True) -> None:
    """Encode by the file's extension and write atomically."""
    write_atomic(path, encode_image(image, Path(path).suffix or ".png", rgb=rgb))

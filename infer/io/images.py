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
from .headers import _header, _jpeg_complete, _png_chunks, has_alpha, image_size, is_video, known_format  # noqa: E402

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".pam", ".jp2", ".j2k"})

# Every decode failure is reported as one line naming the file; OpenCV's own
# "[ERROR:...] loadsave.cpp" lines would only repeat it, unformatted.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

VIDEO_REASON = "a video file: segment reads still images (use `unetlite video`)"
NEUTRAL_GREY = 128   # transparent pixels are composited on this before segmenting


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
            if size is not None and size[0] * size[1] > limit:
                raise _too_large(path, size[0], size[1], limit, how) from None
            if size is not None:  # the header lied (e.g. duplicated TIFF size tags)
                raise ImageTooLarge(path, f"image decodes to more than the {_megapixels(limit)} limit ({how}), "
                                          f"although its header says {size[1]}x{size[0]}") from None
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


def _check_decoded(path, image: np.ndarray, size: tuple[int, int] | None, factor: int,
                   max_pixels: int | None) -> None:
    """Trust the decoded size: against the limit, and against what the header said (the memory
    budget reserved that much). A mismatch is a lying or ambiguous header: refused in one line."""
    height, width = image.shape[:2]
    if size is None:  # a format whose header we cannot read: OpenCV's limit bounded the decode
        _check_size(path, (height, width), max_pixels)
        return
    expected = (-(-size[0] // factor), -(-size[1] // factor))
    if (height, width) != expected:
        _check_size(path, (height * factor, width * factor), max_pixels)
        raise ImageReadError(path, f"decodes to {width * factor}x{height * factor} pixels, but its header says "
                                   f"{size[1]}x{size[0]} (conflicting size fields); refused")


def _composite_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An IMREAD_UNCHANGED decode (BGRA/BGR/grey, 8 or 16 bit) -> (RGB composited on neutral
    grey, 8-bit alpha). Row blocks keep the working memory small."""
    if image.dtype != np.uint8:
        image = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else cv2.convertScaleAbs(image)
    if image.ndim == 2 or image.shape[2] in (1, 3):
        code = cv2.COLOR_GRAY2RGB if image.ndim == 2 or image.shape[2] == 1 else cv2.COLOR_BGR2RGB
        return cv2.cvtColor(image, code), None
    alpha = np.ascontiguousarray(image[..., -1])
    if image.shape[2] == 2:  # grey + alpha
        rgb = cv2.cvtColor(np.ascontiguousarray(image[..., 0]), cv2.COLOR_GRAY2RGB)
    else:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    for top in range(0, rgb.shape[0], 256):
        block, a = rgb[top:top + 256], alpha[top:top + 256, :, None].astype(np.uint16)
        block[:] = ((block * a + NEUTRAL_GREY * (255 - a) + 127) // 255).astype(np.uint8)
    return rgb, alpha


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", apply_orientation: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 reduce_to: tuple[int, int] | None = None) -> np.ndarray:
    """:func:`decode_image_alpha` without the alpha (transparent pixels composited on grey)."""
    return decode_image_alpha(data, path, apply_orientation, max_pixels, reduce_to)[0]


def decode_image_alpha(data: bytes, path: str | os.PathLike = "<bytes>", apply_orientation: bool = True,
                       max_pixels: int | None = DEFAULT_MAX_PIXELS,
                       reduce_to: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode encoded image bytes as HxWx3 uint8 RGB (``path`` only names them in errors).

    The header is read first: an image over ``max_pixels`` (None: no limit) raises
    ImageTooLarge before anything is decoded. Truncated JPEG/PNG raise ImageReadError.
    ``reduce_to`` (height, width): a JPEG at least 2x/4x/8x larger in both sides is decoded
    at 1/2, 1/4 or 1/8 size (still RGB, still EXIF-oriented) -- for callers that shrink it
    anyway; they learn the original size from ``image_size``.

    Returns (RGB, alpha). An image with an alpha channel (PNG, WebP) is composited on neutral
    grey (:data:`NEUTRAL_GREY`) and its 8-bit alpha returned, so callers can keep transparent
    pixels background; None for opaque images. The decoded size is checked against the limit
    and against the header's size: a mismatch raises ImageReadError (one line).
    """
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    size = image_size(data, apply_orientation)
    _check_size(path, size, max_pixels)
    _check_complete(path, data)
    if size is None and is_video(data[:4096]):
        raise ImageReadError(path, VIDEO_REASON)
    factor = _reduction(data, size, reduce_to)
    header = _header(data) if size is not None else None
    alpha_decode = (factor == 1 and has_alpha(data)
                    and not (apply_orientation and header is not None and header[2] != 1))
    if alpha_decode:  # IMREAD_UNCHANGED keeps alpha and ignores EXIF orientation (checked: none here)
        flags = cv2.IMREAD_UNCHANGED
    else:
        flags = _REDUCED[factor]
        if not apply_orientation:
            flags |= cv2.IMREAD_IGNORE_ORIENTATION
    image = _imdecode(path, data, flags, size)
    if image is None or image.size == 0:
        raise ImageReadError(path, "not a decodable image (unknown format or corrupt data)")
    _check_decoded(path, image, size, factor, max_pixels)
    if alpha_decode:
        return _composite_alpha(image)
    return image, None


# No format stores a pixel in more than 12 bytes (float RGB); a bigger file is not an image
# within the pixel limit, and reading it whole would defeat the limit.
MAX_BYTES_PER_PIXEL = 12


def byte_limit(max_pixels: int | None) -> int | None:
    """The largest file ``read_bytes`` accepts for an image of at most ``max_pixels``."""
    return None if max_pixels is None else MAX_BYTES_PER_PIXEL * max_pixels + (1 << 20)


HEAD_BYTES = 1 << 20   # what read_bytes reads before ``before_rest`` sees the header
# A file this much larger than its header's pixels need (12 bytes each) is not that image:
# room for EXIF, ICC, XMP and phone trailers (MPF images).
HEADER_SLACK_BYTES = 16 << 20


def read_bytes(path: str | os.PathLike, max_bytes: int | None = byte_limit(DEFAULT_MAX_PIXELS),
               before_rest=None) -> bytes:
    """A file's bytes for ``decode_image``/``image_size``, never more than ``max_bytes``.

    ``before_rest(head, size)`` is called with the first HEAD_BYTES and the file's size before
    the rest is read: it may reserve memory for the whole file (read-ahead budget) or raise to
    refuse the file unread. ImageReadError (one line) when the file is missing, a folder, not a
    regular file (FIFO, device: never opened blocking), unreadable or empty; ImageTooLarge when it
    holds more than ``max_bytes`` (None: no limit).
    """
    import stat
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ImageReadError(path, "is a directory" if stat.S_ISDIR(st.st_mode)
                                 else "not a regular file (a device, FIFO or socket)")
        with os.fdopen(fd, "rb", buffering=0) as fh:
            size = st.st_size
            if max_bytes is not None and size > max_bytes:
                raise ImageTooLarge(path, f"file is over {max_bytes / 1e9:.2g} GB, more than any image within "
                                          f"the pixel limit takes (--max-pixels)")
            if size == 0:
                raise ImageReadError(path, "file is empty (0 bytes)")
            parts = [fh.read(min(size, HEAD_BYTES))]
            if before_rest is not None:
                before_rest(parts[0], size)
            left = size - len(parts[0])
            while left > 0:  # the size from fstat, never more (a file that grows stays bounded)
                block = fh.read(left)
                if not block:
                    break
                parts.append(block)
                left -= len(block)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            del parts
    except ImageReadError:
        raise
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def check_head(path, head: bytes, size: int, apply_orientation: bool = True,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int] | None:
    """What a file's first bytes say before the rest is read: its (height, width), or None when
    the header is further in. Refuses (one line) videos, unknown formats, images over
    ``max_pixels`` and files far larger than their header's pixels can take."""
    if not known_format(head):
        if is_video(head):
            raise ImageReadError(path, VIDEO_REASON)
        raise ImageReadError(path, "not a decodable image (unknown format)")
    dims = image_size(head, apply_orientation)
    if dims is None:
        return None
    _check_size(path, dims, max_pixels)
    if size > MAX_BYTES_PER_PIXEL * dims[0] * dims[1] + HEADER_SLACK_BYTES:
        raise ImageReadError(path, f"file is {size / 1e6:.0f} MB, far more than a {dims[1]}x{dims[0]} image "
                                   f"takes (not an image, or junk appended)")
    return dims


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

"""Reading images robustly and writing outputs atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".jp2", ".jpe"})

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above any real photo, far below a decompression bomb

_UMASK = os.umask(0)
os.umask(_UMASK)

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class ImageReadError(Exception):
    """An input that cannot be used; str() is a one-line reason naming the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLarge(ImageReadError):
    """The image's header claims more pixels than the limit; refused before decoding."""


def _check_complete(path: str | os.PathLike, data: bytes) -> None:
    """Catch truncated JPEG/PNG files, which OpenCV decodes silently as half-grey images."""
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        raise ImageReadError(path, "truncated PNG (no IEND chunk)")


def read_image(path: str | os.PathLike, apply_orientation: bool = True,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any image file as HxWx3 uint8 RGB.

    Grayscale, RGBA, palette, 16-bit and CMYK inputs become 8-bit RGB; EXIF
    orientation is applied unless ``apply_orientation`` is False (training data,
    whose label maps are aligned with the stored pixels).
    Raises ImageReadError with a one-line reason for anything unusable, and
    ImageTooLarge for images over ``max_pixels`` (None: no limit).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, path, apply_orientation=apply_orientation, max_pixels=max_pixels)


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", apply_orientation: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes (``path`` only names them in errors) as HxWx3 uint8 RGB."""
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    _check_complete(path, data)
    flags = cv2.IMREAD_COLOR_RGB
    if not apply_orientation:
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise ImageReadError(path, "not a decodable image (unknown format or corrupt data)")
    return image


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label map (e.g. a trimap) with its raw values."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    _check_complete(path, data)
    label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if label is None:
        raise ImageReadError(path, "not a decodable label image")
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


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes so the file is either absent or complete: temp file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(path: str | os.PathLike, image: np.ndarray, rgb: bool = True) -> None:
    """Encode by the file's extension and write atomically."""
    write_atomic(path, encode_image(image, Path(path).suffix or ".png", rgb=rgb))

"""Reading untrusted images safely and writing outputs atomically and durably.

Reading: the size is read from the file's header first (no pixel is decoded) so an image
over the pixel limit is refused by name before it can allocate anything; truncation is
judged by walking the file's structure (JPEG markers, PNG chunks), so data after the end
marker (phone trailers) is accepted; JPEGs far larger than needed decode at 1/2, 1/4 or
1/8 size inside libjpeg (``reduce_to``). OpenCV's own pixel limit is set as a backstop for
anything the header readers do not know.

Writing: a temp file in the target folder (named ``.NAME.unetlite-PID-XXXXXXXX.tmp`` so it
can never be a user's file), flushed and fsynced, renamed over the target, then the folder
fsynced: after a crash the file is either absent or complete. ``remove_stale_temps``
deletes what killed runs left.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above any real photo, far below a decompression bomb

# OpenCV reads this variable once, when cv2 is first imported (checked with opencv-python 5.0):
# setting it later has no effect. It bounds decodes of formats whose size we cannot read.
OPENCV_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
if "cv2" not in sys.modules:
    os.environ.setdefault(OPENCV_LIMIT_ENV, str(DEFAULT_MAX_PIXELS))

import cv2  # noqa: E402  (after the environment variable above)
import numpy as np  # noqa: E402

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".pam", ".jp2", ".j2k"})

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def display_path(path: str | bytes | os.PathLike) -> str:
    """A printable, one-line, CSV-safe form of any path.

    Bytes that are not valid UTF-8 become ``\\xNN`` and control characters (newline, tab...)
    are escaped, so messages, logs and failures.csv never crash or split a line.
    """
    raw = os.fsencode(path)
    text = raw.decode("utf-8", "backslashreplace")
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


class ImageReadError(Exception):
    """An input that cannot be used; str() is "path: reason" on one line.

    ``path`` is the printable form (``display_path``); ``reason`` is one line.
    """

    def __init__(self, path: str | bytes | os.PathLike, reason: str):
        self.path = display_path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLarge(ImageReadError):
    """The image has more pixels than the limit; refused before decoding."""


class WriteError(OSError):
    """A write that failed (full disk, read-only folder, no permission); str() is one line
    naming the file. ``errno`` is kept from the original error."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


# ---------------------------------------------------------------- header readers
# Each returns (height, width, exif_orientation) as stored, or None when the header is not
# readable. Orientation is 1 (none) unless the format carries EXIF that OpenCV applies.

def _u16(data: bytes, pos: int, big: bool = True) -> int:
    return struct.unpack_from(">H" if big else "<H", data, pos)[0]


def _u32(data: bytes, pos: int, big: bool = True) -> int:
    return struct.unpack_from(">I" if big else "<I", data, pos)[0]


def _exif_orientation(tiff: bytes) -> int:
    """Orientation tag (274) of IFD0 in an EXIF/TIFF block; 1 when absent or unreadable."""
    try:
        big = {b"MM": True, b"II": False}[tiff[:2]]
        ifd = _u32(tiff, 4, big)
        for i in range(min(_u16(tiff, ifd, big), 512)):
            entry = ifd + 2 + 12 * i
            if _u16(tiff, entry, big) == 274:
                value = _u16(tiff, entry + 8, big)
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_header(data: bytes):
    pos, orientation, exif_seen = 2, 1, False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = _u16(data, pos + 2)
        if marker in _SOF:
            if pos + 9 > len(data):
                return None
            return _u16(data, pos + 5), _u16(data, pos + 7), orientation
        if marker == 0xE1 and not exif_seen and data[pos + 4:pos + 10] == b"Exif\0\0":
            exif_seen = True  # the first EXIF block counts, as in libjpeg/OpenCV
            orientation = _exif_orientation(data[pos + 10:pos + 2 + length])
        if marker in (0xD9, 0xDA) or length < 2:
            return None
        pos += 2 + length
    return None


def _png_chunks(data: bytes):
    """(type, data offset, length) of each complete chunk up to and including IEND."""
    pos = 8
    while pos + 12 <= len(data):
        length, ctype = _u32(data, pos), data[pos + 4:pos + 8]
        if pos + 12 + length > len(data):
            return
        yield ctype, pos + 8, length
        if ctype == b"IEND":
            return
        pos += 12 + length


def _png_header(data: bytes):
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    height, width, orientation = _u32(data, 20), _u32(data, 16), 1
    for ctype, start, length in _png_chunks(data):
        if ctype == b"eXIf":
            orientation = _exif_orientation(data[start:start + length])
            break
        if ctype == b"IDAT":  # OpenCV (libpng) reads eXIf only when it comes before the pixels
            break
    return height, width, orientation


def _bmp_header(data: bytes):
    if len(data) < 26:
        return None
    if _u32(data, 14, False) == 12:  # OS/2 BITMAPCOREHEADER
        return _u16(data, 20, False), _u16(data, 18, False), 1
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(height), abs(width), 1


def _riff_chunks(data: bytes):
    pos = 12
    while pos + 8 <= len(data):
        ctype, length = data[pos:pos + 4], _u32(data, pos + 4, False)
        yield ctype, pos + 8, length
        pos += 8 + length + (length & 1)


def _webp_header(data: bytes):
    if len(data) < 30:
        return None
    kind = data[12:16]
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return _u16(data, 28, False) & 0x3FFF, _u16(data, 26, False) & 0x3FFF, 1
    if kind == b"VP8L" and data[20] == 0x2F:
        bits = _u32(data, 21, False)
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1, 1
    if kind == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        orientation = 1
        if data[20] & 0x08:  # EXIF flag
            for ctype, start, length in _riff_chunks(data):
                if ctype == b"EXIF":
                    block = data[start:start + length]
                    orientation = _exif_orientation(block[6:] if block.startswith(b"Exif\0\0") else block)
                    break
        return height, width, orientation
    return None


def _tiff_header(data: bytes):
    big = data[:2] == b"MM"
    try:
        if _u16(data, 2, big) == 43:  # BigTIFF: 8-byte offsets, 20-byte entries
            ifd, count_size, entry_size, value_at = struct.unpack_from(">Q" if big else "<Q", data, 8)[0], 8, 20, 12
            count = struct.unpack_from(">Q" if big else "<Q", data, ifd)[0]
        else:
            ifd, count_size, entry_size, value_at = _u32(data, 4, big), 2, 12, 8
            count = _u16(data, ifd, big)
        tags = {}
        for i in range(min(count, 4096)):
            entry = ifd + count_size + entry_size * i
            tag, kind = _u16(data, entry, big), _u16(data, entry + 2, big)
            if tag in (256, 257, 274):
                tags[tag] = _u16(data, entry + value_at, big) if kind == 3 else _u32(data, entry + value_at, big)
    except struct.error:
        return None
    if 256 not in tags or 257 not in tags:
        return None
    # libtiff orients the pixels itself, even when OpenCV is asked to ignore orientation
    return tags[257], tags[256], tags.get(274, 1) if 1 <= tags.get(274, 1) <= 8 else 1


_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n)*(\S+)")


def _pnm_header(data: bytes):
    head = data[:4096]
    if head[:2] == b"P7":  # PAM: WIDTH/HEIGHT lines
        width = re.search(rb"\nWIDTH\s+(\d+)", head)
        height = re.search(rb"\nHEIGHT\s+(\d+)", head)
        return (int(height.group(1)), int(width.group(1)), 1) if width and height else None
    tokens, pos = [], 2
    while len(tokens) < 2:
        match = _PNM_TOKEN.match(head, pos)
        if not match or not match.group(1).isdigit():
            return None
        tokens.append(int(match.group(1)))
        pos = match.end()
    return tokens[1], tokens[0], 1


def _jp2_header(data: bytes):
    if data[:4] == b"\xff\x4f\xff\x51":  # raw codestream: SIZ marker segment
        if len(data) < 24:
            return None
        xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", data, 8)
        return ysiz - yo, xsiz - xo, 1
    box = data.find(b"ihdr", 0, 4096)
    if box < 4 or box + 12 > len(data):
        return None
    height, width = struct.unpack_from(">II", data, box + 4)
    return height, width, 1


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of the ISO-BMFF boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind, head = _u32(data, pos), data[pos + 4:pos + 8], 8
        if size == 1 and pos + 16 <= end:
            size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head:
            return
        yield kind, pos + head, min(pos + size, end)
        pos += size


def _avif_header(data: bytes):
    """Largest 'ispe' (image spatial extent) in meta/iprp/ipco. OpenCV does not apply
    'irot' (checked with 5.0), so neither does this."""
    best = None
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"meta":
            continue
        for kind2, start2, end2 in _boxes(data, start + 4, end):  # meta is a full box
            if kind2 != b"iprp":
                continue
            for kind3, start3, end3 in _boxes(data, start2, end2):
                if kind3 != b"ipco":
                    continue
                for prop, pstart, pend in _boxes(data, start3, end3):
                    if prop == b"ispe" and pend - pstart >= 12:
                        width, height = struct.unpack_from(">II", data, pstart + 4)
                        if best is None or width * height > best[0] * best[1]:
                            best = (height, width)
        break
    return None if best is None else (best[0], best[1], 1)


def _hdr_header(data: bytes):
    match = re.search(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)", data[:8192])
    if not match:
        return None
    first, second = int(match.group(3)), int(match.group(6))
    return (first, second, 1) if match.group(2) == b"Y" else (second, first, 1)


def _header(data: bytes):
    """(height, width, orientation) from the header, or None for an unknown/unreadable one."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg_header(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _png_header(data)
        if data[:2] == b"BM":
            return _bmp_header(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_header(data)
        if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return _tiff_header(data)
        if data[:1] == b"P" and data[1:2] in b"1234567" and len(data) > 2 or data[:2] in (b"PF", b"Pf"):
            return _pnm_header(data)
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            return _u16(data, 8, False), _u16(data, 6, False), 1
        if data[:12] == b"\0\0\0\x0cjP  \r\n\x87\n" or data[:4] == b"\xff\x4f\xff\x51":
            return _jp2_header(data)
        if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis", b"mif1"):
            return _avif_header(data)
        if data[:2] == b"#?":
            return _hdr_header(data)
        if data[:4] == b"\x59\xa6\x6a\x95" and len(data) >= 12:  # Sun raster
            return _u32(data, 8), _u32(data, 4), 1
    except (struct.error, IndexError, ValueError):
        return None
    return None


def image_size(data: bytes, apply_orientation: bool = True) -> tuple[int, int] | None:
    """(height, width) the decoded image will have, read from the header without decoding.

    Covers every format OpenCV decodes here: JPEG (SOFn, EXIF orientation), PNG (IHDR,
    eXIf), BMP, WebP (VP8/VP8L/VP8X), TIFF/BigTIFF, PNM/PAM/PFM, GIF, JPEG 2000, AVIF,
    Radiance HDR, Sun raster. With ``apply_orientation`` an EXIF rotation by 90/270 degrees
    swaps the sides, as OpenCV's decode does (TIFF is always oriented by libtiff).
    None when the format is unknown or the header unreadable.
    """
    header = _header(data)
    if header is None or header[0] <= 0 or header[1] <= 0:
        return None
    height, width, orientation = header
    oriented = apply_orientation or data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
    if oriented and orientation >= 5:
        return width, height
    return height, width


# ---------------------------------------------------------------- truncation by structure

# A JPEG marker inside entropy-coded data: 0xFF followed by anything but a stuffed 0x00,
# a restart marker (RST0-7) or another fill byte.
_JPEG_MARKER = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")


def _jpeg_complete(data: bytes) -> bool:
    """Walk segments and scans from SOI to the first EOI; False if the data ends first.

    Segments are skipped by their length (an EXIF thumbnail's EOI inside APP1 is never
    seen); bytes after EOI (phone trailers, MPF images) do not matter.
    """
    pos, size = 2, len(data)
    while True:
        if pos + 2 > size:
            return False
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips to the next marker
            match = _JPEG_MARKER.search(data, pos)
            if not match:
                return False
            pos = match.start()
            continue
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if pos + 4 > size:
            return False
        end = pos + 2 + _u16(data, pos + 2)
        if end > size:
            return False
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            match = _JPEG_MARKER.search(data, end)
            if not match:
                return False
            end = match.start()
        pos = end


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


# ---------------------------------------------------------------- durable atomic writes

_TEMP_MARK = ".unetlite-"
# .NAME.unetlite-PID-XXXXXXXX.tmp[.EXT]; XXXXXXXX is tempfile's random part
_TEMP_NAME = re.compile(r"^\..*\.unetlite-(\d+)-[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]{1,10})?$", re.S)
STALE_TEMP_SECONDS = 24 * 3600  # older than this, a temp is stale even if its PID is alive (reused)


def _write_error(exc: OSError, action: str, path: str | os.PathLike) -> WriteError:
    reason = exc.strerror or str(exc)
    return WriteError(exc.errno or errno.EIO, f"cannot {action} {display_path(path)}: {reason}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable. Not possible on Windows or on some network file systems."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a folder we may write but not read: the rename stands, unsynced
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def make_temp(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """Create an empty temp file beside ``path`` for a writer that needs a file name
    (e.g. cv2.VideoWriter); finish with ``commit_temp``. ``keep_suffix`` ends the name with
    path's extension, for writers that choose the container by it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # keep the temp's name under the usual 255-byte limit whatever the target's length
        stem = os.fsdecode(os.fsencode(path.name)[:150])
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}{_TEMP_MARK}{os.getpid()}-",
                                   suffix=".tmp" + (path.suffix if keep_suffix else ""), dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_error(exc, "write", path) from None
    return Path(tmp)


@contextmanager
def _temp_guard(tmp: Path, path: Path) -> Iterator[None]:
    """Remove the temp on any failure (Ctrl-C included); OSErrors become one-line WriteErrors."""
    try:
        yield
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(exc, "write", path) from None
        raise


def _rename_durably(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def commit_temp(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Finish a ``make_temp`` file: fsync it, rename it over ``path``, fsync the folder.

    The temp is removed on any failure; failures raise WriteError.
    """
    tmp, path = Path(tmp), Path(path)
    with _temp_guard(tmp, path):
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _rename_durably(tmp, path)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes so the file is either absent or complete, also after a crash or power loss.

    Temp file in the same folder, flushed and fsynced, renamed over ``path``, folder fsynced;
    the temp is removed on any failure (including Ctrl-C). Failures (ENOSPC, EROFS, EACCES...)
    raise WriteError, an OSError whose str() is "cannot write PATH: reason".
    """
    path = Path(path)
    tmp = make_temp(path)
    with _temp_guard(tmp, path):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _rename_durably(tmp, path)


def write_image(path: str | os.PathLike, image: np.ndarray, rgb: bool = True) -> None:
    """Encode by the file's extension and write atomically."""
    write_atomic(path, encode_image(image, Path(path).suffix or ".png", rgb=rgb))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): keep its file
    return True


def is_temp_name(name: str) -> bool:
    """True for names made by ``make_temp``/``write_atomic`` (never a user's file)."""
    return bool(_TEMP_NAME.match(name))


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete temp files left by killed runs in ``folder``; returns how many were removed.

    Only names made by this module count; a temp whose writer (PID in the name) is still
    running on this machine is kept unless older than a day, so two runs on one folder do
    not delete each other's work. Symlinked folders are not followed.
    """
    removed, now = 0, time.time()
    for root, dirs, files in os.walk(folder, onerror=lambda exc: log.warning("%s", exc)):
        if not recursive:
            dirs.clear()
        for name in files:
            match = _TEMP_NAME.match(name)
            if not match:
                continue
            path = os.path.join(root, name)
            try:
                old = now - os.lstat(path).st_mtime > STALE_TEMP_SECONDS
                if _pid_alive(int(match.group(1))) and not old:
                    continue
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove stale temp file %s: %s", display_path(path), exc.strerror or exc)
    return removed

"""Image sizes and structural completeness, read without decoding a pixel.

The size comes from the file's header first, so an image whose header claims more pixels
than the limit is refused by name before anything is allocated (a lying header never
reaches the decoder). Truncation is judged by walking the file's structure (JPEG segments
and scans, PNG chunks), not by looking at its tail, so data after the end marker (phone
trailers, MPF images) is accepted. No OpenCV here: this runs before any decode.
"""
from __future__ import annotations

import re
import struct

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above any real photo, far below a decompression bomb


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
                value = _u16(data, entry + value_at, big) if kind == 3 else _u32(data, entry + value_at, big)
                # a duplicated width/height tag: libtiff decodes one of them; the largest is what
                # the limit and the memory budget must assume (the decoded size is checked after)
                tags[tag] = max(tags.get(tag, 0), value) if tag != 274 else tags.get(tag, value)
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


def known_format(data: bytes) -> bool:
    """Whether the first bytes are the signature of an image format OpenCV decodes here."""
    return (data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n" or data[:2] in (b"BM", b"#?", b"PF", b"Pf")
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP") or data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
            or (data[:1] == b"P" and data[1:2] in b"1234567" and len(data) > 2)
            or data[:6] in (b"GIF87a", b"GIF89a") or data[:12] == b"\0\0\0\x0cjP  \r\n\x87\n"
            or data[:4] in (b"\xff\x4f\xff\x51", b"\x59\xa6\x6a\x95", b"\x76\x2f\x31\x01")
            or (data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis", b"mif1")))


_VIDEO_BRANDS = (b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"M4V ", b"qt  ", b"3gp4", b"3gp5",
                 b"3gp6", b"avc1", b"dash", b"MSNV", b"f4v ", b"mmp4")


def is_video(data: bytes) -> bool:
    """Whether the first bytes are the signature of a video container (MP4/MOV, Matroska/WebM, AVI,
    FLV, MPEG-TS, MPEG-PS, ASF/WMV): `unetlite video` reads those, not `segment`."""
    return ((data[4:8] == b"ftyp" and data[8:12] in _VIDEO_BRANDS) or data[:4] == b"\x1a\x45\xdf\xa3"
            or (data[:4] == b"RIFF" and data[8:12] == b"AVI ") or data[:3] == b"FLV"
            or (len(data) > 376 and data[0] == data[188] == data[376] == 0x47) or data[:4] == b"\0\0\x01\xba"
            or data[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"))


def has_alpha(data: bytes) -> bool:
    """Whether the header declares an alpha channel (PNG colour types 4/6 or tRNS, WebP's alpha flag)."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25:
            if data[25] in (4, 6):
                return True
            for ctype, _, _ in _png_chunks(data):
                if ctype == b"tRNS":
                    return True
                if ctype == b"IDAT":
                    return False
            return False
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
            kind = data[12:16]
            if kind == b"VP8X":
                return bool(data[20] & 0x10)
            if kind == b"VP8L" and data[20] == 0x2F:
                return bool((_u32(data, 21, False) >> 28) & 1)
    except (struct.error, IndexError):
        return False
    return False


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

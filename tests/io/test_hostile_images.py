"""Issue 16: memory stays bounded whatever the files are, and a lying header is caught (real files)."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetlite.infer.io.images import ImageReadError, decode_image, read_image

from conftest import PETS, pet_names

ROOT = Path(__file__).resolve().parents[2]


def _tiff(sizes: list[tuple[int, int]], pixels: np.ndarray) -> bytes:
    """An uncompressed RGB TIFF whose IFD repeats the width and height tags: (width, height) per
    entry pair, in order; the strip holds ``pixels`` (the first pair's size)."""
    height, width = pixels.shape[:2]
    entries = []
    for w, _ in sizes:
        entries.append((256, 4, 1, w))
    for _, h in sizes:
        entries.append((257, 4, 1, h))
    count = len(entries) + 7
    ifd = 8
    data_at = ifd + 2 + 12 * count + 4
    bits_at = data_at
    strip_at = data_at + 8
    entries += [(258, 3, 3, bits_at), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, strip_at), (277, 3, 1, 3),
                (278, 4, 1, height), (279, 4, 1, pixels.nbytes)]
    out = b"II*\0" + struct.pack("<I", ifd) + struct.pack("<H", count)
    for tag, kind, n, value in entries:
        out += struct.pack("<HHII", tag, kind, n, value)
    out += struct.pack("<I", 0) + struct.pack("<HHHH", 8, 8, 8, 0) + np.ascontiguousarray(pixels[..., ::-1][..., ::-1]).tobytes()
    return out


@pytest.fixture
def photo_rgb() -> np.ndarray:
    return read_image(PETS / "images" / f"{pet_names('test', 1)[0]}.jpg")


def test_duplicate_tiff_size_tags_give_the_decoded_size_never_a_16x16_mask(photo_rgb, tiny_onnx, tmp_path):
    from unetlite.infer.cli import main
    pixels = np.ascontiguousarray(photo_rgb[:96, :128])
    src = tmp_path / "in"
    src.mkdir()
    (src / "dup.tif").write_bytes(_tiff([(128, 96), (16, 16)], pixels))   # libtiff decodes the first
    assert decode_image((src / "dup.tif").read_bytes()).shape[:2] == (96, 128)
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_onnx), "--providers", "cpu",
                 "--no-progress"]) == 0
    assert cv2.imread(str(out / "dup.tif.png"), cv2.IMREAD_UNCHANGED).shape == (96, 128)


def test_a_header_that_disagrees_with_the_decoded_size_is_one_line(photo_rgb, tmp_path):
    pixels = np.ascontiguousarray(photo_rgb[:16, :16])
    data = _tiff([(16, 16), (128, 96)], pixels)   # the larger second pair is what the limit assumes
    with pytest.raises(ImageReadError) as info:
        decode_image(data, "lie.tif")
    assert str(info.value) == "lie.tif: decodes to 16x16 pixels, but its header says 128x96 (conflicting size " \
                              "fields); refused"


def test_junk_and_padded_files_are_refused_from_their_first_bytes(tmp_path):
    from unetlite.infer.io.images import byte_limit, check_head, read_bytes
    junk = tmp_path / "junk.jpg"
    with open(junk, "wb") as fh:          # 150 MB of zeros, sparse
        fh.truncate(150 * 10**6)
    padded = tmp_path / "padded.jpg"
    photo = (PETS / "images" / f"{pet_names('test', 1)[0]}.jpg").read_bytes()
    with open(padded, "wb") as fh:        # a real JPEG header, then 200 MB
        fh.write(photo)
        fh.truncate(200 * 10**6)

    def refuse(path):
        return lambda head, size: check_head(path, head, size)

    read_before = _rchar()
    for path, reason in ((junk, "not a decodable image (unknown format)"),
                         (padded, "file is 200 MB, far more than a")):
        with pytest.raises(ImageReadError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            read_bytes(path, byte_limit(100_000_000), refuse(path))
    assert _rchar() - read_before < 8 << 20       # never read past the first megabyte of each


def _rchar() -> int:
    for line in open("/proc/self/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])
    pytest.skip("no /proc/self/io")


def test_memory_is_reserved_before_the_bytes_are_read(tiny_onnx, tmp_path):
    """The loader reserves file size + decoded size before it reads past the header: an item that
    cannot get its memory has read only the first megabyte."""
    from unetlite.infer.pipeline.distributed import driver_model
    from unetlite.infer.pipeline.items import ModelInputs, SegmentSettings, load
    photo = (PETS / "images" / f"{pet_names('test', 1)[0]}.jpg").read_bytes()
    padded = tmp_path / "trailer.jpg"
    padded.write_bytes(photo + b"\0" * (10 << 20))   # a 10 MB trailer after the end marker (phones do this)
    model = driver_model(tiny_onnx)
    inputs = ModelInputs(model.contract, model.input_dtype)
    asked = []

    class NoRoom(Exception):
        pass

    def reserve(nbytes):
        asked.append(nbytes)
        raise NoRoom()

    read_before = _rchar()
    with pytest.raises(NoRoom):
        load(inputs, SegmentSettings(), padded, reserve)
    assert _rchar() - read_before < 2 << 20
    height, width = cv2.imdecode(np.frombuffer(photo, np.uint8), 1).shape[:2]
    assert asked[0] >= padded.stat().st_size + height * width * 3


def test_failed_items_keep_no_traceback_holding_their_bytes(tiny_onnx, tmp_path):
    from unetlite.infer.pipeline.distributed import driver_model
    from unetlite.infer.pipeline.items import ModelInputs, SegmentSettings, image_loader
    from unetlite.infer.pipeline.readahead import read_ahead
    model = driver_model(tiny_onnx)
    inputs = ModelInputs(model.contract, model.input_dtype)
    photo = (PETS / "images" / f"{pet_names('test', 1)[0]}.jpg").read_bytes()
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"cut{i}.jpg")
        paths[-1].write_bytes(photo[: len(photo) // 2])     # truncated JPEGs
    batches = list(read_ahead(paths, image_loader(inputs, SegmentSettings()), 4))
    errors = [item.error for batch in batches for item in batch]
    assert len(errors) == 3 and all(isinstance(e, ImageReadError) for e in errors)
    assert all(e.__traceback__ is None and e.__context__ is None for e in errors)


def test_no_opencv_log_lines_reach_stderr(tiny_onnx, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    tiff = cv2.imencode(".tiff", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    bmp = cv2.imencode(".bmp", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    (src / "cut.tif").write_bytes(tiff[:100])   # libtiff: "[ERROR:...] grfmt_tiff.cpp TIFF_Error" lines
    (src / "cut.bmp").write_bytes(bmp[:60])     # "[ERROR:...] loadsave.cpp:1390 imdecode_ ..." line
    proc = subprocess.run([sys.executable, "-m", "unetlite.infer.cli", "segment", str(src), "-o", str(tmp_path / "o"),
                           "--model", str(tiny_onnx), "--providers", "cpu", "--no-progress"], capture_output=True,
                          text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 1
    assert "[ERROR" not in proc.stderr and "loadsave" not in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("unetlite segment: ") for line in lines), proc.stderr

"""Native libraries' own stderr lines (libpng, Ray's C++ core) never reach the user; ours do."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import cv2
import numpy as np

from unetlite.infer.native_noise import NOISE, _pump


def _through_filter(data: bytes) -> bytes:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    thread = threading.Thread(target=_pump, args=(src_r, dst_w, NOISE))
    thread.start()
    os.write(src_w, data)
    os.close(src_w)
    thread.join(10)
    os.close(dst_w)
    out = b""
    while chunk := os.read(dst_r, 65536):
        out += chunk
    os.close(dst_r)
    os.close(src_r)
    return out


def test_noise_lines_are_dropped_and_the_rest_passes_unchanged():
    text = (b"unetlite segment: a.png: not a decodable image\n"
            b"libpng error: IDAT: CRC error\n"
            b"\r 50%|#####     | 1/2\r100%|##########| 2/2\n"
            b"[2026-12-04 21:00:00,000 E 123 456] core_worker.cc:2465: Actor with class name ... \n"
            b"no newline at the end")
    assert _through_filter(text) == (b"unetlite segment: a.png: not a decodable image\n"
                                     b"\r 50%|#####     | 1/2\r100%|##########| 2/2\n"
                                     b"no newline at the end")


def test_a_png_that_makes_libpng_complain_is_one_line_of_ours(tmp_path, tiny_onnx):
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".png", image)[1].tobytes())
    data[data.find(b"IDAT") + 20] ^= 0xFF   # a CRC error inside the compressed pixels
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "unetlite.infer.cli", "segment", str(tmp_path / "in"), "-o",
                           str(tmp_path / "out"), "--model", str(tiny_onnx), "--providers", "cpu", "--no-progress"],
                          capture_output=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "bad.png" in lines[0] and not lines[0].startswith("libpng"), lines

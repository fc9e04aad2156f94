"""Reading real and hostile image files, and durable atomic writes.

Hostile files are made here from real pet photos: header bombs (a real JPEG/PNG whose header
is patched to claim 65000x65000), phone trailers after the end marker, truncations, EXIF
rotations, names that are not UTF-8, a writer killed with SIGKILL, a file-size limit.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetlite.infer.io import images as imageio
from unetlite.infer.engine.contract import ModelContract
from unetlite.infer.io.images import (DEFAULT_MAX_PIXELS, ImageReadError, ImageTooLarge, WriteError, decode_image,
                                    display_path, image_size, read_image, read_label, remove_stale_temps,
                                    write_atomic, write_image)
from unetlite.infer.engine.preprocess import prepare, resize_image


def _names(pets_dir: Path, split: str = "test") -> list[str]:
    return (pets_dir / f"{split}.txt").read_text().split()


@pytest.fixture()
def reference(pets_dir) -> Path:
    return pets_dir / "images" / f"{_names(pets_dir)[0]}.jpg"


@pytest.fixture()
def trimap(pets_dir) -> Path:
    return pets_dir / "trimaps" / f"{_names(pets_dir)[0]}.png"


def _patch_jpeg_size(data: bytes, height: int, width: int) -> bytes:
    """The same JPEG with its SOF header claiming another size."""
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    patched = bytearray(data)
    struct.pack_into(">HH", patched, pos + 5, height, width)
    return bytes(patched)


def _patch_png_size(data: bytes, height: int, width: int) -> bytes:
    """The same PNG with IHDR claiming another size (CRC fixed, so libpng accepts the header)."""
    patched = bytearray(data)
    struct.pack_into(">II", patched, 16, width, height)
    struct.pack_into(">I", patched, 29, zlib.crc32(bytes(patched[12:29])))
    return bytes(patched)


def _with_orientation(jpeg_or_image, fmt: str, orientation: int) -> bytes:
    Image = pytest.importorskip("PIL.Image")
    img = jpeg_or_image if isinstance(jpeg_or_image, Image.Image) else Image.open(jpeg_or_image).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


# ------------------------------------------------------------------ colour modes, plain errors

def test_colour_modes_all_become_rgb(reference, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    ref = read_image(reference).astype(int)
    pil = Image.open(reference)
    pil.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    pil.convert("P").save(tmp_path / "palette.png")
    pil.convert("RGBA").save(tmp_path / "rgba.png")
    pil.convert("L").save(tmp_path / "grey.png")
    cv2.imwrite(str(tmp_path / "deep16.png"), cv2.imread(str(reference)).astype(np.uint16) * 257)
    tolerance = {"cmyk.jpg": 6, "palette.png": 25, "rgba.png": 0.01, "deep16.png": 0.01}
    for name, limit in tolerance.items():
        img = read_image(tmp_path / name)
        assert img.shape == ref.shape and img.dtype == np.uint8, name
        assert np.abs(img.astype(int) - ref).mean() <= limit, name
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == ref.shape and np.array_equal(grey[..., 0], grey[..., 2])


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"hello, not an image", "not a decodable image")])
def test_unusable_files_raise_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value).startswith(str(path)) and reason in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)


# ------------------------------------------------------------------ header first

# every format this OpenCV encodes and decodes (EXR is not built in)
FORMATS = [".jpg", ".png", ".webp", ".tif", ".bmp", ".ppm", ".pgm", ".pbm", ".pam", ".pfm", ".jp2",
           ".avif", ".hdr", ".sr", ".gif"]


@pytest.mark.parametrize("ext", FORMATS)
def test_image_size_reads_every_format_from_the_header(reference, ext):
    size = (157, 201)  # odd, unequal sides catch swapped or off-by-one fields
    bgr = cv2.resize(cv2.imread(str(reference)), size[::-1], interpolation=cv2.INTER_AREA)
    image = bgr.astype(np.float32) / 255 if ext in (".pfm", ".hdr") else bgr[..., 0] if ext in (".pgm", ".pbm") else bgr
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error:
        pytest.skip(f"this OpenCV build cannot write {ext}")
    data = buf.tobytes()
    assert image_size(data) == size
    assert decode_image(data, f"x{ext}").shape == (*size, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_image_size_follows_exif_orientation_like_the_decoder(reference, fmt):
    for orientation in range(1, 9):
        data = _with_orientation(reference, fmt, orientation)
        for apply in (True, False):
            decoded = decode_image(data, apply_orientation=apply)
            assert image_size(data, apply) == decoded.shape[:2], (fmt, orientation, apply)
    rotated = image_size(_with_orientation(reference, fmt, 6))
    assert rotated == image_size(_with_orientation(reference, fmt, 1))[::-1]


def test_unknown_or_garbled_headers_have_no_size(reference):
    data = reference.read_bytes()
    assert image_size(b"hello, not an image") is None
    assert image_size(data[:20]) is None      # cut inside the header: no SOF yet
    assert image_size(b"\x89PNG\r\n\x1a\n") is None


@pytest.mark.parametrize("side", [65000, 30000])
def test_header_bombs_are_refused_by_name_before_decoding(reference, tmp_path, side):
    jpeg = _patch_jpeg_size(reference.read_bytes(), side, side)
    png = _patch_png_size(cv2.imencode(".png", cv2.imread(str(reference)))[1].tobytes(), side, side)
    for name, data in (("bomb.jpg", jpeg), ("bomb.png", png)):
        path = tmp_path / name
        path.write_bytes(data)
        assert image_size(data) == (side, side)
        with pytest.raises(ImageTooLarge) as info:
            read_image(path)
        message = str(info.value)
        assert message.startswith(f"{path}: image is {side}x{side} = {side * side // 10**6} MP")
        assert "over the 100 MP limit (--max-pixels)" in message   # the header check, not OpenCV's
    with pytest.raises(ImageTooLarge):
        read_label(tmp_path / "bomb.png")
    # a limit the caller sets applies too, and None lifts it for images that are really there
    height, width = image_size(reference.read_bytes())
    with pytest.raises(ImageTooLarge, match=f"image is {width}x{height} = .* MP, over the .* MP limit"):
        read_image(reference, max_pixels=height * width - 1)
    assert read_image(reference, max_pixels=height * width).shape[:2] == (height, width)
    assert read_image(reference, max_pixels=None).shape[:2] == (height, width)


def test_opencv_errors_become_one_line_errors(reference):
    """With no limit of ours, OpenCV's own refusal (a cv2.error today) is still one line."""
    bomb = _patch_jpeg_size(reference.read_bytes(), 65000, 65000)
    with pytest.raises(ImageTooLarge) as info:
        decode_image(bomb, "bomb.jpg", max_pixels=None)
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" in str(info.value) and "\n" not in str(info.value)


def test_header_bombs_never_allocate_and_opencv_backstop_is_set(reference, tmp_path):
    """In a fresh process (as the CLI starts): OpenCV's own limit is set before cv2 loads,
    and refusing four 65000/30000-pixel-square bombs costs no memory."""
    for i, side in enumerate((65000, 30000, 65000, 30000)):
        (tmp_path / f"bomb{i}.jpg").write_bytes(_patch_jpeg_size(reference.read_bytes(), side, side))
    script = textwrap.dedent(f"""
        import json, os, resource, sys
        from pathlib import Path
        from unetlite.infer.io import images as imageio
        env = os.environ.get(imageio.OPENCV_LIMIT_ENV)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kinds = []
        for path in sorted(Path({str(tmp_path)!r}).glob("bomb*.jpg")):
            try:
                imageio.read_image(path)
            except imageio.ImageReadError as exc:
                kinds.append(type(exc).__name__)
        try:  # our limit off: OpenCV's backstop (100 MP, read at import) refuses 900 MP
            imageio.read_image(Path({str(tmp_path)!r}) / "bomb1.jpg", max_pixels=None)
        except imageio.ImageReadError as exc:
            kinds.append(str(exc))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(json.dumps({{"env": env, "kinds": kinds, "grown_kb": grown}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != imageio.OPENCV_LIMIT_ENV}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["env"] == str(DEFAULT_MAX_PIXELS)
    assert result["kinds"][:4] == ["ImageTooLarge"] * 4
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" in result["kinds"][4] and "900 MP" in result["kinds"][4]
    assert result["grown_kb"] < 100_000  # a 30000x30000 decode alone would take 2.7 GB


def test_huge_files_are_refused_without_reading_them(reference, tmp_path):
    """A 3 GB file (sparse: no disk used) that starts like a real JPEG is not read into memory."""
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.write(reference.read_bytes())
        fh.truncate(3 * 10**9)
    with pytest.raises(ImageTooLarge, match=r"huge.jpg: file is over 1.2 GB, more than any image"):
        read_image(huge)
    # a device that never ends is not read at all: not a regular file
    if os.path.exists("/dev/zero"):
        with pytest.raises(ImageReadError, match="/dev/zero: not a regular file"):
            read_image("/dev/zero", max_pixels=1000)


# ------------------------------------------------------------------ truncation by structure

def _exif_thumbnail_jpeg(data: bytes) -> bytes:
    """The photo with an APP1 EXIF block holding a complete thumbnail JPEG (with its own EOI)."""
    thumb = cv2.imencode(".jpg", cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), 1), (40, 30)))[1].tobytes()
    payload = b"Exif\0\0" + b"MM\0*\0\0\0\x08\0\0\0\0\0\0" + thumb
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_data_after_the_end_marker_is_accepted(reference, tmp_path):
    jpeg = reference.read_bytes()
    png = cv2.imencode(".png", cv2.imread(str(reference)))[1].tobytes()
    expected = read_image(reference)
    rng = np.random.default_rng(0)
    trailers = [b"\0" * 5000, b"MotionPhoto_Data" + rng.bytes(3000), jpeg[:3000]]  # a JPEG head, too
    for i, trailer in enumerate(trailers):
        (tmp_path / f"t{i}.jpg").write_bytes(jpeg + trailer)
        (tmp_path / f"t{i}.png").write_bytes(png + trailer)
        assert np.array_equal(read_image(tmp_path / f"t{i}.jpg"), expected)
        assert np.array_equal(read_image(tmp_path / f"t{i}.png"), expected)
    thumbed = _exif_thumbnail_jpeg(jpeg)
    assert np.array_equal(decode_image(thumbed), expected)


def test_truncated_files_are_refused_wherever_they_end(reference, trimap, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    jpeg = reference.read_bytes()
    buf = io.BytesIO()
    Image.open(reference).save(buf, "JPEG", progressive=True, quality=90)
    progressive = buf.getvalue()
    thumbed = _exif_thumbnail_jpeg(jpeg)
    png = cv2.imencode(".png", cv2.imread(str(reference)))[1].tobytes()
    cases = {"JPEG": [jpeg, progressive, thumbed], "PNG": [png]}
    for kind, sources in cases.items():
        for data in sources:
            for cut in (len(data) // 3, len(data) * 2 // 3, len(data) - 2 if kind == "JPEG" else len(data) - 12):
                with pytest.raises(ImageReadError, match=f"truncated {kind}: data ends before") as info:
                    decode_image(data[:cut], "cut")
                assert "\n" not in str(info.value)
    # thumbnail's own end marker is inside the EXIF block: a cut just after it is still truncated
    thumb_end = thumbed.index(b"\xff\xd9") + 2
    with pytest.raises(ImageReadError, match="truncated JPEG"):
        decode_image(thumbed[:thumb_end + 500])
    # labels get the same check
    cut = tmp_path / "cut.png"
    cut.write_bytes(trimap.read_bytes()[:-20])
    with pytest.raises(ImageReadError, match="truncated PNG"):
        read_label(cut)
    trailing = tmp_path / "trailing.png"
    trailing.write_bytes(trimap.read_bytes() + b"\0" * 100)
    assert np.array_equal(read_label(trailing), read_label(trimap))


# ------------------------------------------------------------------ reduced decode

def _upscaled_jpeg(reference: Path, factor: int, orientation: int = 1) -> bytes:
    bgr = cv2.imread(str(reference))
    big = cv2.resize(bgr, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    if orientation == 1:
        return cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    Image = pytest.importorskip("PIL.Image")
    return _with_orientation(Image.fromarray(big[..., ::-1]), "JPEG", orientation)


def test_reduced_decode_gives_the_same_model_input(reference):
    contract = ModelContract()
    data = _upscaled_jpeg(reference, 6)
    full = decode_image(data)
    height, width = image_size(data)
    assert full.shape[:2] == (height, width)
    reduced = decode_image(data, reduce_to=contract.input_size)
    factor = max(f for f in (1, 2, 4, 8) if height >= f * contract.input_size[0] and width >= f * contract.input_size[1])
    assert factor >= 2 and reduced.shape == (-(-height // factor), -(-width // factor), 3)
    a, b = prepare(full, contract), prepare(reduced, contract)
    diff = np.abs(a - b) / np.float32(contract.scale)  # in 0..255 grey levels
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 12
    # not reduced when the image is not at least twice the target in both sides, nor for PNG
    assert decode_image(data, reduce_to=(height // 2 + 1, 8)).shape == full.shape
    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(data, np.uint8), 1))[1].tobytes()
    assert decode_image(png, reduce_to=(8, 8)).shape == full.shape


def test_reduced_decode_keeps_exif_orientation(reference):
    upright = _upscaled_jpeg(reference, 4)
    rotated = _upscaled_jpeg(reference, 4, orientation=6)
    height, width = image_size(upright)
    assert image_size(rotated) == (width, height)
    factor = max(f for f in (1, 2, 4, 8) if min(height, width) >= f * 64)
    assert factor >= 2
    small = decode_image(rotated, reduce_to=(64, 64))
    assert small.shape[:2] == (-(-width // factor), -(-height // factor))
    full = decode_image(rotated)
    expected = resize_image(full, small.shape[:2])
    assert np.abs(small.astype(int) - expected).mean() < 4
    stored = decode_image(rotated, apply_orientation=False, reduce_to=(64, 64))
    assert stored.shape[:2] == (-(-height // factor), -(-width // factor))


# ------------------------------------------------------------------ writes

def test_write_image_is_atomic_and_round_trips(reference, tmp_path):
    img = read_image(reference)
    out = tmp_path / "a" / "b.png"
    write_image(out, img)
    assert np.array_equal(read_image(out), img)
    assert [p.name for p in out.parent.iterdir()] == ["b.png"]  # no temp file left
    assert (out.stat().st_mode & 0o777) != 0o600                 # usual permissions, not mkstemp's


def test_write_atomic_fsyncs_file_before_rename_and_folder_after(tmp_path, monkeypatch):
    """Records (and really performs) the fsync and rename calls."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file"))
        return real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(tmp_path / "x.bin", b"data")
    assert events == ["fsync-file", "replace", "fsync-dir"]
    assert (tmp_path / "x.bin").read_bytes() == b"data"


def test_failed_writes_leave_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "mask.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # fails mid-write
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(WriteError) as info:
        write_atomic(tmp_path / "folder.png", b"new")
    assert info.value.errno == errno.EISDIR and str(info.value).startswith(f"cannot write {tmp_path}/folder.png: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.png", "mask.png"]


def test_disk_full_surfaces_as_one_line_oserror(tmp_path):
    """A real write failure: the file-size limit (EFBIG, the same path as ENOSPC)."""
    script = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from unetlite.infer.io.images import write_atomic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        target = Path({str(tmp_path)!r}) / "out.png"
        try:
            write_atomic(target, b"x" * 100_000)
        except OSError as exc:
            print(type(exc).__name__, exc.errno, str(exc))
    """)
    (tmp_path / "out.png").write_bytes(b"old")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kind, code, message = out.stdout.strip().split(" ", 2)
    assert kind == "WriteError" and int(code) == errno.EFBIG
    assert message == f"cannot write {tmp_path}/out.png: File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"] and (tmp_path / "out.png").read_bytes() == b"old"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_surfaces_as_one_line_oserror(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError) as info:
            write_atomic(folder / "x.png", b"data")
        assert info.value.errno == errno.EACCES and str(info.value).startswith(f"cannot write {folder}/x.png: ")
    finally:
        folder.chmod(0o755)


def test_stale_temps_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    script = textwrap.dedent(f"""
        import time
        from unetlite.infer.io.images import make_temp
        make_temp({str(out / "a.png")!r}); make_temp({str(out / "sub" / "v.mp4")!r}, keep_suffix=True)
        print("ready", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    temps = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(temps) == 2 and all(imageio.is_temp_name(name) for name in temps)
    assert remove_stale_temps(out) == 0          # its writer is still running: kept
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    users = [".a.png.tmp", "a.unetlite-1-abcdefgh.tmp", ".a.png.unetlite-x-abcdefgh.tmp", "photo.png", ".hidden"]
    for name in users:
        (out / name).write_bytes(b"user data")
    mine = imageio.make_temp(out / "b.png")       # this process's own, in flight
    assert remove_stale_temps(out, recursive=False) == 1
    assert remove_stale_temps(out) == 1
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(users + [mine.name])
    assert list((out / "sub").iterdir()) == []
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_temp_names_fit_even_for_long_target_names(tmp_path):
    target = tmp_path / ("é" * 120 + ".png")  # 245 bytes in UTF-8
    write_atomic(target, b"data")
    assert target.read_bytes() == b"data" and len(list(tmp_path.iterdir())) == 1


# ------------------------------------------------------------------ printable names

def test_names_that_are_not_utf8_give_printable_one_line_errors(reference, tmp_path):
    folder = os.fsencode(tmp_path)
    bad = os.path.join(folder, b"caf\xe9\nnew.jpg")  # Latin-1 byte and a newline in the name
    with open(bad, "wb") as fh:
        fh.write(reference.read_bytes()[:5000])
    name = os.fsdecode(bad)
    with pytest.raises(ImageReadError) as info:
        read_image(name)
    message = str(info.value)
    assert message == f"{tmp_path}/caf\\xe9\\x0anew.jpg: truncated JPEG: data ends before the end-of-image marker"
    message.encode("utf-8")                     # printable anywhere
    with open(tmp_path / "failures.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow([info.value.path, info.value.reason])
    rows = list(csv.reader(open(tmp_path / "failures.csv", encoding="utf-8")))
    assert rows == [[display_path(name), info.value.reason]]
    assert display_path(bad) == display_path(name) == display_path(Path(name))
    assert display_path("plain/ok é.jpg") == "plain/ok é.jpg"

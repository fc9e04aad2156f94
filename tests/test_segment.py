"""`unetlite segment` on real pets images, including the awkward inputs users really have."""
from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest

from conftest import PETS, pet_names
from unetlite.infer.cli import main
from unetlite.infer.imageio import read_image
from unetlite.infer.session import Segmenter


def _exif_rotated_jpeg(src, dst):
    """Store the image rotated 90 deg clockwise on disk with EXIF orientation 8 ("rotate 270 CW
    to display"), so a correct reader shows it upright again."""
    Image = pytest.importorskip("PIL.Image")
    img = Image.open(src)
    stored = img.transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    stored.save(dst, exif=exif.tobytes())
    return img.size  # displayed (width, height)


@pytest.fixture()
def messy_folder(tmp_path, pets_dir):
    """Nested real images plus every kind of bad or unusual file."""
    root = tmp_path / "in"
    (root / "cats" / "deeper").mkdir(parents=True)
    (root / "dogs").mkdir()
    names = pet_names("test", 6)
    shutil.copy(PETS / "images" / f"{names[0]}.jpg", root / "cats")
    shutil.copy(PETS / "images" / f"{names[1]}.jpg", root / "cats" / "deeper")
    shutil.copy(PETS / "images" / f"{names[2]}.jpg", root / "dogs")
    bgr = cv2.imread(str(PETS / "images" / f"{names[3]}.jpg"))
    cv2.imwrite(str(root / "dogs" / "grey.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "dogs" / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(root / "dogs" / "deep16.png"), bgr.astype(np.uint16) * 257)
    displayed = _exif_rotated_jpeg(PETS / "images" / f"{names[4]}.jpg", root / "cats" / "rotated.jpg")
    data = (PETS / "images" / f"{names[5]}.jpg").read_bytes()
    (root / "cats" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "cats" / "empty.jpg").write_bytes(b"")
    (root / "cats" / "notes.jpg").write_text("this is a text file, not a photo\n")
    (root / "dogs" / "garbage.png").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "dogs" / "readme.txt").write_text("ignored: not an image extension")
    return root, displayed


GOOD = {"cats/{0}", "cats/deeper/{1}", "dogs/{2}", "dogs/grey", "dogs/rgba", "dogs/deep16", "cats/rotated"}
BAD = {"cats/truncated.jpg": "truncated JPEG", "cats/empty.jpg": "empty", "cats/notes.jpg": "not a decodable image",
       "dogs/garbage.png": "not a decodable image"}


def test_folder_run_handles_nested_and_bad_files(messy_folder, tiny_onnx, tmp_path, capsys):
    root, displayed = messy_folder
    out = tmp_path / "out"
    code = main(["segment", str(root), "-o", str(out), "-r", "--model", str(tiny_onnx), "--providers", "cpu",
                 "--no-progress"])
    assert code == 1  # some inputs failed, the rest were processed
    names = pet_names("test", 3)
    expected = {g.format(*names) + ".png" for g in GOOD}
    written = {str(p.relative_to(out)) for p in out.rglob("*.png")}
    assert written == expected
    for rel in expected:  # output size == (EXIF-corrected) input size, 0/255 masks
        src = next(root.glob(rel[:-4] + ".*"))
        mask = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED)
        assert mask.shape == read_image(src).shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
    rotated = cv2.imread(str(out / "cats" / "rotated.png"), cv2.IMREAD_UNCHANGED)
    assert (rotated.shape[1], rotated.shape[0]) == displayed
    with (out / "failures.csv").open() as fh:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert {str(root / k) for k in BAD} == set(rows)
    for rel, reason in BAD.items():
        assert reason in rows[str(root / rel)]
    err = capsys.readouterr()
    for rel in BAD:
        assert str(root / rel) in err.err
    assert "7 done, 0 skipped" in err.out and "4 failed" in err.out
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))


def test_resume_skips_done_files_and_overwrite_redoes_them(tiny_onnx, tmp_path, pets_dir, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for n in pet_names("test", 4):
        shutil.copy(PETS / "images" / f"{n}.jpg", src)
    out = tmp_path / "out"
    args = ["segment", str(src), "-o", str(out), "--model", str(tiny_onnx), "--providers", "cpu", "--no-progress"]
    assert main(args) == 0
    first = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    victim = sorted(first)[0]
    victim.unlink()  # as if the run had been interrupted before this one
    capsys.readouterr()
    assert main(args) == 0
    assert "1 done, 3 skipped" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in first.items() if p != victim)
    assert main(args + ["--overwrite"]) == 0
    assert "4 done, 0 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("fmt,suffix,channels", [("mask", ".png", 1), ("cutout", ".png", 4), ("overlay", ".jpg", 3),
                                                 ("prob", ".png", 1), ("side-by-side", ".jpg", 3)])
def test_every_format_writes_a_decodable_picture(fmt, suffix, channels, tiny_onnx, tmp_path, pets_dir):
    name = pet_names("test", 1)[0]
    image = PETS / "images" / f"{name}.jpg"
    out = tmp_path / fmt
    assert main(["segment", str(image), "-o", str(out), "--format", fmt, "--model", str(tiny_onnx),
                 "--providers", "cpu", "--no-progress"]) == 0
    written = cv2.imread(str(out / (name + suffix)), cv2.IMREAD_UNCHANGED)
    height, width = cv2.imread(str(image)).shape[:2]
    expected_width = 3 * width if fmt == "side-by-side" else width
    assert written.shape[:2] == (height, expected_width)
    assert (written.shape[2] if written.ndim == 3 else 1) == channels
    if fmt == "cutout":  # transparent exactly where the mask says background
        seg = Segmenter(tiny_onnx, providers="cpu")(read_image(image))
        assert np.array_equal(written[..., 3] > 0, seg.mask.astype(bool))


def test_glob_input_mirrors_paths_below_the_pattern(tiny_onnx, tmp_path, pets_dir):
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    for n in pet_names("test", 2):
        shutil.copy(PETS / "images" / f"{n}.jpg", src)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "in" / "*" / "*.jpg"), "-o", str(out), "--model", str(tiny_onnx),
                 "--providers", "cpu", "--no-progress"]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(
        f"sub/{n}.png" for n in pet_names("test", 2))


def test_usage_errors_exit_2(tiny_onnx, tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "o"), "--model", str(tiny_onnx)]) == 2
    assert "no input images found" in capsys.readouterr().err
    assert main(["segment", str(PETS / "images" / "Abyssinian_1.jpg"), "-o", str(tmp_path / "o"),
                 "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx: model file not found" in capsys.readouterr().err
    assert main(["segment", "x.jpg", "-o", "o", "--format", "bogus"]) == 2


def test_tiled_inference_is_seamless_and_full_size(tiny_onnx, pets_dir):
    """Tiles of the dynamic-size tiny model (64 px) over a 704x480 image must agree with one
    full-image pass of the same fully convolutional model, away from the image border."""
    seg = Segmenter(tiny_onnx, providers="cpu")
    rgb = cv2.resize(read_image(PETS / "images" / f"{pet_names('test', 1)[0]}.jpg"), (704, 480))
    tiled = seg(rgb, tile=True).probability
    assert tiled.shape == (480, 704)
    from unetlite.infer.preprocess import to_float
    whole = seg.run(to_float(rgb, seg.contract)[None])[0]
    inner = (slice(32, -32), slice(32, -32))
    # 64 px tiles give this depth-3 net less context than one whole pass, so the maps differ
    # somewhat (measured mean 0.07); misplaced or unblended tiles differ by 0.3 and more.
    assert np.abs(tiled - whole)[inner].mean() < 0.1
    # no seams: the tiled map is hardly rougher across columns than the single pass (measured 1.13x)
    rough_tiled = np.abs(np.diff(tiled[inner], axis=1)).mean()
    rough_whole = np.abs(np.diff(whole[inner], axis=1)).mean()
    assert rough_tiled < rough_whole * 1.3
    small = rgb[:40, :50]  # smaller than one tile
    assert seg(small, tile=True).probability.shape == (40, 50)

"""Every common image flavour reads as 8-bit RGB matching the original pixels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import PETS, pet_names
from unetlite.infer.imageio import ImageReadError, read_image, write_image


@pytest.fixture()
def reference(pets_dir):
    return PETS / "images" / f"{pet_names('test', 1)[0]}.jpg"


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


def test_write_image_is_atomic_and_round_trips(reference, tmp_path):
    img = read_image(reference)
    out = tmp_path / "a" / "b.png"
    write_image(out, img)
    assert np.array_equal(read_image(out), img)
    assert [p.name for p in out.parent.iterdir()] == ["b.png"]  # no temp file left
    assert (out.stat().st_mode & 0o777) != 0o600                 # usual permissions, not mkstemp's

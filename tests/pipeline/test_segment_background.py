"""`unetlite segment --background blur[:S] | PATH | R,G,B` and `--edge soft|hard` on real pet photos
(tiny real model): what is behind the subject is the replacement exactly where the alpha is 0,
blur lowers the background's variance, resume redoes outputs made with other settings, and mask
and prob outputs stay byte-identical whatever --edge says."""
from __future__ import annotations

import shutil

import json

import cv2
import numpy as np
import pytest

from unetlite.infer.cli import main
from unetlite.infer.engine.alpha import soft_alpha
from unetlite.infer.io.images import read_image
from unetlite.infer.pipeline import backgrounds
from unetlite.infer.pipeline.backgrounds import cover
from unetlite.infer.pipeline.manifest import MANIFEST_NAME


@pytest.fixture(scope="module")
def photos(pets_dir, tmp_path_factory):
    """Copies outside the repository: an input below the current folder keeps its path in the output name."""
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted((pets_dir / "images").glob("*.jpg")):
        shutil.copy(path, folder / path.name)
    return sorted(folder.glob("*.jpg"))


def _segment(*argv, model) -> int:
    return main(["segment", *map(str, argv), "--model", str(model), "--providers", "cpu", "--no-progress"])


def _read(path) -> np.ndarray:
    picture = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert picture is not None, path
    if picture.ndim == 3:
        picture = cv2.cvtColor(picture, cv2.COLOR_BGRA2RGBA if picture.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return picture


def _mask(photo, model, tmp_path) -> np.ndarray:
    """The mask the pixel-showing formats use: a hard cutout's alpha (--format mask decodes JPEGs at
    reduced size, so its mask may differ by a few edge pixels)."""
    out = tmp_path / "masks"
    assert _segment(photo, "-o", out, "--format", "cutout", "--edge", "hard", model=model) == 0
    return (_read(out / (photo.name + ".png"))[..., 3] > 0).astype(np.uint8)


@pytest.fixture(scope="module")
def subject(photos, tiny_onnx, tmp_path_factory):
    """A photo where the tiny model finds both a subject and a background: (photo, rgb, mask, soft alpha)."""
    tmp = tmp_path_factory.mktemp("subject")
    for photo in photos:
        mask = _mask(photo, tiny_onnx, tmp)
        alpha = soft_alpha(read_image(photo), mask)
        if (alpha == 0).sum() > 5000 and (alpha == 1).sum() > 2000:
            return photo, read_image(photo), mask, alpha
    pytest.skip("the tiny model found no photo with both subject and background")


def test_image_background_is_the_image_where_alpha_is_0_and_the_photo_where_1(subject, photos, tiny_onnx, tmp_path,
                                                                              monkeypatch):
    photo, rgb, mask, alpha = subject
    backdrop = next(p for p in photos if p != photo)
    loads = []
    real_load = backgrounds._load_still
    monkeypatch.setattr(backgrounds, "_STILLS", {})
    monkeypatch.setattr(backgrounds, "_load_still", lambda spec: loads.append(spec) or real_load(spec))
    others = [p for p in photos if p not in (photo, backdrop)][:2]
    out = tmp_path / "out"
    assert _segment(photo, *others, "-o", out, "--background", backdrop, model=tiny_onnx) == 0  # composite implied
    assert len(loads) == 1   # decoded once per run, resized per photo
    picture = _read(out / (photo.name + ".png"))
    h, w = rgb.shape[:2]
    expected = cover(read_image(backdrop), h, w)
    assert picture.shape == (h, w, 3)
    assert (picture[alpha == 0] == expected[alpha == 0]).all()
    assert (picture[alpha == 1] == rgb[alpha == 1]).all()
    between = (alpha > 0) & (alpha < 1)
    assert between.any()   # soft edge by default
    for other in others:   # other sizes: the same backdrop, covered and centre-cropped to each
        assert _read(out / (other.name + ".png")).shape[:2] == read_image(other).shape[:2]


def test_colour_background_is_the_colour_where_alpha_is_0(subject, tiny_onnx, tmp_path):
    photo, rgb, mask, alpha = subject
    out = tmp_path / "out"
    assert _segment(photo, "-o", out, "--background", "10,200,30", "--format", "composite", model=tiny_onnx) == 0
    picture = _read(out / (photo.name + ".png"))
    assert (picture[alpha == 0] == (10, 200, 30)).all()
    assert (picture[alpha == 1] == rgb[alpha == 1]).all()
    hard = tmp_path / "hard"
    assert _segment(photo, "-o", hard, "--background", "10,200,30", "--edge", "hard", model=tiny_onnx) == 0
    picture = _read(hard / (photo.name + ".png"))
    assert (picture[mask == 0] == (10, 200, 30)).all() and (picture[mask == 1] == rgb[mask == 1]).all()


def test_blur_lowers_the_background_variance(subject, tiny_onnx, tmp_path):
    photo, rgb, mask, alpha = subject
    out = tmp_path / "out"
    assert _segment(photo, "-o", out, "--background", "blur:4", model=tiny_onnx) == 0
    picture = _read(out / (photo.name + ".png"))
    behind = alpha == 0
    grey_in = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    grey_out = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
    detail_in = cv2.Laplacian(grey_in, cv2.CV_32F)[behind].var()
    detail_out = cv2.Laplacian(grey_out, cv2.CV_32F)[behind].var()
    assert detail_out < 0.2 * detail_in
    assert grey_out[behind].astype(np.float32).var() < grey_in[behind].astype(np.float32).var()
    assert (picture[alpha == 1] == rgb[alpha == 1]).all()


def test_a_video_background_gives_its_first_frame(subject, video_dir, tiny_onnx, tmp_path):
    photo, rgb, mask, alpha = subject
    clip = video_dir / "vtest_people_short_384x288.mp4"
    capture = cv2.VideoCapture(str(clip))
    ok, first = capture.read()
    capture.release()
    assert ok
    out = tmp_path / "out"
    assert _segment(photo, "-o", out, "--background", clip, model=tiny_onnx) == 0
    picture = _read(out / (photo.name + ".png"))
    expected = cover(cv2.cvtColor(first, cv2.COLOR_BGR2RGB), *rgb.shape[:2])
    assert (picture[alpha == 0] == expected[alpha == 0]).all()


def test_resume_redoes_outputs_made_with_another_background_or_edge(subject, tiny_onnx, tmp_path, capsys):
    photo = subject[0]
    out = tmp_path / "out"
    output = out / (photo.name + ".png")
    assert _segment(photo, "-o", out, "--background", "0,0,255", model=tiny_onnx) == 0
    blue = output.read_bytes()
    assert _segment(photo, "-o", out, "--background", "0,0,255", model=tiny_onnx) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert _segment(photo, "-o", out, "--background", "blur", model=tiny_onnx) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "1 done" in line and "1 redone because the configuration changed" in line, line
    assert output.read_bytes() != blue
    assert _segment(photo, "-o", out, "--background", "blur", "--edge", "hard", model=tiny_onnx) == 0
    assert "1 redone because the configuration changed" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    assert [(r["background"], r["edge"]) for r in records] == [("0,0,255", "soft"), ("blur:3", "soft"),
                                                               ("blur:3", "hard")]


def test_resume_redoes_when_the_background_file_changes(subject, photos, tiny_onnx, tmp_path, capsys):
    photo = subject[0]
    backdrop = tmp_path / "backdrop.png"
    cv2.imwrite(str(backdrop), cv2.imread(str(next(p for p in photos if p != photo))))
    out = tmp_path / "out"
    assert _segment(photo, "-o", out, "--background", backdrop, model=tiny_onnx) == 0
    assert _segment(photo, "-o", out, "--background", backdrop, model=tiny_onnx) == 0
    assert "1 skipped" in capsys.readouterr().out
    cv2.imwrite(str(backdrop), cv2.imread(str(photos[-1]))[::-1])   # another picture at the same path
    assert _segment(photo, "-o", out, "--background", backdrop, model=tiny_onnx) == 0
    assert "1 redone because the configuration changed" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [("--background", "blur", "--format", "mask"),
                                  ("--background", "0,255,0", "--format", "cutout"),
                                  ("--background", "blur:0"),
                                  ("--background", "no/such/picture.png"),
                                  ("--edge", "fuzzy")])
def test_a_background_with_another_format_or_a_bad_value_is_a_usage_error(argv, photos, tiny_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(photos[0], "-o", out, *argv, model=tiny_onnx) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists() or not any(out.glob("*.png"))


def test_an_unreadable_background_file_stops_the_run_before_any_output(photos, tiny_onnx, tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture at all")
    out = tmp_path / "out"
    assert _segment(photos[0], "-o", out, "--background", junk, model=tiny_onnx) == 2
    assert "background" in capsys.readouterr().err
    assert not out.exists() or not any(out.glob("*.png"))


@pytest.mark.parametrize("fmt", ["mask", "prob", "side-by-side"])
def test_mask_and_prob_outputs_are_unchanged_by_edge(fmt, photos, tiny_onnx, tmp_path, capsys):
    made = {}
    for name, extra in (("plain", ()), ("soft", ("--edge", "soft")), ("hard", ("--edge", "hard"))):
        out = tmp_path / name
        assert _segment(*photos[:3], "-o", out, "--format", fmt, *extra, model=tiny_onnx) == 0
        made[name] = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if not p.name.startswith(".")}
    assert made["plain"] == made["soft"] == made["hard"] and len(made["plain"]) == 3
    # resume across --edge: the outputs stay done, including ones recorded before --edge existed
    out = tmp_path / "plain"
    manifest = out / MANIFEST_NAME
    old = [{k: v for k, v in json.loads(line).items() if k not in ("background", "edge")}
           for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in old))
    capsys.readouterr()
    assert _segment(*photos[:3], "-o", out, "--format", fmt, "--edge", "hard", model=tiny_onnx) == 0
    assert "3 skipped" in capsys.readouterr().out


def test_soft_cutout_and_overlay(subject, tiny_onnx, tmp_path):
    from unetlite.infer.io import formats
    photo, rgb, mask, alpha = subject
    soft, hard = tmp_path / "soft", tmp_path / "hard"
    assert _segment(photo, "-o", soft, "--format", "cutout", model=tiny_onnx) == 0
    assert _segment(photo, "-o", hard, "--format", "cutout", "--edge", "hard", model=tiny_onnx) == 0
    cut = _read(soft / (photo.name + ".png"))
    assert cut.shape == rgb.shape[:2] + (4,)
    assert ((cut[..., 3] > 0) & (cut[..., 3] < 255)).any()
    assert (cut[..., 3][alpha == 0] == 0).all() and (cut[..., 3][alpha == 1] == 255).all()
    assert (cut[..., :3][cut[..., 3] == 0] == 0).all()
    assert (_read(hard / (photo.name + ".png")) == formats.cutout(rgb, mask)).all()  # --edge hard: today's cutout
    assert _segment(photo, "-o", soft, "--format", "overlay", model=tiny_onnx) == 0
    overlay = _read(soft / (photo.name + ".jpg"))
    assert overlay.shape == rgb.shape


def test_the_library_default_is_the_plain_format(subject):
    """SegmentSettings() keeps the formats' own pixels (serve, eval, Ray callers); the CLI asks for soft."""
    from unetlite.infer.engine.postprocess import Segmentation
    from unetlite.infer.io import formats
    from unetlite.infer.pipeline.items import SegmentSettings, render
    photo, rgb, mask, alpha = subject
    seg = Segmentation(mask.astype(np.float32), mask, 0.5)
    for fmt in ("cutout", "overlay", "composite", "mask"):
        assert (render(SegmentSettings(fmt), rgb, seg) == formats.render(fmt, rgb, seg.probability, mask)).all()
    soft = render(SegmentSettings("cutout", edge="soft"), rgb, seg)
    assert ((soft[..., 3] > 0) & (soft[..., 3] < 255)).any()

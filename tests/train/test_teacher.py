"""The distillation teacher (train/teacher.py) and `unetlite soft-labels`, on the real teacher and real pictures.

Needs ../shared/teacher/deeplabv3_mnv2_pascal_quant.tflite, the ai-edge-litert package ([train] extra) and the
shared data; each test skips with the reason when one is missing. The teacher takes ~0.2 s per picture
(twice that with flip averaging), so every test runs it on a handful of pictures only.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED

TEACHER = SHARED.parent / "teacher" / "deeplabv3_mnv2_pascal_quant.tflite"
OXFORD_UNLABELED = SHARED / "oxford_pets_unlabeled"
SHIPPED_NAMES = ("Birman_121", "great_pyrenees_145", "staffordshire_bull_terrier_131")


@pytest.fixture(scope="module")
def teacher_path() -> Path:
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (pip install '.[train]')")
    if not TEACHER.is_file():
        pytest.skip(f"no teacher model at {TEACHER}")
    return TEACHER


@pytest.fixture(scope="module")
def teacher(teacher_path):
    from unetlite.train.teacher import Teacher
    return Teacher(teacher_path, flip=True, threads=2)


@pytest.fixture(scope="module")
def oxford_unlabeled(full_data) -> Path:
    if not (OXFORD_UNLABELED / "teacher_soft").is_dir():
        pytest.skip(f"no shipped soft masks at {OXFORD_UNLABELED / 'teacher_soft'}")
    return OXFORD_UNLABELED


def _read_png(path: Path) -> np.ndarray:
    import cv2
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def soft_labels(argv: list[str]) -> int:
    """`unetlite soft-labels ARGV` through its own module (register + run), as the unetlite entry point runs it."""
    from unetlite.train import soft_labels_cli

    parser = argparse.ArgumentParser(prog="unetlite")
    soft_labels_cli.register(parser.add_subparsers())
    args = parser.parse_args(["soft-labels", *argv])
    return args.run(args)


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_soft_mask_matches_the_shipped_one(teacher, oxford_unlabeled, name):
    """Same maths as ../shared/teacher/make_soft_labels.py, which made the shipped masks with flip averaging."""
    from unetlite.infer import read_image
    from unetlite.train.teacher import to_png_levels

    image = read_image(oxford_unlabeled / "images" / f"{name}.jpg")
    ours = to_png_levels(teacher.pet_probability(image)).astype(int)
    shipped = _read_png(oxford_unlabeled / "teacher_soft" / f"{name}.png").astype(int)
    assert ours.shape == shipped.shape == image.shape[:2]
    assert np.abs(ours - shipped).mean() <= 2.0
    assert ((ours > 127) == (shipped > 127)).mean() >= 0.995
    assert (ours > 127).mean() > 0.05      # a real pet was found, not an empty map agreeing with an empty map


def test_pet_free_scenes_get_nearly_empty_masks(teacher_path, full_data):
    from unetlite.infer import read_image
    from unetlite.train.teacher import Teacher

    scenes = sorted((full_data / "backgrounds" / "images").glob("*.jpg"))[::300]
    if not scenes:
        pytest.skip("no ../shared/data/backgrounds/images")
    fast = Teacher(teacher_path, flip=False, threads=2)
    for scene in scenes:
        p = fast.pet_probability(read_image(scene))
        assert p.dtype == np.float32 and p.shape == read_image(scene).shape[:2]
        assert (p > 0.5).mean() < 0.01, scene.name
        assert p.mean() < 0.05, scene.name


def test_person_class_marks_the_woman_not_the_pet(teacher, full_data):
    """dog_leash: a woman plays tug with a dog; the person map and the pet map are both there and apart."""
    from unetlite.train.teacher import iter_video_frames

    (name, frame), = iter_video_frames(f"{full_data / 'video' / 'dog_leash_1280x720.mp4'}@150:151")
    assert name == "dog_leash_1280x720_f00150"
    pet, person = teacher.pet_and_person(frame)
    assert np.allclose(person, teacher.person_probability(frame), atol=1e-6)
    assert (person > 0.5).mean() > 0.02 and (pet > 0.5).mean() > 0.005
    assert ((person > 0.5) & (pet > 0.5)).sum() < 0.05 * (person > 0.5).sum()


def test_cli_writes_the_good_pictures_and_reports_the_bad_one(teacher_path, oxford_unlabeled, tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    for name in SHIPPED_NAMES[:2]:
        shutil.copy(oxford_unlabeled / "images" / f"{name}.jpg", src)
    whole = (oxford_unlabeled / "images" / f"{SHIPPED_NAMES[2]}.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    root = tmp_path / "root"

    code = soft_labels([str(src), "-o", str(root), "--teacher", str(teacher_path), "-q"])

    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in (root / "teacher_soft").iterdir()) == [f"{n}.png" for n in SHIPPED_NAMES[:2]]
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"{n}.jpg" for n in SHIPPED_NAMES[:2]]
    bad = [line for line in err.splitlines() if "truncated.jpg" in line]
    assert len(bad) == 1 and "truncated" in bad[0].split("truncated.jpg", 1)[1]
    assert "1 of 3 inputs failed" in err
    for name in SHIPPED_NAMES[:2]:   # the CLI's masks are the shipped ones (flip averaging is the default)
        ours = _read_png(root / "teacher_soft" / f"{name}.png").astype(int)
        assert np.abs(ours - _read_png(oxford_unlabeled / "teacher_soft" / f"{name}.png")).mean() <= 2.0


def test_resume_keeps_existing_masks(teacher_path, oxford_unlabeled, tmp_path):
    from unetlite.train.teacher import Teacher, make_soft_labels

    src = tmp_path / "photos"
    src.mkdir()
    for name in SHIPPED_NAMES[:2]:
        shutil.copy(oxford_unlabeled / "images" / f"{name}.jpg", src)
    out = tmp_path / "masks"
    out.mkdir()
    sentinel = np.full((7, 5), 42, np.uint8)     # a mask already there: must not be recomputed
    import cv2
    cv2.imwrite(str(out / f"{SHIPPED_NAMES[0]}.png"), sentinel)
    fast = Teacher(teacher_path, flip=False)

    first = make_soft_labels(src, out, fast)
    assert (first.written, first.skipped, first.failed) == (1, 1, [])
    assert np.array_equal(_read_png(out / f"{SHIPPED_NAMES[0]}.png"), sentinel)
    made = out / f"{SHIPPED_NAMES[1]}.png"
    stamp = made.stat().st_mtime_ns

    again = make_soft_labels(src, out, fast)
    assert (again.written, again.skipped, again.failed) == (0, 2, [])
    assert made.stat().st_mtime_ns == stamp
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temp files left behind


def test_video_frames_become_a_soft_root(teacher_path, full_data, tmp_path):
    """clip.mp4@START:STOP:STEP -> ROOT/images/NAME.jpg + ROOT/teacher_soft/NAME.png, readable by --soft."""
    from unetlite.train.distill import soft_pairs
    from unetlite.train.teacher import Teacher, make_soft_labels

    clip = full_data / "video" / "cat_closeup_640x360.mp4"
    report = make_soft_labels(f"{clip}@100:105:2", tmp_path, Teacher(teacher_path, flip=False))
    names = [f"cat_closeup_640x360_f{i:05d}" for i in (100, 102, 104)]
    assert (report.written, report.failed) == (3, [])
    assert [name for name, _, _ in soft_pairs(tmp_path)] == names
    mask = _read_png(tmp_path / "teacher_soft" / f"{names[0]}.png")
    assert mask.shape == (360, 640) and mask.dtype == np.uint8
    assert (mask > 127).mean() > 0.05            # the cat close-up: the teacher finds it

    bad = make_soft_labels(f"{clip}@1:2:3:4", tmp_path, Teacher(teacher_path, flip=False))
    assert bad.written == 0 and len(bad.failed) == 1 and "START:STOP" in bad.failed[0][1]


def test_missing_runtime_is_one_line_with_the_install_hint(monkeypatch, tmp_path):
    from unetlite.train.teacher import Teacher, TeacherError

    model = tmp_path / "teacher.tflite"
    model.write_bytes(b"not used")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)       # import fails as if not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(TeacherError) as info:
        Teacher(model)
    assert "\n" not in str(info.value) and "pip install '.[train]'" in str(info.value)


def test_missing_teacher_file_exits_2(tmp_path, capsys):
    code = soft_labels([str(tmp_path), "-o", str(tmp_path / "root"), "--teacher", str(tmp_path / "none.tflite")])
    assert code == 2
    assert "none.tflite: teacher model not found" in capsys.readouterr().err

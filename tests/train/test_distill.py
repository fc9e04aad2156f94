"""Distillation targets (train/distill.py) on real pet photos: soft masks -> {0, 1, IGNORE}, images the
teacher finds empty or is unsure about are dropped, pet-free folders and video frames get empty targets."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from unetlite.train.distill import (IGNORE, SOFT_FOLDER, SoftConfig, load_negatives, load_soft, parse_frames,
                                    soft_problem, soft_target)

from conftest import PETS, pet_names


def test_confident_pixels_become_targets_and_the_band_is_ignored():
    p = np.array([[0.0, 0.2, 0.21, 0.5, 0.79, 0.8, 1.0]], np.float32)
    assert soft_target(p).tolist() == [[0, 0, IGNORE, IGNORE, IGNORE, 1, 1]]


def test_empty_and_unsure_soft_masks_are_dropped_with_a_reason():
    empty = np.zeros((100, 100), np.float32)
    empty[:5, :1] = 0.9                                  # 0.05% of the frame
    assert "no pet" in soft_problem(empty)
    unsure = np.full((100, 100), 0.5, np.float32)
    unsure[:30] = 1.0                                    # a pet, and a band over 70% of the frame
    assert "unsure" in soft_problem(unsure)
    good = np.zeros((100, 100), np.float32)
    good[20:80, 20:80] = 1.0
    assert soft_problem(good) is None


def test_hard_targets_at_one_threshold_still_drop_unsure_images():
    """--soft-low = --soft-high = 0.5 labels every pixel, but an image the teacher is unsure about stays out."""
    hard = SoftConfig(high=0.5, low=0.5)
    p = np.array([[0.1, 0.49, 0.5, 0.51, 0.9]], np.float32)
    assert soft_target(p, hard).tolist() == [[0, 0, 0, 1, 1]]
    unsure = np.full((100, 100), 0.6, np.float32)
    unsure[:30] = 1.0
    assert "unsure" in soft_problem(unsure, hard)


def _soft_root(tmp_path, names):
    """Real pet photos with soft masks made from their trimaps (pet 1.0, border 0.5, background 0.0)."""
    (tmp_path / "images").mkdir()
    (tmp_path / SOFT_FOLDER).mkdir()
    for name in names:
        shutil.copy(PETS / "images" / f"{name}.jpg", tmp_path / "images" / f"{name}.jpg")
        trimap = cv2.imread(str(PETS / "trimaps" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        soft = np.select([trimap == 1, trimap == 3], [255, 128], 0).astype(np.uint8)
        cv2.imwrite(str(tmp_path / SOFT_FOLDER / f"{name}.png"), soft)
    return tmp_path


def test_load_soft_reads_real_photos_and_keeps_their_confident_pixels(tmp_path):
    names = pet_names("trainval", 4)
    root = _soft_root(tmp_path, names)
    blank = root / SOFT_FOLDER / f"{names[0]}.png"      # the teacher found nothing in this one
    cv2.imwrite(str(blank), np.zeros_like(cv2.imread(str(blank), cv2.IMREAD_UNCHANGED)))
    arrays = load_soft(root, (64, 64), SoftConfig())
    assert sorted(arrays.names) == sorted(names[1:])
    assert arrays.images.shape == (3, 64, 64, 3) and arrays.masks.shape == (3, 64, 64)
    values = set(np.unique(arrays.masks).tolist())
    assert values <= {0, 1, IGNORE} and {0, 1} <= values


def test_load_soft_needs_both_folders(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="soft-labels"):
        load_soft(tmp_path, (64, 64))


def test_frame_ranges_parse_like_python_slices():
    assert parse_frames("clip.mp4@400:795:4") == (parse_frames("clip.mp4")[0], slice(400, 795, 4))
    assert parse_frames("clip.mp4")[1] == slice(None)
    with pytest.raises(ValueError):
        parse_frames("clip.mp4@1:2:3:4")


def test_negatives_from_a_folder_and_a_video_are_all_background(tmp_path, video_dir):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for name in pet_names("trainval", 2):
        shutil.copy(PETS / "images" / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    scenes = load_negatives(folder, (64, 64))
    assert len(scenes) == 2 and len(scenes.failed) == 1 and not scenes.masks.any()
    frames = load_negatives(f"{video_dir / 'vtest_people_short_384x288.mp4'}@10:40:10", (64, 64))
    assert frames.names == [f"vtest_people_short_384x288_f{i:05d}" for i in (10, 20, 30)]
    assert frames.images.shape == (3, 64, 64, 3) and frames.images.std() > 10 and not frames.masks.any()


def test_empty_foreground_metric_is_the_painted_share_of_pet_free_images():
    keras = pytest.importorskip("keras")
    from unetlite.train.metrics import EmptyForeground

    y_true = np.zeros((3, 4, 4, 1), np.float32)
    y_true[1, :2] = 1.0                      # this image holds a pet: not counted
    y_true[2] = IGNORE                       # nothing labelled: not counted
    y_pred = np.zeros((3, 4, 4, 1), np.float32)
    y_pred[0, 0, :] = 0.9                    # 4 of 16 pixels painted in the pet-free image
    y_pred[1] = 0.9
    metric = EmptyForeground()
    metric.update_state(keras.ops.convert_to_tensor(y_true), keras.ops.convert_to_tensor(y_pred))
    assert float(metric.result()) == pytest.approx(0.25)
    restored = EmptyForeground.from_config(metric.get_config())
    assert restored.threshold == 0.5 and restored.name == "empty_fg"

"""The training switches for model quality: multi-root split, copy-paste, losses, pseudo-labels, EMA."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from unetlite.infer.io.dataset import read_list  # noqa: E402
from unetlite.infer.io.images import read_image, read_label  # noqa: E402
from unetlite.infer.engine.preprocess import resize_image, resize_mask, trimap_to_mask  # noqa: E402
from unetlite.train.augment import PasteConfig, paste_pet  # noqa: E402
from unetlite.train.data import split_pairs  # noqa: E402
from unetlite.train.losses import IGNORE, bce_dice, masked_bce, soft_dice  # noqa: E402


def _pair(pets_dir, name, size=(96, 96)):
    image = resize_image(read_image(pets_dir / "images" / f"{name}.jpg", apply_orientation=False), size)
    mask = trimap_to_mask(resize_mask(read_label(pets_dir / "trimaps" / f"{name}.png"), size))
    return image, mask


def _two_roots(pets_dir, tmp_path):
    names = read_list(pets_dir / "trainval.txt") + read_list(pets_dir / "test.txt")
    roots = []
    for i, part in enumerate((names[::2], names[1::2])):
        root = tmp_path / f"root{i}"
        (root / "images").mkdir(parents=True)
        (root / "trimaps").mkdir()
        for n in part:
            shutil.copy(pets_dir / "images" / f"{n}.jpg", root / "images")
            shutil.copy(pets_dir / "trimaps" / f"{n}.png", root / "trimaps")
        roots.append(root)
    # root0: lists of its own; root1: no lists, but an official test list beside it.
    tv, te = set(read_list(pets_dir / "trainval.txt")), set(read_list(pets_dir / "test.txt"))
    (roots[0] / "trainval.txt").write_text("\n".join(n for n in names[::2] if n in tv) + "\n")
    (roots[0] / "test.txt").write_text("\n".join(n for n in names[::2] if n in te) + "\n")
    (roots[1] / "official").mkdir()
    (roots[1] / "official" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in te))
    return roots, te


def test_split_over_roots_never_trains_or_validates_on_test_names(pets_dir, tmp_path):
    roots, test_names = _two_roots(pets_dir, tmp_path)
    train, val, description = split_pairs(roots, val_fraction=0.2, seed=1)
    used = {p.name for p in train} | {p.name for p in val}
    assert used and not used & test_names
    assert not {p.name for p in train} & {p.name for p in val}
    assert {p.name for p in val} == {p.name for p in split_pairs(roots, val_fraction=0.2, seed=1)[1]}
    assert len(val) == round(len(used) * 0.2)
    assert "held out" in description


def test_paste_puts_the_pet_on_the_background_at_the_requested_scale(pets_dir):
    names = read_list(pets_dir / "trainval.txt")
    image, mask = _pair(pets_dir, names[0])
    background, _ = _pair(pets_dir, names[1])
    cfg = PasteConfig(area=(0.05, 0.05), border_cut=0.0, occlusion=0.0)
    out, new_mask = paste_pet(image, mask, background, np.random.default_rng(3), cfg)
    assert out.shape == image.shape and new_mask.shape == mask.shape
    ys, xs = np.nonzero(new_mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) / new_mask.size
    assert 0.03 < box < 0.08                       # ~5% of the frame, as asked
    # Far from the pasted box the scene is untouched.
    outside = np.ones_like(new_mask, bool)
    outside[max(ys.min() - 2, 0):ys.max() + 3, max(xs.min() - 2, 0):xs.max() + 3] = False
    assert np.array_equal(out[outside], background[outside])
    # Inside the mask the pixels are the pet's: mean colour close to the pet's own.
    assert np.abs(out[new_mask == 1].mean(0) - image[mask == 1].mean(0)).max() < 25


def test_occluder_removes_pet_pixels_from_the_mask(pets_dir):
    names = read_list(pets_dir / "trainval.txt")
    image, mask = _pair(pets_dir, names[2])
    background, _ = _pair(pets_dir, names[3])
    plain = paste_pet(image, mask, background, np.random.default_rng(5), PasteConfig(occlusion=0.0))[1]
    occluded = paste_pet(image, mask, background, np.random.default_rng(5), PasteConfig(occlusion=1.0))[1]
    assert occluded.sum() < plain.sum() and not (occluded & ~plain.astype(bool)).any()


def test_losses_ignore_unlabelled_pixels_and_score_overlap():
    rng = np.random.default_rng(0)
    truth = (rng.random((2, 16, 16, 1)) > 0.5).astype("float32")
    pred = rng.random((2, 16, 16, 1)).astype("float32")
    unsure = truth.copy()
    unsure[:, :4] = IGNORE
    other = pred.copy()
    other[:, :4] = 1 - other[:, :4]             # change predictions only where the label is ignored
    for loss in (masked_bce, soft_dice, bce_dice):
        assert np.allclose(np.asarray(loss(unsure, pred)), np.asarray(loss(unsure, other)), atol=1e-6)
        assert not np.allclose(np.asarray(loss(truth, pred)), np.asarray(loss(truth, other)), atol=1e-6)
    assert np.allclose(np.asarray(soft_dice(truth, truth)), 0.0, atol=1e-6)
    half = np.zeros((1, 2, 2, 1), "float32")
    half[0, 0, 0] = 1
    guess = np.zeros_like(half)
    guess[0, 0] = 1                               # 1 hit, 1 false positive: Dice = 2*1/(2+1)
    assert np.isclose(float(np.asarray(soft_dice(half, guess))[0]), 1 - 3 / 4, atol=1e-6)  # smoothed: (2+1)/(3+1)


def test_pseudo_labels_keep_confident_pixels_and_flip_averaging_is_symmetric(pets_dir, tiny_onnx, tmp_path):
    from unetlite.infer.engine.segmenter import Segmenter
    from unetlite.train.pseudo import pseudo_label

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for n in read_list(pets_dir / "trainval.txt")[:8]:
        shutil.copy(pets_dir / "images" / f"{n}.jpg", folder)
    (folder / "broken.jpg").write_bytes(b"not an image")
    seg = Segmenter(tiny_onnx, providers="cpu")
    images = np.stack([resize_image(read_image(p), (64, 64)) for p in sorted(folder.glob("*_*.jpg"))])

    def flip_averaged(pictures):  # the teacher's view: the engine's flip averaging on prepared inputs
        return seg.run(np.stack([seg.prepare(p) for p in pictures]), tta=True)

    probs = flip_averaged(images)
    assert np.allclose(flip_averaged(images[:, :, ::-1])[:, :, ::-1], probs, atol=1e-5)
    arrays = pseudo_label(folder, tiny_onnx, (64, 64), max_unsure=1.0, min_pet=0.0)
    assert len(arrays) == 8 and arrays.failed and arrays.failed[0][0].endswith("broken.jpg")
    assert set(np.unique(arrays.masks)) <= {0, 1, 2}
    strict = pseudo_label(folder, tiny_onnx, (64, 64), max_unsure=0.05)
    assert all((m == 2).mean() <= 0.05 for m in strict.masks)


def test_training_with_every_quality_switch_runs_and_keeps_test_names_out(pets_dir, tiny_onnx, tmp_path):
    from unetlite.train.loop import TrainConfig, train
    from unetlite.train.model import UNetConfig

    roots, test_names = _two_roots(pets_dir, tmp_path)
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for i in range(3):  # pet-free scenes: smooth real textures made from a photo's blurred corner
        corner = read_image(pets_dir / "images" / f"{read_list(pets_dir / 'test.txt')[i]}.jpg")[:40, :40]
        cv2.imwrite(str(scenes / f"s{i}.png"), cv2.resize(cv2.GaussianBlur(corner, (9, 9), 0), (80, 80)))
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for n in read_list(pets_dir / "trainval.txt")[:4]:
        shutil.copy(pets_dir / "images" / f"{n}.jpg", unlabelled / f"u_{n}.jpg")
    cfg = TrainConfig(data=roots, run_dir=tmp_path / "run", model=UNetConfig(4, 3, 64), epochs=2, batch_size=4,
                      steps_per_epoch=2, loss="bce+dice", backgrounds=scenes, copy_paste=1.0, unlabeled=unlabelled,
                      teacher=tiny_onnx, schedule="cosine", ema=0.9, val_fraction=0.25, verbose=0)
    summary = train(cfg)
    assert summary["epochs_done"] == 2
    assert not set(summary["val_names"]) & test_names
    model = keras.models.load_model(tmp_path / "run" / "best.keras")   # custom loss round-trips
    assert model.predict_on_batch(np.zeros((1, 64, 64, 3), "float32")).shape == (1, 64, 64, 1)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["loss"] == "bce+dice"

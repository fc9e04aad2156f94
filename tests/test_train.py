"""Training on real Oxford-IIIT Pet images: data loading, augmentation, metric, loop, resume, download."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tarfile

import cv2
import numpy as np
import pytest

from conftest import PETS, pet_names

keras = pytest.importorskip("keras")

from unetlite.infer.io.dataset import discover  # noqa: E402
from unetlite.train.augment import AugmentConfig, augment_pair  # noqa: E402
from unetlite.train.data import load_arrays, split_pairs  # noqa: E402
from unetlite.train.loop import TrainConfig, train  # noqa: E402
from unetlite.train.metrics import ForegroundIoU  # noqa: E402
from unetlite.train.model import UNetConfig, build_unet  # noqa: E402

TINY = UNetConfig(base_filters=4, depth=3, input_size=64)


def _flat_dataset(root, names, lists=True):
    (root / "images").mkdir(parents=True)
    (root / "trimaps").mkdir()
    for n in names:
        shutil.copy(PETS / "images" / f"{n}.jpg", root / "images")
        shutil.copy(PETS / "trimaps" / f"{n}.png", root / "trimaps")
    if lists:
        (root / "trainval.txt").write_text("\n".join(names[:-4]) + "\n")
        (root / "test.txt").write_text("\n".join(names[-4:]) + "\n")
    return root


def test_paper_model_has_the_described_architecture():
    model = build_unet()
    assert model.input_shape == (None, 256, 256, 3)
    assert model.output_shape == (None, 256, 256, 1)
    convs = [l for l in model.layers if type(l).__name__ == "Conv2D"]
    pools = [l for l in model.layers if type(l).__name__ == "MaxPooling2D"]
    tconvs = [l for l in model.layers if type(l).__name__ == "Conv2DTranspose"]
    assert len(pools) == 6 and len(tconvs) == 6
    assert [c.filters for c in convs[:12:2]] == [8, 16, 32, 64, 128, 256]
    assert convs[12].filters == 512  # bottleneck
    assert all(t.kernel_size == (2, 2) and t.strides == (2, 2) for t in tconvs)
    assert convs[-1].kernel_size == (1, 1) and convs[-1].activation.__name__ == "sigmoid"
    assert model.count_params() == 7_779_385


def test_foreground_iou_matches_hand_computed_values():
    true = np.zeros((3, 2, 2, 1), np.float32)
    pred = np.zeros((3, 2, 2, 1), np.float32)
    true[0, 0, :] = 1                 # 2 true pixels
    pred[0, 0, 0] = 0.9               # 1 hit
    pred[0, 1, 0] = 0.7               # 1 false positive -> IoU 1/3
    # image 1: nothing true, nothing predicted (0.4 < 0.5) -> union 0 counts as 1.0
    pred[1] = 0.4
    true[2] = 1                       # all true, prediction all 0.5 (>= threshold) -> IoU 1.0 ... make it 3/4
    pred[2] = 0.5
    pred[2, 1, 1] = 0.49
    metric = ForegroundIoU()
    metric.update_state(true[:2], pred[:2])
    metric.update_state(true[2:], pred[2:])
    assert float(metric.result()) == pytest.approx((1 / 3 + 1.0 + 3 / 4) / 3, abs=1e-6)
    metric.reset_state()
    metric.update_state(true[:1], np.zeros_like(pred[:1]))
    assert float(metric.result()) == pytest.approx(0.0)


def test_augmentation_moves_image_and_mask_together():
    mask = np.zeros((128, 128), np.uint8)
    cv2.circle(mask, (40, 70), 25, 1, -1)
    image = np.dstack([mask * 255] * 3)
    cfg = AugmentConfig(brightness=0.0, contrast=0.0, elastic=1.0)
    out_a = augment_pair(image, mask, np.random.default_rng(1), cfg)
    out_b = augment_pair(image, mask, np.random.default_rng(1), cfg)
    assert all(np.array_equal(a, b) for a, b in zip(out_a, out_b))  # seeded -> reproducible
    aug_image, aug_mask = out_a
    assert not np.array_equal(aug_mask, mask)                      # geometry really changed
    agreement = ((aug_image[..., 0] >= 128) == (aug_mask == 1)).mean()
    assert agreement > 0.99


def test_loader_skips_corrupt_and_handles_grey_and_rgba(tmp_path):
    names = pet_names("trainval", 10)
    root = _flat_dataset(tmp_path / "pets", names)  # names[:6] trainval, the last 4 test (never loaded)
    # grayscale JPEG and an RGBA PNG in place of two images (same pixel grid as the trimap)
    grey = cv2.imread(str(root / "images" / f"{names[0]}.jpg"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "images" / f"{names[0]}.jpg"), grey)
    bgr = cv2.imread(str(root / "images" / f"{names[1]}.jpg"))
    (root / "images" / f"{names[1]}.jpg").unlink()
    cv2.imwrite(str(root / "images" / f"{names[1]}.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    (root / "images" / f"{names[2]}.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 10)  # corrupt
    (root / "trimaps" / f"{names[3]}.png").unlink()                                       # missing partner

    train_pairs, val_pairs, description = split_pairs(root)
    assert "trainval minus test lists" in description  # test-split names are never trained on
    assert names[3] not in [p.name for p in train_pairs]
    arrays = load_arrays(train_pairs + val_pairs, (64, 64))
    assert names[0] in arrays.names and names[1] in arrays.names
    assert names[2] not in arrays.names
    assert [f for f, _ in arrays.failed] == [str(root / "images" / f"{names[2]}.jpg")]
    assert "truncated JPEG" in arrays.failed[0][1]
    assert arrays.images.shape == (len(arrays), 64, 64, 3) and arrays.images.dtype == np.uint8
    assert set(np.unique(arrays.masks)) <= {0, 1} and arrays.masks.any()


def test_random_split_when_no_official_lists(tmp_path):
    root = _flat_dataset(tmp_path / "pets", pet_names("trainval", 16), lists=False)  # all 16 of the fixture set
    train_a, val_a, desc = split_pairs(root, val_fraction=0.125, seed=3)
    train_b, val_b, _ = split_pairs(root, val_fraction=0.125, seed=3)
    assert "88%/12%" in desc and "(seed 3)" in desc
    assert len(val_a) == 2 and len(train_a) == 14
    assert val_a == val_b and not {p.name for p in val_a} & {p.name for p in train_a}


def _bce(model, arrays):
    from unetlite.infer.engine.preprocess import to_float
    x = np.stack([to_float(i) for i in arrays.images])
    p = np.clip(model.predict_on_batch(x)[..., 0], 1e-7, 1 - 1e-7)
    y = arrays.masks.astype(np.float32)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def test_short_training_run_lowers_loss_and_writes_artifacts(tmp_path):
    cfg = TrainConfig(data=PETS, run_dir=tmp_path / "run", model=TINY, epochs=4, batch_size=8, steps_per_epoch=6,
                      learning_rate=2e-3, max_train=48, max_val=16, seed=0, verbose=0)  # 24 steps on any data set
    keras.utils.set_random_seed(cfg.seed)
    initial = build_unet(TINY)  # the same initial weights train() starts from (same seed)
    summary = train(cfg)
    run = cfg.run_dir
    for name in ("best.keras", "last.keras", "log.csv", "curves.png", "run.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "predictions").iterdir()) == [f"epoch_00{i}.png" for i in range(1, 5)]
    grid = cv2.imread(str(run / "predictions" / "epoch_004.png"))
    rows_shown = min(4, len(split_pairs(PETS)[1][:cfg.max_val]))  # up to 4 validation images
    assert grid.shape == (rows_shown * 64, 3 * 64, 3)  # rows of image | mask | image*mask
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    # The property: training fits the images it trains on (the 2-8 validation images of a small
    # data set are too few to judge generalisation from 24 steps).
    seen = load_arrays(split_pairs(PETS)[0][:cfg.max_train], (64, 64))
    trained = keras.models.load_model(run / "best.keras")
    before, after = _bce(initial, seen), _bce(keras.models.load_model(run / "last.keras"), seen)
    assert after < before - 0.02, (before, after)
    saved = json.loads((run / "run.json").read_text())
    assert saved["epochs_done"] == 4 and saved["best"]["val_loss"] == pytest.approx(
        min(float(r["val_loss"]) for r in rows), abs=1e-4)
    assert summary["parameters"] == trained.count_params()


def test_resume_continues_from_last_checkpoint(tmp_path):
    cfg = TrainConfig(data=PETS, run_dir=tmp_path / "run", model=TINY, epochs=2, batch_size=8,
                      max_train=16, max_val=8, steps_per_epoch=2, verbose=0, preview=2)
    train(cfg)
    first_best = (tmp_path / "run" / "best.keras").stat().st_mtime_ns
    cfg.epochs, cfg.resume = 3, True
    summary = train(cfg)
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert summary["epochs_done"] == 3 and len(summary["epoch_seconds"]) == 3
    best_epoch = min(range(3), key=lambda i: float(rows[i]["val_loss"]))
    best_changed = (tmp_path / "run" / "best.keras").stat().st_mtime_ns != first_best
    assert best_changed == (best_epoch == 2)  # best-only holds across the resume


def test_stop_after_slices_a_run_that_resume_finishes(tmp_path):
    """A run longer than a session: --stop-after ends early, --resume continues the same schedule."""
    cfg = TrainConfig(data=PETS, run_dir=tmp_path / "run", model=TINY, epochs=3, batch_size=8, max_train=16,
                      max_val=8, steps_per_epoch=2, verbose=0, preview=2, schedule="cosine", stop_after=1)
    assert train(cfg)["epochs_done"] == 1
    first = keras.models.load_model(tmp_path / "run" / "last.keras")
    assert int(first.optimizer.iterations.numpy()) == 2
    cfg.resume, cfg.stop_after = True, None
    assert train(cfg)["epochs_done"] == 3
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    # One cosine schedule over all 3 epochs: the last step's learning rate is near its 5% floor.
    done = keras.models.load_model(tmp_path / "run" / "last.keras").optimizer
    assert float(done.learning_rate) < 0.1 * cfg.learning_rate


def _tar(path, root, members):
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            tar.add(root / m, arcname=m)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verifies_and_extracts_local_archives(tmp_path):
    from unetlite.train.download import Archive, DownloadError, download

    names = pet_names("trainval", 3)
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "annotations" / "trimaps").mkdir(parents=True)
    for n in names:
        shutil.copy(PETS / "images" / f"{n}.jpg", src / "images")
        shutil.copy(PETS / "trimaps" / f"{n}.png", src / "annotations" / "trimaps")
    (src / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in names))
    md5_images = _tar(tmp_path / "images.tar.gz", src, ["images"])
    md5_ann = _tar(tmp_path / "annotations.tar.gz", src, ["annotations"])
    archives = (Archive((tmp_path / "images.tar.gz").as_uri(), md5_images),
                Archive((tmp_path / "annotations.tar.gz").as_uri(), md5_ann))
    root = download(tmp_path / "data", archives)
    assert [p.name for p in discover(root, "test")] == names

    bad = (Archive((tmp_path / "images.tar.gz").as_uri(), "0" * 32),)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(tmp_path / "data2", bad)
    assert not any((tmp_path / "data2").iterdir())  # nothing half-downloaded left behind


def test_same_seed_gives_the_same_run(tmp_path):
    logs = []
    for i in range(2):
        cfg = TrainConfig(data=PETS, run_dir=tmp_path / f"run{i}", model=TINY, epochs=2, max_train=24, max_val=8,
                          seed=5, verbose=0, preview=0)
        train(cfg)
        logs.append((cfg.run_dir / "log.csv").read_text())
    assert logs[0] == logs[1]


def test_init_from_starts_from_the_given_weights(tmp_path):
    base = TrainConfig(data=PETS, run_dir=tmp_path / "base", model=TINY, epochs=3, learning_rate=2e-3,
                       max_train=48, max_val=16, verbose=0, preview=0)
    train(base)
    start = keras.models.load_model(base.run_dir / "best.keras")
    val = load_arrays(split_pairs(PETS)[1][:16], (64, 64))
    tuned = TrainConfig(data=PETS, run_dir=tmp_path / "tuned", model=TINY, epochs=1, learning_rate=1e-5,
                        max_train=16, max_val=16, augment="strong", init_from=base.run_dir / "best.keras",
                        verbose=0, preview=0)
    summary = train(tuned)
    assert summary["init_from"] == str(base.run_dir / "best.keras")
    # a tiny learning rate barely moves the weights: the fine-tuned model scores like its start
    tuned_model = keras.models.load_model(tuned.run_dir / "best.keras")
    assert _bce(tuned_model, val) == pytest.approx(_bce(start, val), abs=0.01)
    # ... and its weights are the given ones, not a fresh network's (whatever the base run learned)
    keras.utils.set_random_seed(1)
    fresh = build_unet(TINY)

    def distance(a, b) -> float:
        return sum(float(np.abs(x - y).sum()) for x, y in zip(a.get_weights(), b.get_weights()))
    assert distance(tuned_model, start) < 0.01 * distance(fresh, start)
    with pytest.raises(ValueError, match="differs from --input-size"):
        train(TrainConfig(data=PETS, run_dir=tmp_path / "bad", model=UNetConfig(4, 3, 128), epochs=1,
                          max_train=8, max_val=8, init_from=base.run_dir / "best.keras", verbose=0))


def _mask_dataset(root, names):
    """The 0/255 masks/ layout (hand-painted and video sets): real photos, masks from their trimaps."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in names:
        shutil.copy(PETS / "images" / f"{n}.jpg", root / "images")
        trimap = cv2.imread(str(PETS / "trimaps" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(root / "masks" / f"{n}.png"), np.where(trimap == 1, 255, 0).astype(np.uint8))
    return root


def test_distillation_run_mixes_human_soft_and_empty_targets(tmp_path, video_dir):
    """--soft, --negatives, --val-negatives, a masks/ root and --val-names in one short real run."""
    names = pet_names("trainval")
    masks = _mask_dataset(tmp_path / "painted", names[:6])
    soft = tmp_path / "soft"
    (soft / "images").mkdir(parents=True)
    (soft / "teacher_soft").mkdir()
    for n in names[6:12]:
        shutil.copy(PETS / "images" / f"{n}.jpg", soft / "images")
        trimap = cv2.imread(str(PETS / "trimaps" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(soft / "teacher_soft" / f"{n}.png"), np.select([trimap == 1, trimap == 3], [255, 128], 0)
                    .astype(np.uint8))
    val_names = tmp_path / "val.txt"
    val_names.write_text("\n".join(names[:2]) + "\n")
    clip = video_dir / "vtest_people_short_384x288.mp4"
    cfg = TrainConfig(data=[masks], val_data=[masks], val_names=val_names, soft=[soft],
                      negatives=[f"{clip}@50:100:10"], val_negatives=[f"{clip}@0:50:25"], labelled_repeat=2,
                      run_dir=tmp_path / "run", model=TINY, epochs=1, batch_size=4, steps_per_epoch=2,
                      loss="bce+dice", verbose=0, preview=0)
    summary = train(cfg)
    assert summary["val_names"] == sorted(names[:2]) + [f"vtest_people_short_384x288_f{i:05d}" for i in (0, 25)]
    # 4 hand-labelled x 2 + 6 soft + 5 frames
    assert "+6 teacher-labelled images" in summary["data"] and "19 train / 4 val images" in summary["data"]
    row = next(csv.DictReader((cfg.run_dir / "log.csv").open()))
    assert 0.0 <= float(row["val_empty_fg"]) <= 1.0

"""Validation for choosing a distilled model: IoU on held-back labelled sets, painted fraction on pet-free video.

    python benchmarks/distill_val.py --model runs/a.onnx --model runs/b.onnx --out benchmarks/distill_val.json

Every set here is one no training arm learns from: the oxford_pets_extra trainval images, the fixed
kaggle_cats_masks part named in benchmarks/training/distill/val_names.txt (cat.60-80), all 25
davis_dog_agility frames (a real video of a dog on grass), and the first 400 frames of the pet-free
pedestrian clip (frames 400-795 may be trained on as negatives; the short clip is frames 0-99).
Reports per set: dataset IoU (sum of intersections / sum of unions at the label's resolution), pixel
accuracy, and ``area_ratio`` (predicted / true pet pixels: above 1 means masks spread past the pet,
the risk of ignoring the teacher's unsure band). Oxford trimaps also get ``iou_outline_ignored``: the
trimap's border class (a band over the pet's outline, which the dataset IoU counts as background, so a
mask that covers the whole pet loses there) left out of both sides, and ``area_ratio_with_outline``
(predicted / pet + band pixels). Pet-free sets report the mean and
worst painted fraction. Default inference settings (the model's threshold, no TTA, no clean-up).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from unetlite.infer import Segmenter, read_image
from unetlite.infer.engine.preprocess import label_to_mask, outline_band
from unetlite.infer.io.images import read_label
from unetlite.infer.pipeline.evaluate import EvalResult

from _report import REPO, SHARED_DATA, emit  # benchmarks/ is on sys.path when run as a script

VAL_NAMES = REPO / "benchmarks" / "training" / "distill" / "val_names.txt"


def _names(path: Path) -> set[str]:
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def labelled_sets(data: Path) -> dict[str, list[tuple[Path, Path, str]]]:
    """set name -> (image, label, kind) triples."""
    extra = data / "oxford_pets_extra"
    chosen = _names(VAL_NAMES)
    sets = {"oxford_extra_trainval": [(extra / "images" / f"{n}.jpg", extra / "trimaps" / f"{n}.png", "trimap")
                                      for n in sorted(_names(extra / "trainval.txt"))]}
    for key, root in (("kaggle_cats_val", data / "kaggle_cats_masks"), ("davis_dog_agility", data / "davis_dog_agility")):
        sets[key] = [(p, root / "masks" / f"{p.stem}.png", "mask") for p in sorted((root / "images").glob("*.jpg"))
                     if p.stem in chosen]
    return sets


SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7)


def score(segmenter: Segmenter, triples: list[tuple[Path, Path, str]], sweep: dict | None = None) -> dict:
    """Scores at the model's threshold, counted by `unetlite eval`'s EvalResult (once as eval scores, once with
    the trimap's outline band left out); ``sweep`` (threshold -> [intersection, union]) accumulates other
    thresholds."""
    plain, outline_ignored, outline_area = EvalResult(), EvalResult(), 0
    for start in range(0, len(triples), 8):
        chunk = triples[start:start + 8]
        images = [read_image(image, apply_orientation=False) for image, _, _ in chunk]
        for (image, label_path, kind), seg in zip(chunk, segmenter.predict(images)):
            label = read_label(label_path)
            true, outline, pred = label_to_mask(label, kind) > 0, outline_band(label, kind), seg.mask > 0
            plain.add(image.stem, true, pred)
            if outline is not None:
                outline_ignored.add(image.stem, true, pred, outline)
                outline_area += int(np.count_nonzero(outline))
            for threshold, counts in (sweep or {}).items():
                other = seg.probability >= threshold
                counts[0] += int(np.count_nonzero(true & other))
                counts[1] += int(np.count_nonzero(true | other))
    pred_area = sum(s.foreground_pred for s in plain.per_image)
    true_area = sum(s.foreground_true for s in plain.per_image)
    result = {"images": len(triples), "iou": round(plain.iou, 4), "pixel_accuracy": round(plain.pixel_accuracy, 4),
              "area_ratio": round(pred_area / max(true_area, 1), 3)}
    if outline_ignored.images:
        result["iou_outline_ignored"] = round(outline_ignored.iou, 4)
        result["area_ratio_with_outline"] = round(pred_area / max(true_area + outline_area, 1), 3)
    return result


def painted(segmenter: Segmenter, video: Path, frames: slice) -> dict:
    capture = cv2.VideoCapture(str(video))
    fractions, index, batch = [], 0, []
    start, stop, step = frames.start or 0, frames.stop, frames.step or 1
    while stop is None or index < stop:
        ok, frame = capture.read()
        if not ok:
            break
        if index >= start and (index - start) % step == 0:
            batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if len(batch) == 8:
            fractions += [float(s.mask.mean()) for s in segmenter.predict(batch)]
            batch = []
        index += 1
    if batch:
        fractions += [float(s.mask.mean()) for s in segmenter.predict(batch)]
    capture.release()
    return {"frames": len(fractions), "mean_painted": round(float(np.mean(fractions)), 4),
            "worst_painted": round(float(np.max(fractions)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", help="repeatable; default: the bundled model")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--int8", action="store_true", help="run each model's int8 twin")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    video = args.data / "video"
    report = {"models": {}}
    for model in args.model or [None]:
        segmenter = Segmenter(model, providers="cpu", int8=args.int8)
        sweep = {t: [0, 0] for t in SWEEP}
        row = {name: score(segmenter, triples, sweep) for name, triples in labelled_sets(args.data).items()}
        row["threshold_sweep_all_labelled_iou"] = {str(t): round(i / max(u, 1), 4) for t, (i, u) in sweep.items()}
        row["people_val_frames_0_400_8"] = painted(segmenter, video / "vtest_people_768x576.mp4", slice(0, 400, 8))
        row["people_short_clip"] = painted(segmenter, video / "vtest_people_short_384x288.mp4", slice(None))
        report["models"][str(segmenter.path)] = {"runs": segmenter.describe(), **row}
    emit(report, args.out)


if __name__ == "__main__":
    main()

"""Probe: is the 16:9 squeeze why the student paints the woman in dog_leash_1280x720.mp4?

    python benchmarks/training/distill/aspect_probe.py MODEL.onnx [MODEL.onnx ...]

Every 10th frame, three ways to feed the 1280x720 frame to the 256x256 network, each judged with the
teacher's classes as in benchmarks/teacher_check.py (person: P(person) > 0.5, pet: P(cat) + P(dog) > 0.5):
- stretch: the whole frame squeezed (what the product does);
- squares: three overlapping 720x720 windows, probabilities averaged where they overlap (3x the work);
- letterbox: padded to 1280x1280 with black, so nothing is squeezed and the dog gets even smaller.
Prints, per model and per way, the mean fraction of the person painted and the mean IoU with the teacher's pet.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/
from teacher_check import DEFAULT_TEACHER, PERSON_VIDEO, frames  # noqa: E402
from _report import SHARED_DATA  # noqa: E402


def stretch(seg, rgb: np.ndarray) -> np.ndarray:
    return seg(rgb).probability


def squares(seg, rgb: np.ndarray, windows: int = 3) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    total, count = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for x0 in np.linspace(0, w - side, windows).astype(int):
        window = rgb[:, x0:x0 + side] if w >= h else rgb[x0:x0 + side]
        prob = seg(window).probability
        target = (slice(None), slice(x0, x0 + side)) if w >= h else (slice(x0, x0 + side), slice(None))
        total[target] += prob
        count[target] += 1
    return total / count


def letterbox(seg, rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = max(h, w)
    y0, x0 = (side - h) // 2, (side - w) // 2
    padded = np.zeros((side, side, 3), np.uint8)
    padded[y0:y0 + h, x0:x0 + w] = rgb
    return seg(padded).probability[y0:y0 + h, x0:x0 + w]


WAYS = {"stretch": stretch, "squares": squares, "letterbox": letterbox}


def main(models: list[str]) -> dict:
    from unetlite.infer import Segmenter
    from unetlite.train.teacher import Teacher

    teacher = Teacher(DEFAULT_TEACHER, flip=True)
    video = SHARED_DATA / "video" / PERSON_VIDEO
    judged = [(pet > 0.5, person > 0.5, rgb) for _, rgb in frames(video, 10)
              for pet, person in [teacher.pet_and_person(rgb)]]
    report = {}
    for model in models:
        seg = Segmenter(model)
        threshold = seg.contract.resolve_threshold(None)
        report[Path(model).name] = {}
        for name, way in WAYS.items():
            painted, ious = [], []
            for pet, person, rgb in judged:
                mask = way(seg, rgb) >= threshold
                if person.any():
                    painted.append(float(mask[person].mean()))
                union = np.logical_or(mask, pet).sum()
                ious.append(float(np.logical_and(mask, pet).sum() / union) if union else 1.0)
            report[Path(model).name][name] = {"person_painted": round(float(np.mean(painted)), 4),
                                              "iou_with_teacher_pet": round(float(np.mean(ious)), 4)}
    return {"frames": len(judged), "video": PERSON_VIDEO, "models": report}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))

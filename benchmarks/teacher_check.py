"""Does the student paint people, or empty scenes? Judged with the teacher's person class.

    python benchmarks/teacher_check.py --out benchmarks/teacher_check.json [--model M.onnx] [--every 10]

- ``dog_leash_1280x720.mp4`` (a woman plays tug with a dog), every ``--every``-th frame: the teacher
  (DeepLabV3 PASCAL VOC, ``../shared/teacher``) marks the person (P(person) > 0.5) and the pet
  (P(cat) + P(dog) > 0.5). Reported: the fraction of the person's pixels the student paints as pet
  (mean and max over the frames that show a person) and, for reference, the student's IoU with the
  teacher's pet region.
- ``vtest_people_768x576.mp4`` and ``vtest_people_short_384x288.mp4`` (people, no animal), every
  ``--people-every``-th frame: the student's foreground fraction (mean, max).

The student is ``Segmenter`` with default settings (as ``unetlite segment``/``video`` run it). Prints one
JSON object and writes it to ``--out``. Needs the [train] extra (ai-edge-litert) for the teacher.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from _report import REPO, SHARED_DATA, emit  # benchmarks/ is on sys.path when run as a script

DEFAULT_TEACHER = REPO.parent / "shared" / "teacher" / "deeplabv3_mnv2_pascal_quant.tflite"
PERSON_VIDEO = "dog_leash_1280x720.mp4"
PEOPLE_VIDEOS = ("vtest_people_768x576.mp4", "vtest_people_short_384x288.mp4")


def frames(path: Path, every: int):
    """(index, RGB frame) for every ``every``-th frame, from frame 0."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"teacher_check: {path}: not a readable video")
    index = 0
    try:
        while capture.grab():
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if not ok:
                    break
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def stats(values: list[float]) -> dict:
    a = np.asarray(values, np.float64)
    return {"mean": round(float(a.mean()), 4), "max": round(float(a.max()), 4)} if len(a) else {"mean": None, "max": None}


def person_check(segmenter, teacher, path: Path, every: int) -> dict:
    painted, ious, per_frame, no_person = [], [], [], 0
    for index, rgb in frames(path, every):
        pet, person = teacher.pet_and_person(rgb)
        mask = segmenter(rgb).mask.astype(bool)
        person, pet = person > 0.5, pet > 0.5
        union = np.logical_or(mask, pet).sum()
        ious.append(float(np.logical_and(mask, pet).sum() / union) if union else 1.0)
        if person.sum() == 0:
            no_person += 1
            per_frame.append([index, None])
            continue
        painted.append(float(mask[person].mean()))
        per_frame.append([index, round(painted[-1], 3)])
    return {"video": path.name, "every": every, "frames": len(per_frame), "frames_without_person": no_person,
            "person_painted_fraction": stats(painted),
            "student_iou_with_teacher_pet": stats(ious) | {"min": round(float(min(ious)), 4) if ious else None},
            "per_frame": per_frame}


def empty_check(segmenter, path: Path, every: int) -> dict:
    fg = [float(segmenter(rgb).mask.mean()) for _, rgb in frames(path, every)]
    return {"every": every, "frames": len(fg), "foreground_fraction": stats(fg)}


def file_id(path: Path) -> dict:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        shown = str(path.resolve().relative_to(REPO))
    except ValueError:
        shown = str(path)
    return {"path": shown, "bytes": path.stat().st_size, "sha256": digest[:16]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="student ONNX model (default: the bundled unet_pets.onnx)")
    parser.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER, help=f"default: {DEFAULT_TEACHER}")
    parser.add_argument("--video-dir", type=Path, default=SHARED_DATA / "video")
    parser.add_argument("--every", type=int, default=10, help=f"every Nth frame of {PERSON_VIDEO} (default 10)")
    parser.add_argument("--people-every", type=int, default=1,
                        help="every Nth frame of the pedestrian clips (default 1: all)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="teacher without flip averaging")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for teacher and student (default 2)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.every < 1 or args.people_every < 1:
        parser.error("--every and --people-every must be at least 1")

    from unetlite.infer import Segmenter, default_model_path
    from unetlite.train.teacher import Teacher, TeacherError

    started = time.monotonic()
    try:
        teacher = Teacher(args.teacher, flip=args.flip, threads=args.threads)
    except TeacherError as exc:
        print(f"teacher_check: {exc}", file=sys.stderr)
        return 2
    model = args.model or default_model_path()
    segmenter = Segmenter(model, threads=args.threads)
    report = {"benchmark": "teacher_check", "student": file_id(Path(model)), "student_runtime": segmenter.describe(),
              "teacher": {**file_id(args.teacher), "flip": args.flip, "person": "P(person) > 0.5",
                          "pet": "P(cat) + P(dog) > 0.5"}}
    report["person_not_pet"] = person_check(segmenter, teacher, args.video_dir / PERSON_VIDEO, args.every)
    report["no_pet_videos"] = {name: empty_check(segmenter, args.video_dir / name, args.people_every)
                               for name in PEOPLE_VIDEOS}
    report["seconds"] = round(time.monotonic() - started, 1)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

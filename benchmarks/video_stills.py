"""Stills for README, made with the bundled model on the shared pet footage:

    python benchmarks/video_stills.py --docs docs/

- docs/video_blur.jpg: a frame of each shared pet clip with `--background blur`;
- docs/video_replace.jpg: the same frames on a replaced background (a frame of the pet-free
  vtest_people clip, OpenCV's sample footage);
- docs/edges_before_after.jpg: fur crops of a real pet photo on a flat colour, `--edge hard`
  (the binary mask) against the default soft edge (guided filter).

Each JPEG is kept under 200 KB (quality lowered until it fits).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from _report import SHARED_DATA  # benchmarks/ is on sys.path when run as a script

CLIPS = (("cat_closeup_640x360.mp4", 0.5), ("dog_leash_1280x720.mp4", 0.6))  # (clip, where in it)
BACKDROP_CLIP = "vtest_people_768x576.mp4"
FUR_PHOTOS = ("Persian_111.jpg", "samoyed_147.jpg", "keeshond_30.jpg", "Maine_Coon_16.jpg")
MAX_BYTES = 200_000
ROW_HEIGHT = 360


def frame_at(path: Path, fraction: float) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(count * fraction))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"{path}: cannot read a frame")
    return frame


def label(picture: np.ndarray, text: str) -> np.ndarray:
    out = picture.copy()
    for color, thick in (((0, 0, 0), 4), ((255, 255, 255), 1)):
        cv2.putText(out, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, color, thick + 1, cv2.LINE_AA)
    return out


def fit_height(picture: np.ndarray, height: int) -> np.ndarray:
    return cv2.resize(picture, (round(picture.shape[1] * height / picture.shape[0]), height),
                      interpolation=cv2.INTER_AREA)


def save_small(path: Path, picture: np.ndarray) -> None:
    for quality in range(90, 30, -5):
        ok, data = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if len(data) <= MAX_BYTES:
            path.write_bytes(data.tobytes())
            print(f"{path}: {len(data) / 1000:.0f} KB (quality {quality})", file=sys.stderr)
            return
    raise SystemExit(f"{path}: cannot fit in {MAX_BYTES} bytes")


def video_stills(segmenter, video: Path, docs: Path) -> None:
    from unetlite.infer.pipeline.backgrounds import BackgroundSpec
    from unetlite.infer.pipeline.frames import FramePipeline, VideoOptions

    backdrop = docs / ".backdrop.jpg"
    cv2.imwrite(str(backdrop), frame_at(video / BACKDROP_CLIP, 0.3))
    try:
        for name, spec in (("blur", BackgroundSpec("blur")), ("replace", BackgroundSpec("image", path=backdrop))):
            rows = []
            for clip, where in CLIPS:
                frame = frame_at(video / clip, where)
                result = FramePipeline(segmenter, VideoOptions(fmt="composite", scene=spec))(0, frame)
                rows.append(cv2.hconcat([label(fit_height(frame, ROW_HEIGHT), "input"),
                                         label(fit_height(result.output, ROW_HEIGHT), f"--background "
                                               f"{'blur' if name == 'blur' else 'street.jpg'}")]))
            width = max(r.shape[1] for r in rows)
            rows = [cv2.copyMakeBorder(r, 0, 4, 0, width - r.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))
                    for r in rows]
            save_small(docs / f"video_{name}.jpg", cv2.vconcat(rows))
    finally:
        backdrop.unlink(missing_ok=True)


def fur_crop(mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the size x size window holding the most mask edge (where fur meets the background)."""
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(np.float32)
    density = cv2.boxFilter(edge, -1, (size, size), normalize=False, anchor=(0, 0))
    h, w = mask.shape
    density = density[: max(1, h - size + 1), : max(1, w - size + 1)]
    y, x = np.unravel_index(np.argmax(density), density.shape)
    return int(y), int(x)


def edge_stills(segmenter, pets: Path, docs: Path) -> None:
    from unetlite.infer.engine.alpha import blend, hard_alpha, soft_alpha

    rows = []
    for name in FUR_PHOTOS:
        path = pets / name
        if not path.is_file():
            continue
        bgr = cv2.imread(str(path))
        mask = segmenter.predict([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])[0].mask
        flat = np.empty_like(bgr)
        flat[:] = (200, 120, 40)  # BGR: a blue that fur is never
        side = max(64, min(bgr.shape[:2]) // 3)
        y, x = fur_crop(mask, side)
        crops = []
        for what, alpha in (("--edge hard", hard_alpha(mask)), ("soft (default)", soft_alpha(bgr, mask))):
            out = blend(bgr, flat, alpha)[y:y + side, x:x + side]
            crops.append(label(cv2.resize(out, (320, 320), interpolation=cv2.INTER_CUBIC), what))
        rows.append(cv2.hconcat(crops))
        if len(rows) == 3:
            break
    if not rows:
        raise SystemExit(f"no fur photos in {pets}")
    save_small(docs / "edges_before_after.jpg", cv2.vconcat(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--model", type=Path, help="ONNX model (default: the bundled one)")
    args = parser.parse_args(argv)
    from unetlite.infer.engine.segmenter import Segmenter
    segmenter = Segmenter(args.model, providers="cpu", spin=False)
    args.docs.mkdir(exist_ok=True)
    video_stills(segmenter, SHARED_DATA / "video", args.docs)
    edge_stills(segmenter, SHARED_DATA / "oxford_pets" / "images", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How steady is the mask on real pet footage? Consecutive-frame mask IoU, foreground fraction
over time, and stills (overlays) for the README.

    python benchmarks/video_stability.py --out benchmarks/video_stability.json --stills docs/

Each video is segmented frame by frame exactly as `unetlite video --format overlay` does
(Segmenter + the shared post-processing), with no temporal smoothing, so flicker is the model's own.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from unetlite.infer.io.formats import overlay
from unetlite.infer.engine.segmenter import Segmenter

from _report import SHARED_DATA, emit  # benchmarks/ is on sys.path when run as a script

DEFAULT = ("dog_leash_1280x720.mp4", "cat_closeup_640x360.mp4", "vtest_people_short_384x288.mp4")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def measure(segmenter: Segmenter, path: Path, stills: int = 4, tta: bool = False) -> tuple[dict, list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    keep = set(np.linspace(0, max(total - 1, 0), stills).round().astype(int).tolist())
    fractions, ious, pictures, previous, index = [], [], [], None, 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        mask = segmenter.predict([rgb], **({"tta": True} if tta else {}))[0].mask
        fractions.append(float(mask.mean()))
        if previous is not None:
            ious.append(iou(previous, mask))
        previous = mask
        if index in keep:
            pictures.append(overlay(rgb, mask))
        index += 1
    cap.release()
    f, i = np.array(fractions), np.array(ious)
    return {"frames": len(fractions),
            "consecutive_mask_iou": {"mean": round(float(i.mean()), 4), "p5": round(float(np.percentile(i, 5)), 4),
                                     "min": round(float(i.min()), 4)} if len(i) else {},
            "foreground_fraction": {"mean": round(float(f.mean()), 4), "min": round(float(f.min()), 4),
                                    "max": round(float(f.max()), 4),
                                    "every_10th_frame": [round(float(x), 3) for x in f[::10]]}}, pictures


def strip(pictures: list[np.ndarray], height: int = 180) -> np.ndarray:
    scaled = [cv2.resize(p, (round(p.shape[1] * height / p.shape[0]), height), interpolation=cv2.INTER_AREA)
              for p in pictures]
    return cv2.hconcat(scaled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--videos", nargs="*", type=Path, default=[SHARED_DATA / "video" / v for v in DEFAULT])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--stills", type=Path, help="folder for one JPEG strip of overlays per video")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    segmenter = Segmenter(args.model, providers="cpu")
    report = {"model": str(segmenter.path), "provider": segmenter.provider, "tta": args.tta, "videos": {}}
    for video in args.videos:
        stats, pictures = measure(segmenter, video, tta=args.tta)
        report["videos"][video.name] = stats
        if args.stills and pictures:
            args.stills.mkdir(parents=True, exist_ok=True)
            out = args.stills / f"video_{video.stem}.jpg"
            cv2.imwrite(str(out), cv2.cvtColor(strip(pictures), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
            stats["stills"] = str(out)
    emit(report, args.out)


if __name__ == "__main__":
    main()

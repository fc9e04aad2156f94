"""A contact sheet of pet-video stills with the mask drawn on (green tint + outline), for the README.

    python benchmarks/stills.py --out docs/stills_distilled.jpg [--model NEW.onnx] [--compare OLD.onnx] [--frames 4]

For each video (default: ``dog_leash_1280x720.mp4`` and ``cat_closeup_640x360.mp4``) ``--frames`` evenly spaced
frames are segmented by ``Segmenter`` with default settings; one row per video and model (with ``--compare``
the second model's row sits right under the first, same frames). Every tile is labelled with the model
and the frame number. The JPEG quality is lowered until the file is under ``--max-kb``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from _report import SHARED_DATA  # benchmarks/ is on sys.path when run as a script

VIDEOS = ("dog_leash_1280x720.mp4", "cat_closeup_640x360.mp4")
GREEN = np.array([40, 220, 60], np.float32)     # RGB
OUTLINE = (255, 255, 0)                          # RGB yellow


def pick_frames(path: Path, count: int) -> list[tuple[int, np.ndarray]]:
    """``count`` evenly spaced (index, RGB frame) pairs, first and last frame included."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"stills: {path}: not a readable video")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.linspace(0, max(total - 1, 0), count).round().astype(int).tolist())
    out, index = [], 0
    try:
        while len(out) < len(wanted) and capture.grab():
            if index in wanted:
                ok, bgr = capture.retrieve()
                if ok:
                    out.append((index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            index += 1
    finally:
        capture.release()
    return out


def tile(rgb: np.ndarray, mask: np.ndarray, height: int, label: str) -> np.ndarray:
    """The frame scaled to ``height`` rows, mask tinted green with a yellow outline, ``label`` top-left."""
    width = round(rgb.shape[1] * height / rgb.shape[0])
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    m = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    small[m > 0] = small[m > 0] * 0.55 + GREEN * 0.45
    picture = np.ascontiguousarray(np.clip(small, 0, 255).astype(np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(picture, contours, -1, OUTLINE, 1, cv2.LINE_AA)
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1
    (tw, th), base = cv2.getTextSize(label, font, scale, thick)
    cv2.rectangle(picture, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
    cv2.putText(picture, label, (3, th + 3), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return picture


def model_label(path: Path, other: Path | None) -> str:
    """The file name, or parent/name when both models share a file name."""
    return f"{path.parent.name}/{path.name}" if other is not None and other.name == path.name else path.name


def save_jpeg(path: Path, sheet_rgb: np.ndarray, max_kb: int) -> tuple[int, int]:
    """Write at the highest quality (90 down to 40) that fits ``max_kb``; returns (quality, bytes)."""
    bgr = cv2.cvtColor(sheet_rgb, cv2.COLOR_RGB2BGR)
    for quality in range(90, 35, -5):
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and (len(buf) <= max_kb * 1024 or quality <= 40):
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    return quality, len(buf)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="contact sheet JPEG, e.g. docs/stills_distilled.jpg")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the bundled unet_pets.onnx)")
    parser.add_argument("--compare", type=Path, metavar="OTHER.onnx", help="a second model, its row under the first")
    parser.add_argument("--label", help="name shown for --model (default: its file name)")
    parser.add_argument("--compare-label", help="name shown for --compare")
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), help=f"default: {' '.join(VIDEOS)}")
    parser.add_argument("--video-dir", type=Path, default=SHARED_DATA / "video")
    parser.add_argument("--frames", type=int, default=4, help="stills per video (default 4)")
    parser.add_argument("--height", type=int, default=180, help="tile height in pixels (default 180)")
    parser.add_argument("--max-kb", type=int, default=300, help="size budget of the JPEG (default 300)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.height < 32:
        parser.error("--frames must be >= 1 and --height >= 32")

    from unetlite.infer import Segmenter, default_model_path

    first = args.model or default_model_path()
    models = [(Segmenter(first, threads=args.threads), args.label or model_label(Path(first), args.compare))]
    if args.compare:
        models.append((Segmenter(args.compare, threads=args.threads),
                       args.compare_label or model_label(args.compare, Path(first))))
    rows = []
    for name in args.videos:
        path = Path(name) if Path(name).is_file() else args.video_dir / name
        stills = pick_frames(path, args.frames)
        for segmenter, label in models:
            rows.append(np.hstack([tile(rgb, segmenter(rgb).mask, args.height, f"{label}  {path.stem} #{index}")
                                   for index, rgb in stills]))
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows])
    quality, size = save_jpeg(args.out, sheet, args.max_kb)
    print(f"{args.out}: {sheet.shape[1]}x{sheet.shape[0]}, {len(rows)} rows, JPEG quality {quality}, "
          f"{size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

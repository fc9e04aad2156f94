"""Does reduced JPEG decoding make `unetlite segment` fast on phone-size photos? JSON out:

    python benchmarks/segment_12mp.py --out benchmarks/segment_12mp.json

Makes a temporary folder of 12 MP JPEGs by upscaling shared pet photos (never committed,
deleted afterwards), then runs the real command, `unetlite segment DIR -o OUT --format
mask`, in its own process per round, alternating with and without reduced decoding
(`--no-reduced-decode`), and reads the images/s from each run's summary line (the
pipeline only: model loading is not counted). Target (issue 10): >= 2x.

``--baseline DIR`` also times the previous release's code in the same rounds: DIR holds a
``unetlite/`` package made of that release's folders (``git worktree add /tmp/old cf85db4``,
then ``unetlite/{infer,train,export}`` links to it and an empty ``unetlite/__init__.py``); it
runs with PYTHONPATH=DIR, so "today's images/s" is measured, not remembered.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from _report import PETS_IMAGES, emit  # benchmarks/ is on sys.path when run as a script
from unetlite.infer.engine.runtimes import available_cpus
from unetlite.infer.io.images import read_image

MODES = {"reduced_decode": [], "full_decode": ["--no-reduced-decode"]}


def make_photos(images: Path, folder: Path, count: int, megapixels: float) -> int:
    """Upscale the first ``count`` JPEGs to about ``megapixels`` (aspect kept), JPEG quality 90."""
    sources = sorted(images.glob("*.jpg"))[:count]
    for src in sources:
        rgb = read_image(src)
        scale = math.sqrt(megapixels * 1e6 / (rgb.shape[0] * rgb.shape[1]))
        big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / src.name), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return len(sources)


def run_segment(folder: Path, out: Path, extra: list[str], model: Path | None, batch_size: int,
                pythonpath: Path | None = None) -> float:
    """One `unetlite segment` process; returns the images/s of its summary line."""
    cmd = [sys.executable, "-m", "unetlite.infer.cli", "segment", str(folder), "-o", str(out), "--format", "mask",
           "--batch-size", str(batch_size), "--no-progress", *extra] + (["--model", str(model)] if model else [])
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    match = re.search(r"(\d+) done.*\(([\d.]+) images/s\)", done.stdout)
    if done.returncode != 0 or not match:
        raise SystemExit(f"segment failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return float(match.group(2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=PETS_IMAGES, help="folder of JPEGs to upscale")
    p.add_argument("--count", type=int, default=40, help="photos to make (default: 40)")
    p.add_argument("--megapixels", type=float, default=12.0)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode (default: 3)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--model", type=Path, help="ONNX model (default: the bundled one)")
    p.add_argument("--baseline", type=Path, metavar="DIR", help="also time the previous release (see above)")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="unetlite-12mp-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        count = make_photos(args.images, photos, args.count, args.megapixels)
        if count == 0:
            raise SystemExit(f"no JPEGs in {args.images}")
        modes = {mode: (extra, None) for mode, extra in MODES.items()}
        if args.baseline:
            modes["previous_release"] = ([], args.baseline)
        runs: dict[str, list[float]] = {mode: [] for mode in modes}
        for r in range(args.rounds):
            for mode, (extra, path) in modes.items():  # A B C A B C ...: the machine's drift hits all alike
                runs[mode].append(run_segment(photos, Path(tmp) / f"out-{mode}-{r}", extra, args.model,
                                              args.batch_size, path))
    median = {mode: statistics.median(v) for mode, v in runs.items()}
    result = {"images": count, "megapixels": args.megapixels, "rounds": args.rounds, "batch_size": args.batch_size,
              "cpus": available_cpus(),
              "images_per_s": median, "runs": runs,
              "speedup": median["reduced_decode"] / median["full_decode"]}
    if args.baseline:
        result["vs_previous_release"] = median["reduced_decode"] / median["previous_release"]
    key = "vs_previous_release" if args.baseline else "speedup"
    result["target"] = {"what": key, "want": ">= 2.0", "met": result[key] >= 2.0}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

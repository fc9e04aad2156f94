"""Reproduce the README's speed table: `python benchmarks/run.py --out benchmarks/results.json`.

Runs `unetlite bench` (same code, in-process) on the bundled model, its int8 twin and
the Keras checkpoint it was exported from, plus the end-to-end 640x480 video frame
rate when the shared test video is present, then writes the report with the targets
checked. Inputs that are absent are skipped with a note, never faked.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from unetlite.infer.bench import FP32, INT8, TF, BenchConfig, BenchError, benchmark, format_report
from unetlite.infer.imageio import write_atomic
from unetlite.infer.session import ModelLoadError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UNETLITE_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_MODEL = REPO / "infer" / "models" / "unet_pets.onnx"
DEFAULT_KERAS = REPO / "benchmarks" / "model" / "unet_pets.keras"
DEFAULT_VIDEO = SHARED_DATA / "video" / "vtest_people_768x576.mp4"

# name -> (report value, comparison, target): what the README promises
TARGETS = {
    "ort_fp32_p50_vs_tf": ("ort_vs_tf_p50", "<=", 0.85),
    "int8_speedup_over_fp32": ("int8_speedup", ">=", 1.3),
    "video_fps_fp32_640x480": ("video_fps_fp32", ">=", 45.0),
}


def check_targets(report: dict) -> dict:
    """Each target with its measured value and whether it is met (None: not measured)."""
    values = {"ort_vs_tf_p50": report["ort_vs_tf_p50"], "int8_speedup": report["int8_speedup"],
              "video_fps_fp32": (report["video_fps"] or {}).get(FP32)}
    out = {}
    for name, (key, op, target) in TARGETS.items():
        value = values[key]
        met = None if value is None else (value <= target if op == "<=" else value >= target)
        out[name] = {"value": value, "target": f"{op} {target}", "met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX fp32 model")
    p.add_argument("--int8", type=Path, help="ONNX int8 model (default: <model stem>.int8.onnx beside it)")
    p.add_argument("--keras", type=Path, default=DEFAULT_KERAS, help="Keras checkpoint of the same network")
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="video for the 640x480 frame rate")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--video-frames", type=int, default=300)
    p.add_argument("--threads", type=int, help="threads for every engine (default: CPU count)")
    p.add_argument("--providers", default="cpu", help="onnxruntime providers (default: cpu, as TensorFlow here)")
    p.add_argument("--no-spin", action="store_true", help="onnxruntime threads block instead of busy-waiting")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    notes = []
    keras_path, video = args.keras, args.video
    if keras_path is not None and not keras_path.is_file():
        notes.append(f"TensorFlow skipped: Keras checkpoint {keras_path} not found (pass --keras)")
        keras_path = None
    if video is not None and not video.is_file():
        notes.append(f"video skipped: {video} not found (pass --video)")
        video = None
    cfg = BenchConfig(model=args.model, int8=args.int8, keras=keras_path,
                      batch_sizes=tuple(int(s) for s in args.batch_sizes.split(",")), runs=args.runs,
                      warmup=args.warmup, threads=args.threads, providers=args.providers, spin=not args.no_spin, video=video,
                      video_frames=args.video_frames, notes=notes)
    try:
        report = benchmark(cfg)
    except (BenchError, ModelLoadError) as exc:
        print(f"benchmarks/run.py: {exc}", file=sys.stderr)
        return 2
    report["targets"] = check_targets(report)
    report["command"] = " ".join([Path(sys.executable).name, "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    write_atomic(args.out, (json.dumps(report, indent=2) + "\n").encode())

    for note in report["notes"]:
        print(note, file=sys.stderr)
    print(format_report(report))
    for name, t in report["targets"].items():
        state = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        print(f"target {name}: {value} (want {t['target']}): {state}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce the README's speed table: `python benchmarks/run.py --out benchmarks/results.json`.

Runs `unetlite bench`'s code (each engine in its own process, engines taking turns over
rounds, same thread count) on the bundled model and its int8 twin with every registered
runtime that runs here, TensorFlow on the Keras model rebuilt from the same ONNX weights
(unetlite.export.keras_from_onnx; no second copy of the weights), plus the end-to-end 640x480 video
frame rate on the shared test video. Writes one JSON with the machine described and the
issue's targets checked. Inputs that are absent are skipped with a note, never faked.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _report import REPO, SHARED_DATA, emit  # benchmarks/ is on sys.path when run as a script
from unetlite.infer.cli.bench import add_bench_arguments, config_from_args
from unetlite.infer.engine.runtimes import ModelLoadError
from unetlite.infer.pipeline.bench import FP32, OV_INT8, BenchConfig, BenchError, benchmark, format_report

DEFAULT_MODEL = REPO / "infer" / "models" / "unet_pets.onnx"
DEFAULT_VIDEO = SHARED_DATA / "video" / "vtest_people_768x576.mp4"
DEFAULTS = BenchConfig(rounds=7, runs=60, warmup=10, video_frames=100)

# name -> (where in the report, comparison, target): what issue 10 asks for
TARGETS = {
    "onnxruntime_fp32_vs_tensorflow": (("ratios", "onnxruntime_fp32_vs_tensorflow"), "<=", 0.9),
    "openvino_int8_vs_onnxruntime_fp32": (("ratios", "openvino_int8_vs_onnxruntime_fp32"), "<=", 0.6),
    "video_fps_openvino_int8_640x480": (("video_fps", OV_INT8), ">=", 80.0),
    "video_fps_onnxruntime_fp32_640x480": (("video_fps", FP32), ">=", 45.0),
}


def check_targets(report: dict) -> dict:
    """Each target with its measured value and whether it is met (None: not measured)."""
    out = {}
    for name, ((section, key), op, target) in TARGETS.items():
        value = (report.get(section) or {}).get(key)
        met = None if value is None else (value <= target if op == "<=" else value >= target)
        out[name] = {"value": value, "target": f"{op} {target}", "met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX fp32 model")
    p.add_argument("--keras", type=Path, help="Keras checkpoint of the same network (default: rebuilt from --model)")
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="video for the 640x480 frame rate")
    add_bench_arguments(p, DEFAULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    notes = []
    video = args.video
    if video is not None and not video.is_file():
        notes.append(f"video skipped: {video} not found (pass --video)")
        video = None
    cfg = config_from_args(args, model=args.model, keras=args.keras, video=video, notes=tuple(notes))
    try:
        report = benchmark(cfg)
    except (BenchError, ModelLoadError) as exc:
        print(f"benchmarks/run.py: {exc}", file=sys.stderr)
        return 2
    report["targets"] = check_targets(report)
    report["command"] = " ".join([Path(sys.executable).name, "benchmarks/run.py",
                                  *(argv if argv is not None else sys.argv[1:])])
    emit(report, args.out, show=False)

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

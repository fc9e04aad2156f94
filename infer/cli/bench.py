"""`unetlite bench`: every runtime timed fairly, each engine in its own process (pipeline.bench)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .args import positive_int, say


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1 or 1 not in sizes:
        raise argparse.ArgumentTypeError("batch sizes must be integers >= 1, including 1")
    return sizes


def _runtimes(text: str) -> tuple[str, ...]:
    """--providers for bench: a comma-separated list of registered runtimes."""
    from ..engine import runtimes
    names = []
    for item in (s for s in text.split(",") if s.strip()):
        try:
            name = runtimes.parse_backend(item)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if name == runtimes.AUTO:
            raise argparse.ArgumentTypeError("name runtimes (auto picks one; bench times every one that runs here "
                                             "when --providers is left out)")
        names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("expected at least one runtime")
    return tuple(dict.fromkeys(names))


def add_bench_arguments(p: argparse.ArgumentParser, defaults=None) -> None:
    """The options `unetlite bench` and benchmarks/run.py share."""
    from ..pipeline.bench import BenchConfig
    defaults = defaults or BenchConfig()

    p.add_argument("--providers", type=_runtimes, metavar="LIST",
                   help="comma-separated registered runtimes to time, each failing loudly if it cannot run "
                        "(default: every registered runtime that runs here; see --providers in segment)")
    p.add_argument("--no-tensorflow", action="store_true",
                   help="do not time TensorFlow (by default timed when installed, on the Keras model rebuilt "
                        "from the ONNX weights)")
    p.add_argument("--int8", type=Path, metavar="MODEL",
                   help="ONNX int8 model (default: <model stem>.int8.onnx next to --model, when present)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=defaults.batch_sizes, metavar="LIST",
                   help="comma-separated, must include 1 (latency); others give images/s (default: %(default)s)")
    p.add_argument("--rounds", type=positive_int, default=defaults.rounds,
                   help="turns per engine, engines alternating (default: %(default)s)")
    p.add_argument("--runs", type=positive_int, default=defaults.runs,
                   help="timed batch-1 calls per engine per round (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed calls per turn (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, help="threads for every engine (default: usable CPUs)")
    p.add_argument("--no-spin", action="store_true",
                   help="onnxruntime threads block instead of busy-waiting (faster when other work shares the CPU)")
    p.add_argument("--video-frames", type=positive_int, default=defaults.video_frames,
                   help="timed frames per engine per round (default: %(default)s)")
    p.add_argument("--no-openvino", action="store_true", help="do not time OpenVINO even when installed")
    p.add_argument("--bf16", action="store_true", help="also time bf16 on the runtimes offering it (OpenVINO on "
                                                       "CPUs with bf16 units)")


def config_from_args(args: argparse.Namespace, **paths):
    from ..pipeline.bench import BenchConfig
    return BenchConfig(int8=args.int8, batch_sizes=args.batch_sizes, rounds=args.rounds, runs=args.runs,
                       warmup=args.warmup, threads=args.threads, spin=not args.no_spin,
                       video_frames=args.video_frames, openvino=not args.no_openvino, bf16=args.bf16,
                       providers=args.providers, tensorflow=not args.no_tensorflow, **paths)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time TensorFlow and every installed runtime fairly, and end-to-end video",
                       description="Latency (batch 1 p50/p95/p99), throughput at larger batches and 640x480 "
                                   "video frame rate; each engine in its own process, taking turns over rounds.")
    p.add_argument("--model", type=Path, help="ONNX fp32 model (default: the bundled one)")
    p.add_argument("--keras", type=Path, metavar="CKPT",
                   help="Keras checkpoint of the same network for TensorFlow (default: rebuilt from --model's "
                        "weights; TensorFlow needs the [train] extra)")
    p.add_argument("--video", type=Path, metavar="FILE", help="video for the end-to-end 640x480 frame rate")
    add_bench_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UnetliteError
    from ..pipeline.bench import benchmark, format_report

    if args.warmup < 0:
        raise UnetliteError("--warmup must be >= 0")
    if args.video is not None and not args.video.is_file():
        raise UnetliteError(f"{args.video}: video file not found")
    report = benchmark(config_from_args(args, model=args.model, keras=args.keras, video=args.video))
    for note in report["notes"]:
        print(note, file=sys.stderr)
    say(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0

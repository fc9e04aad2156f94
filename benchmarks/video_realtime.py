"""Real-time video: end-to-end fps of `unetlite video` (decode + inference + render + H.264 encode,
threads overlapped) against pure batch-1 inference fps measured in the same run.

    python benchmarks/video_realtime.py --out benchmarks/video_realtime.json      # the README table
    python benchmarks/video_realtime.py --smoke                                  # seconds: checks it runs

Grid: 640x360, 1280x720, 1920x1080 x {overlay, blur, image background} x {onnxruntime fp32, the
fastest CPU setting (OpenVINO int8 when installed)}, one stream; and four 640x360 streams (blur)
against one. Sources are the shared pet clips (tests/data's clip without the shared data) scaled to
each size and written once as H.264 (PyAV) or mp4v files, so decoding is real. Run it on a quiet
machine: a training run or a build on the same cores makes every number meaningless.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from _report import REPO, SHARED_DATA, emit  # benchmarks/ is on sys.path when run as a script

SIZES = ((640, 360), (1280, 720), (1920, 1080))
MODES = ("overlay", "blur", "image")
CLIPS = ("cat_closeup_640x360.mp4", "dog_leash_1280x720.mp4")
FIXTURE_CLIP = REPO / "tests" / "data" / "video" / "vtest_people_short_384x288.mp4"


def machine() -> dict:
    import onnxruntime
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__, "load_average_at_start": os.getloadavg()}
    try:
        import openvino
        info["openvino"] = openvino.__version__
    except ImportError:
        pass
    try:
        import av
        info["av"] = av.__version__
    except ImportError:
        pass
    return info


def source_frames(count: int) -> list[np.ndarray]:
    clips = [SHARED_DATA / "video" / name for name in CLIPS if (SHARED_DATA / "video" / name).is_file()]
    frames: list[np.ndarray] = []
    for clip in clips or [FIXTURE_CLIP]:
        cap = cv2.VideoCapture(str(clip))
        while len(frames) < count * (clips.index(clip) + 1 if clips else 1):
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
    while len(frames) < count:
        frames += frames[: count - len(frames)]
    return frames[:count]


def write_clip(frames: list[np.ndarray], size: tuple[int, int], path: Path) -> Path:
    from unetlite.infer.io.video_av import open_sink
    sink = open_sink(path, 30.0)
    for frame in frames:
        sink.write(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    return sink.commit()


def settings(quick: bool) -> list[dict]:
    found = [{"name": "onnxruntime fp32", "providers": "cpu", "int8": False}]
    try:
        import openvino  # noqa: F401
        found.append({"name": "openvino int8", "providers": "openvino", "int8": True})
    except ImportError:
        found.append({"name": "onnxruntime int8", "providers": "cpu", "int8": True})
    return found[:1] if quick else found


def pure_inference_fps(segmenter, frame: np.ndarray, seconds: float) -> float:
    """Batch-1 Segmenter.run on an already prepared input, nothing else."""
    from unetlite.infer.pipeline.items import prepare_pixels
    x = prepare_pixels(segmenter, frame, "BGR")[None]
    segmenter.run(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        segmenter.run(x)
        done += 1
    return done / (time.perf_counter() - start)


def scene(mode: str, backdrop: Path):
    from unetlite.infer.pipeline.backgrounds import BackgroundSpec
    return {"overlay": None, "blur": BackgroundSpec("blur"), "image": BackgroundSpec("image", path=backdrop)}[mode]


def one_stream(segmenter, clip: Path, mode: str, backdrop: Path, out: Path) -> float:
    from unetlite.infer.pipeline.frames import VideoOptions, process_video
    options = VideoOptions(fmt="overlay" if mode == "overlay" else "composite", scene=scene(mode, backdrop))
    summary = process_video(segmenter, str(clip), out, options)
    return summary.frames_segmented / summary.seconds


def many_streams(segmenter, clips: list[Path], mode: str, backdrop: Path, outdir: Path) -> dict:
    from unetlite.infer.io.video_av import open_sink
    from unetlite.infer.pipeline.frames import VideoOptions
    from unetlite.infer.pipeline.streams import process_streams
    options = VideoOptions(fmt="composite", scene=scene(mode, backdrop))
    outputs = [outdir / f"s{k}.mp4" for k in range(len(clips))]
    summary = process_streams(segmenter, [str(c) for c in clips], outputs, options,
                              lambda path, fps: open_sink(path, fps))
    total = sum(s.frames_segmented for s in summary.streams)
    return {"streams": len(clips), "aggregate_fps": round(total / summary.seconds, 2),
            "per_stream_fps": [round(s.fps, 2) for s in summary.streams],
            "frames_per_batch": round(total / max(summary.batches, 1), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: the bundled one)")
    parser.add_argument("--frames", type=int, default=150, help="frames per clip (default 150)")
    parser.add_argument("--pure-seconds", type=float, default=5.0, help="seconds of pure inference per setting")
    parser.add_argument("--smoke", action="store_true", help="a few frames, one size, one setting: checks it runs")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    from unetlite.infer.engine.options import EngineOptions, open_segmenter
    from unetlite.infer.io.sinks import VideoNotSaved  # noqa: F401  (import check)

    frames_per_clip = 12 if args.smoke else args.frames
    sizes = SIZES[:1] if args.smoke else SIZES
    modes = MODES if not args.smoke else ("blur", "image")
    report: dict = {"machine": machine(), "frames_per_clip": frames_per_clip, "smoke": args.smoke,
                    "note": "smoke run: not a measurement" if args.smoke else
                    "end-to-end = decode + inference + render + H.264 encode, threads overlapped",
                    "results": [], "streams": []}
    frames = source_frames(frames_per_clip)
    with tempfile.TemporaryDirectory(prefix="unetlite-video-bench-") as tmp:
        tmp = Path(tmp)
        backdrop = tmp / "backdrop.jpg"
        cv2.imwrite(str(backdrop), cv2.resize(frames[len(frames) // 2], (1280, 720))[:, ::-1])  # a real scene
        clips = {size: write_clip(frames, size, tmp / f"clip_{size[0]}x{size[1]}.mp4") for size in sizes}
        for setting in settings(args.smoke):
            segmenter = open_segmenter(EngineOptions(args.model, setting["int8"], setting["providers"]))
            pure = pure_inference_fps(segmenter, frames[0], 1.0 if args.smoke else args.pure_seconds)
            for size in sizes:
                for mode in modes:
                    fps = one_stream(segmenter, clips[size], mode, backdrop, tmp / "out.mp4")
                    report["results"].append({"setting": setting["name"], "size": f"{size[0]}x{size[1]}",
                                              "background": mode, "streams": 1, "end_to_end_fps": round(fps, 2),
                                              "pure_inference_fps": round(pure, 2),
                                              "ratio": round(fps / pure, 3)})
                    print(report["results"][-1], file=sys.stderr)
            small = clips[sizes[0]]
            single = many_streams(segmenter, [small], "blur", backdrop, tmp)
            four = many_streams(segmenter, [small] * 4, "blur", backdrop, tmp)
            report["streams"].append({"setting": setting["name"], "size": f"{sizes[0][0]}x{sizes[0][1]}",
                                      "background": "blur", "one": single, "four": four,
                                      "four_vs_one": round(four["aggregate_fps"] / single["aggregate_fps"], 3)})
            print(report["streams"][-1], file=sys.stderr)
    emit(report, None if args.smoke else args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`unetlite bench`: TensorFlow vs onnxruntime fp32 vs int8, measured in one process.

Engines are timed interleaved (one call of each per round, in a shuffled order) so
that machine noise -- other processes, frequency changes, one engine's threads still
spinning -- hits all of them alike. TensorFlow is timed as a ``tf.function`` on the
Keras checkpoint (``model.predict`` adds ~3x overhead at batch 1 and would flatter
onnxruntime). Video is timed end to end at 640x480: decode, preprocess, infer,
resize back, overlay.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

TF = "tensorflow"
FP32 = "onnxruntime_fp32"
INT8 = "onnxruntime_int8"
VIDEO_SIZE = (480, 640)  # (height, width) of the end-to-end video measurement
MIN_VIDEO_FRAMES = 10    # fewer timed frames than this is not a frame rate


class BenchError(Exception):
    """Bad bench input (one-line message naming the file)."""


@dataclass
class BenchConfig:
    """What to measure; paths left None are skipped (int8: looked for next to the model)."""

    model: Path | None = None            # ONNX fp32 (default: the bundled model)
    int8: Path | None = None             # ONNX int8 (default: <model stem>.int8.onnx when present)
    keras: Path | None = None            # Keras checkpoint of the same network (TensorFlow engine)
    batch_sizes: tuple[int, ...] = (1, 8)
    runs: int = 100                      # timed batch-1 calls per engine; batch B gets ceil(runs/B), >= 3
    warmup: int = 10
    threads: int | None = None           # both engines; default: CPU count
    providers: str = "auto"
    spin: bool = True                    # onnxruntime busy-waiting (off helps on a busy machine)
    video: Path | None = None
    video_frames: int = 200
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def percentiles(seconds: np.ndarray) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def interleaved(engines: dict[str, Callable[[], object]], runs: int, warmup: int,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Seconds per call of each engine: ``warmup + runs`` rounds, one call of each per round.

    A call returning False (a video that ran out) ends the measurement; that unfinished
    round is dropped so every engine keeps the same number of timings.
    """
    rng = np.random.default_rng(seed)
    names = list(engines)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + runs):
        lap = {}
        for k in rng.permutation(len(names)):  # no engine always runs right after the same one
            start = time.perf_counter()
            more = engines[names[k]]()
            lap[names[k]] = time.perf_counter() - start
            if more is False:
                return {name: np.array(t) for name, t in times.items()}
        if round_ >= warmup:
            for name, elapsed in lap.items():
                times[name].append(elapsed)
    return {name: np.array(t) for name, t in times.items()}


def _tensorflow_engine(path: Path, threads: int, notes: list[str]) -> tuple[Callable[[np.ndarray], np.ndarray], dict] | None:
    """A tf.function over the Keras model, or None (with a note) when TensorFlow is unavailable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import keras
    except ImportError as exc:
        notes.append(f"TensorFlow skipped: not installed ({exc.name or exc}); pip install 'unetlite[train]'")
        return None
    try:  # must happen before TensorFlow creates its thread pools
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        log.info("TensorFlow already initialised: its thread counts stay as they are")
    if not path.is_file():
        raise BenchError(f"{path}: Keras checkpoint not found")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for bad files
        raise BenchError(f"{path}: not a loadable Keras model ({str(exc).splitlines()[0][:200]})") from None
    fn = tf.function(lambda x: model(x, training=False))
    info = {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
            "input_shape": list(model.input_shape)}
    return (lambda x: fn(x).numpy()[..., 0]), info


def _find_int8(model: Path) -> Path | None:
    candidate = model.with_name(f"{model.stem}.int8.onnx")
    return candidate if candidate.is_file() else None


def _check_size(name: str, shape, size: tuple[int, int]) -> None:
    fixed = [d for d in shape[1:3] if isinstance(d, int)]
    if fixed and tuple(shape[1:3]) != size:
        raise BenchError(f"{name}: input {shape[1]}x{shape[2]} differs from the ONNX model's {size[0]}x{size[1]}")


def _frame_step(cap, pipeline) -> Callable[[], bool]:
    """One end-to-end frame: decode, resize to 640x480 if needed, then `unetlite video`'s own
    per-frame work (preprocess, infer, probability back to frame size, overlay)."""
    import cv2
    height, width = VIDEO_SIZE
    index = 0

    def one_frame() -> bool:
        nonlocal index
        ok, bgr = cap.read()
        if not ok:
            return False
        if bgr.shape[:2] != VIDEO_SIZE:  # counted in the time (linear: ~0.4 ms, area would be ~2.5 ms)
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
        pipeline(index, bgr)
        index += 1
        return True
    return one_frame


def _probe_video(path: Path) -> None:
    """Fail before any timing when the video cannot be decoded at all."""
    import cv2
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # our one-line error, not FFmpeg's log
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened() or not cap.read()[0]:
            raise BenchError(f"{path}: cannot open or decode as a video")
    finally:
        cap.release()


def _video_fps(models: dict[str, Path], cfg: BenchConfig, threads: int) -> dict:
    """End-to-end frames/s at 640x480 for each model, interleaved frame by frame.

    Decoding is serial here; `unetlite video` overlaps it in a reader thread, so the
    command itself is at least this fast where a spare core exists.
    """
    import cv2

    from .session import Segmenter
    from .video import FramePipeline, VideoOptions

    path, frames, warmup = Path(cfg.video), cfg.video_frames, cfg.warmup
    # spin=False and the default overlay rendering: exactly what `unetlite video` runs
    pipelines = {name: FramePipeline(Segmenter(model, providers=cfg.providers, threads=threads, spin=False),
                                     VideoOptions(fmt="overlay")) for name, model in models.items()}
    caps = {name: cv2.VideoCapture(str(path)) for name in models}
    try:
        if not all(cap.isOpened() for cap in caps.values()):
            raise BenchError(f"{path}: cannot open as a video")
        first = next(iter(caps.values()))
        source = f"{int(first.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(first.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
        times = interleaved({name: _frame_step(cap, pipelines[name]) for name, cap in caps.items()},
                            frames, warmup, cfg.seed)
    finally:
        for cap in caps.values():
            cap.release()
    count = len(next(iter(times.values())))
    needed = min(frames, MIN_VIDEO_FRAMES)
    if count < needed:  # OpenCV also "opens" a still image as a one-frame video
        raise BenchError(f"{path}: only {count} frame(s) decoded after {warmup} warm-up frame(s), need {needed} "
                         "(too short, corrupt, or not a video)")
    if count < frames:
        log.warning("%s: only %d frames after warm-up (asked for %d)", path, count, frames)
    height, width = VIDEO_SIZE
    return {"fps": {name: float(len(t) / t.sum()) for name, t in times.items()}, "frames": count,
            "source": str(path), "source_size": source, "size": f"{width}x{height}", "spin": False,
            "decode": "serial"}


def _versions(tf_loaded: bool) -> dict[str, str]:
    import cv2
    import onnxruntime as ort
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__,
           "opencv": cv2.__version__}
    try:
        out["unetlite"] = version("unetlite")
    except PackageNotFoundError:
        pass
    if tf_loaded:
        import keras
        import tensorflow as tf
        out.update(tensorflow=tf.__version__, keras=keras.__version__)
    return out


def _note_once(notes: list[str], note: str) -> None:
    """Add a skip note unless the caller already explained that skip (same first two words)."""
    if not any(n.split(":")[0] == note.split(":")[0] for n in notes):
        notes.append(note)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _onnx_engines(cfg: BenchConfig, threads: int, notes: list[str]) -> dict:
    """fp32 (and int8) Segmenters sharing one input size."""
    from .session import Segmenter, default_model_path

    model = Path(cfg.model) if cfg.model else default_model_path()
    int8 = Path(cfg.int8) if cfg.int8 else _find_int8(model)
    if cfg.int8 is None:
        notes.append(f"int8 model found: {int8}" if int8 else
                     f"int8 skipped: no --int8 and no {model.stem}.int8.onnx next to {model}")
    segmenters = {FP32: Segmenter(model, providers=cfg.providers, threads=threads, spin=cfg.spin)}
    if int8:
        segmenters[INT8] = Segmenter(int8, providers=cfg.providers, threads=threads, spin=cfg.spin)
    size = segmenters[FP32].contract.input_size
    for seg in segmenters.values():
        _check_size(str(seg.path), seg.session.get_inputs()[0].shape, size)
        if seg.contract.input_size != size:
            raise BenchError(f"{seg.path}: model size {seg.contract.input_size} differs from {model}'s {size}")
    return segmenters


def _parity(calls: dict, x: np.ndarray) -> dict[str, float]:
    """Max |TF - ORT| per ONNX engine: the comparison only means something for the same network."""
    ref = calls[TF](x)
    return {f"{TF}_vs_{name}_max_abs": float(np.abs(call(x) - ref).max()) for name, call in calls.items() if name != TF}


def _time_batches(calls: dict, cfg: BenchConfig, size: tuple[int, int]) -> dict[str, dict]:
    """Batch-1 latency percentiles and images/s at each larger batch, engines interleaved."""
    rng = np.random.default_rng(cfg.seed)
    engines: dict[str, dict] = {name: {"throughput": {}} for name in calls}
    for batch in sorted(set(cfg.batch_sizes)):
        x = rng.random((batch, *size, 3), dtype=np.float32)  # dense convs: time does not depend on values
        runs = cfg.runs if batch == 1 else max(3, -(-cfg.runs // batch))
        warmup = cfg.warmup if batch == 1 else max(1, cfg.warmup // batch)
        log.info("batch %d: %d rounds of %s", batch, runs, ", ".join(calls))
        times = interleaved({name: (lambda f=f: f(x)) for name, f in calls.items()}, runs, warmup, cfg.seed + batch)
        for name, t in times.items():
            if batch == 1:
                engines[name].update(percentiles(t), runs=len(t))
            else:
                engines[name]["throughput"][str(batch)] = float(batch * len(t) / t.sum())
    return engines


def benchmark(cfg: BenchConfig) -> dict:
    """Run every measurement and return the JSON-ready report."""
    threads = cfg.threads or os.cpu_count() or 1
    notes = list(cfg.notes)
    segmenters = _onnx_engines(cfg, threads, notes)
    size = segmenters[FP32].contract.input_size
    if cfg.video is not None:
        _probe_video(Path(cfg.video))

    calls: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    tf_info = None
    if cfg.keras is None:
        _note_once(notes, "TensorFlow skipped: no --keras checkpoint given")
    else:
        tf_engine = _tensorflow_engine(Path(cfg.keras), threads, notes)
        if tf_engine is not None:
            calls[TF], tf_info = tf_engine
            _check_size(str(cfg.keras), tf_info.pop("input_shape"), size)
            tf_info["model"] = str(cfg.keras)
    calls.update({name: seg.run for name, seg in segmenters.items()})

    parity = _parity(calls, np.random.default_rng(cfg.seed).random((1, *size, 3), dtype=np.float32)) if tf_info else {}
    if parity.get(f"{TF}_vs_{FP32}_max_abs", 0.0) > 1e-3:
        notes.append(f"warning: {cfg.keras} and {segmenters[FP32].path} disagree (max |diff| "
                     f"{parity[f'{TF}_vs_{FP32}_max_abs']:.3g}): are they the same network?")
    engines = _time_batches(calls, cfg, size)
    if 1 not in cfg.batch_sizes:
        notes.append("batch 1 not measured: no latency percentiles")
    for name, seg in segmenters.items():
        engines[name]["model"] = str(seg.path)
    if tf_info:
        engines[TF].update(tf_info)

    video = None
    if cfg.video is None:
        _note_once(notes, "video skipped: pass --video FILE (decoded and timed end to end at 640x480)")
    else:
        video = _video_fps({name: seg.path for name, seg in segmenters.items()}, cfg, threads)

    p50 = {name: e.get("p50_ms") for name, e in engines.items()}
    return {
        "engines": engines,
        "ort_vs_tf_p50": _ratio(p50.get(FP32), p50.get(TF)),
        "int8_speedup": _ratio(p50.get(FP32), p50.get(INT8)),
        "video_fps": video.pop("fps") if video else None,
        "video": video,
        "parity": parity,
        "provider": segmenters[FP32].provider,
        "threads": threads,
        "spin": cfg.spin,
        "input_size": list(size),
        "batch_sizes": sorted(set(cfg.batch_sizes)),
        "runs": cfg.runs,
        "warmup": cfg.warmup,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "versions": _versions(tf_info is not None),
        "notes": notes,
    }


def format_report(report: dict) -> str:
    """A short table for people."""
    sizes = [s for s in report["batch_sizes"] if s != 1]
    video = report["video_fps"] or {}
    head = f"{'engine':<18}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}" + "".join(f"{f'img/s@{s}':>11}" for s in sizes)
    head += f"{'video fps':>11}" if video else ""
    lines = [head]
    for name, e in report["engines"].items():
        row = f"{name:<18}" + "".join(f"{e[k]:>9.2f}" if k in e else f"{'-':>9}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        row += "".join(f"{e['throughput'].get(str(s), float('nan')):>11.1f}" for s in sizes)
        if video:
            row += f"{video[name]:>11.1f}" if name in video else f"{'-':>11}"
        lines.append(row)
    extra = []
    if report["ort_vs_tf_p50"] is not None:
        extra.append(f"ORT fp32 / TF p50: {report['ort_vs_tf_p50']:.2f}x")
    if report["int8_speedup"] is not None:
        extra.append(f"int8 speedup over fp32: {report['int8_speedup']:.2f}x")
    if extra:
        lines.append("   ".join(extra))
    h, w = report["input_size"]
    lines.append(f"provider {report['provider']}, {report['threads']} threads{'' if report['spin'] else ' (no spin)'}, "
                 f"input {w}x{h}"
                 + (f", video {report['video']['size']} from {report['video']['source_size']} "
                    f"({report['video']['frames']} frames)" if video else ""))
    return "\n".join(lines)


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be integers >= 1")
    return sizes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time TensorFlow vs onnxruntime fp32/int8 and end-to-end video",
                       description="Latency (batch 1 p50/p95/p99), throughput at larger batches and 640x480 "
                                   "video frame rate, engines interleaved in one process.")
    p.add_argument("--model", type=Path, help="ONNX fp32 model (default: the bundled one)")
    p.add_argument("--int8", type=Path, metavar="MODEL",
                   help="ONNX int8 model (default: <model stem>.int8.onnx next to --model, when present)")
    p.add_argument("--keras", type=Path, metavar="CKPT",
                   help="Keras checkpoint of the same network, timed with TensorFlow (needs unetlite[train])")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=(1, 8), metavar="LIST",
                   help="comma-separated; 1 gives latency percentiles, others images/s (default: 1,8)")
    p.add_argument("--runs", type=int, default=100, help="timed batch-1 calls per engine (batch B: runs/B, >= 3)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default: 10)")
    p.add_argument("--threads", type=int, help="threads for every engine (default: CPU count)")
    p.add_argument("--providers", default="auto", help="onnxruntime providers: auto, cpu, cuda (default: auto)")
    p.add_argument("--no-spin", action="store_true",
                   help="onnxruntime threads block instead of busy-waiting (faster when other work shares the CPU)")
    p.add_argument("--video", type=Path, metavar="FILE", help="video for the end-to-end 640x480 frame rate")
    p.add_argument("--video-frames", type=int, default=200, help="timed frames per engine (default: 200)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .session import ModelLoadError

    if args.runs < 1 or args.warmup < 0 or args.video_frames < 1:
        print("unetlite bench: --runs and --video-frames must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    if args.video is not None and not args.video.is_file():
        print(f"unetlite bench: {args.video}: video file not found", file=sys.stderr)
        return 2
    cfg = BenchConfig(model=args.model, int8=args.int8, keras=args.keras, batch_sizes=args.batch_sizes,
                      runs=args.runs, warmup=args.warmup, threads=args.threads, providers=args.providers,
                      spin=not args.no_spin, video=args.video, video_frames=args.video_frames)
    try:
        report = benchmark(cfg)
    except (BenchError, ModelLoadError) as exc:
        print(f"unetlite bench: {exc}", file=sys.stderr)
        return 2
    for note in report["notes"]:
        print(note, file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0

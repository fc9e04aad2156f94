"""Benchmarks behind `unetlite bench`: every runtime timed fairly -- each engine in its own process.

Timing engines side by side in one process measures their interference: one engine's
thread pool keeps spinning after its call and taxes the next (on a 2-core machine that
doubled onnxruntime's p50). Here each engine lives in its own worker process and the
workers take turns (A B C A B C ... over rounds): only the engine being timed is busy,
the others wait on a pipe. All get the same thread count. Each round gives each engine
p50/p95/p99; the report keeps the median over rounds, and every ratio per round with
its min and max, so a noisy round shows up instead of hiding in an average.

The ONNX engines are every runtime in the registry (``engine.runtimes.REGISTRY``) that can run
here, each on the fp32 model and its int8 twin (and bf16 where the runtime offers it): a new
runtime is timed without a line changed here. TensorFlow is timed as a ``tf.function``
(``model.predict`` adds ~3x overhead at batch 1) on the Keras model rebuilt from the fp32 ONNX
file in its worker (``unetlite.export.keras_from_onnx``, needs the [train] extra), or on a
checkpoint given with ``keras``. Video is end to end at 640x480: decode, preprocess, infer,
resize back, overlay -- `unetlite video`'s own per-frame code.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UnetliteError, first_line

log = logging.getLogger(__name__)

TF = "tensorflow"
# Report names are <label>_<variant>; the label is the registry name except for onnxruntime CPU
# (its historical name in the README and results.json).
ENGINE_LABELS = {"cpu": "onnxruntime"}


def engine_name(runtime: str, variant: str) -> str:
    """'cpu', 'fp32' -> 'onnxruntime_fp32'; 'cuda', 'int8' -> 'cuda_int8'."""
    return f"{ENGINE_LABELS.get(runtime, runtime)}_{variant}"


FP32, INT8 = engine_name("cpu", "fp32"), engine_name("cpu", "int8")
OV_FP32, OV_INT8, OV_BF16 = (engine_name("openvino", v) for v in ("fp32", "int8", "bf16"))
VIDEO_SIZE = (480, 640)  # (height, width) of the end-to-end video measurement
MIN_VIDEO_FRAMES = 2     # fewer timed frames per round than this is not a frame rate
PAUSE_S = 0.2            # between turns: the previous engine's threads stop spinning
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


class BenchError(UnetliteError):
    """Bad bench input (one-line message naming the file)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to measure; paths left None are skipped (int8: looked for next to the model)."""

    model: Path | None = None            # ONNX fp32 (default: the bundled model)
    int8: Path | None = None             # ONNX int8 (default: <model stem>.int8.onnx when present)
    keras: Path | None = None            # Keras checkpoint (default: rebuilt from the fp32 ONNX model)
    tensorflow: bool = True              # time TensorFlow when it is installed
    providers: tuple[str, ...] | None = None  # registry runtimes to time (None: every one that runs here)
    batch_sizes: tuple[int, ...] = (1, 8)
    rounds: int = 5                      # turns per engine, alternating A B C A B C ...
    runs: int = 40                       # timed batch-1 calls per engine per round
    warmup: int = 5                      # untimed calls at the start of every turn
    threads: int | None = None           # every engine; default: the CPUs this process may use
    spin: bool = True                    # onnxruntime busy-waiting (off helps on a busy machine)
    video: Path | None = None
    video_frames: int = 50               # timed frames per engine per round
    openvino: bool = True                # time OpenVINO when it is installed (--no-openvino)
    bf16: bool = False                   # also time bf16 on the runtimes offering it
    seed: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineSpec:
    """One engine, as its worker process builds it."""

    name: str
    model: str                           # ONNX file; TensorFlow: a Keras checkpoint or the ONNX to rebuild from
    providers: str = "cpu"               # a registry runtime (TensorFlow: unused)
    precision: str = "fp32"
    variant: str = "fp32"                # fp32 | int8 | bf16: which model and precision


def percentiles(seconds: np.ndarray) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


# ---- inside a worker process ---------------------------------------------------------------------

class SkipEngine(Exception):
    """Raised in a worker: this engine cannot be timed here (the bench goes on without it, with a note)."""


def _tensorflow_engine(path: Path, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """A tf.function over the Keras model (a checkpoint, or rebuilt from an ONNX file); threads set
    before TensorFlow makes its pools."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if path.suffix == ".onnx":
        # export/ builds on train/ (Keras): imported only here, in the TensorFlow worker.
        from unetlite.export.keras_from_onnx import RebuildError, rebuild_keras
        try:
            model = rebuild_keras(path, dynamic_size=False)
        except RebuildError as exc:
            raise SkipEngine(f"cannot rebuild a Keras model from {path.name} ({first_line(exc)}); pass --keras")
        source = f"rebuilt from {path.name}"
    else:
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # keras raises many types for bad files
            raise BenchError(f"{path}: not a loadable Keras model ({first_line(exc)})") from None
        source = f"checkpoint {path.name}"
    fn = tf.function(lambda x: model(x, training=False))
    info = {"provider": "TensorFlow " + ("GPU" if tf.config.list_physical_devices("GPU") else "CPU"),
            "keras": source, "precision": "fp32", "threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "input_shape": list(model.input_shape), "versions": {"tensorflow": tf.__version__,
                                                                 "keras": keras.__version__}}
    return (lambda x: fn(x).numpy()[..., 0]), info


def _video_source(path: str) -> Callable[[], np.ndarray]:
    """The next 640x480 BGR frame, rewinding at the end of the file."""
    import cv2

    cap = cv2.VideoCapture(path)

    def next_frame() -> np.ndarray:
        nonlocal cap
        ok, bgr = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(path)
            ok, bgr = cap.read()
            if not ok:
                raise BenchError(f"{path}: cannot decode as a video")
        if bgr.shape[:2] != VIDEO_SIZE:  # counted in the time
            bgr = cv2.resize(bgr, VIDEO_SIZE[::-1], interpolation=cv2.INTER_LINEAR)
        return bgr
    return next_frame


def _turn(call: Callable, sizes: tuple[int, int], order: dict, frame_step: Callable | None) -> dict:
    """One engine's timed turn: batch-1 latency, throughput at larger batches, video frames."""
    rng = np.random.default_rng(order["seed"])
    out: dict = {"throughput": {}}
    for batch in order["batch_sizes"]:
        x = rng.random((batch, *sizes, 3), dtype=np.float32)   # dense convs: time does not depend on values
        x = np.rint(x * 255) / np.float32(255)                   # on the uint8 grid: same for uint8-input models
        x = x.astype(np.float32)
        runs = order["runs"] if batch == 1 else max(3, -(-order["runs"] // batch))
        for _ in range(order["warmup"] if batch == 1 else 1):
            call(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call(x)
            times.append(time.perf_counter() - start)
        if batch == 1:
            out.update(percentiles(np.array(times)), runs=runs)
        else:
            out["throughput"][str(batch)] = batch * runs / float(np.sum(times))
    if frame_step is not None and order["video_frames"]:
        for index in range(order["warmup"]):
            frame_step(index)
        start = time.perf_counter()
        for index in range(order["video_frames"]):
            frame_step(index)
        out["video_fps"] = order["video_frames"] / (time.perf_counter() - start)
    return out


def _worker(conn, spec: EngineSpec, threads: int, spin: bool, video: str | None) -> None:
    """Build one engine, then time it whenever the parent says so (messages over ``conn``)."""
    logging.basicConfig(level=logging.WARNING)
    try:
        if spec.name == TF:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)  # TensorFlow's C++ start-up log; failures come back over the pipe
            call, info = _tensorflow_engine(Path(spec.model), threads)
            sizes = tuple(info.pop("input_shape")[1:3])
            frame_step = None
        else:
            from ..engine.segmenter import Segmenter
            from .frames import FramePipeline, VideoOptions

            seg = Segmenter(spec.model, providers=spec.providers, threads=threads, spin=spin, precision=spec.precision)
            call, sizes = seg.run, seg.contract.input_size
            info = {"provider": seg.provider, "precision": seg.precision, "threads": seg.runner.threads,
                    "input_dtype": seg.input_dtype, "describe": seg.describe()}
            frame_step = None
            if video:
                # spin=False and the default overlay rendering: exactly what `unetlite video` runs
                pipeline = FramePipeline(Segmenter(spec.model, providers=spec.providers, threads=threads, spin=False,
                                                   precision=spec.precision), VideoOptions(fmt="overlay"))
                next_frame = _video_source(video)

                def frame_step(index: int) -> None:
                    pipeline(index, next_frame())
    except SkipEngine as exc:
        conn.send({"skip": str(exc)})
        return
    except Exception as exc:  # reported to the parent as one line
        conn.send({"error": first_line(exc)})
        return
    conn.send({"ready": {**info, "input_size": list(sizes), "pid": os.getpid()}})
    while True:
        order = conn.recv()
        if order is None:
            return
        try:
            if "probe" in order:
                conn.send({"probe": call(order["probe"])})
            else:
                conn.send({"turn": _turn(call, sizes, order, frame_step)})
        except Exception as exc:
            conn.send({"error": first_line(exc)})
            return


# ---- the parent --------------------------------------------------------------------------------

def _find_int8(model: Path) -> Path | None:
    from ..engine.segmenter import int8_twin
    candidate = int8_twin(model)
    return candidate if candidate.is_file() and candidate != model else None


def tensorflow_available() -> bool:
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ValueError:  # sys.modules["tensorflow"] = None: made unimportable
        return False


def _runnable(name: str, facts) -> str | None:
    """None when the registered runtime ``name`` can run here, else why not (the registry's own words)."""
    from ..engine import runtimes

    try:
        runtimes.choose(name, facts, runtimes.names())
    except runtimes.BackendError as exc:
        return first_line(exc)
    return None


def engine_specs(cfg: BenchConfig, notes: list[str]) -> list[EngineSpec]:
    """The engines that can run here, in timing order (TensorFlow, then the registry's runtimes in
    registry order, each fp32, int8, bf16); notes say why others are skipped. A runtime named in
    ``cfg.providers`` that cannot run here is an error, not a note."""
    from ..engine import runtimes
    from ..engine.segmenter import default_model_path

    model = Path(cfg.model) if cfg.model else default_model_path()
    if not model.is_file():
        raise BenchError(f"{model}: model file not found")
    int8 = Path(cfg.int8) if cfg.int8 else _find_int8(model)
    if int8 is not None and not int8.is_file():
        raise BenchError(f"{int8}: int8 model file not found")
    if cfg.int8 is None and int8 is None:
        notes.append(f"int8 skipped: no --int8 and no {model.stem}.int8.onnx next to {model}")
    specs = []
    if cfg.keras is not None and not Path(cfg.keras).is_file():
        raise BenchError(f"{cfg.keras}: Keras checkpoint not found")
    if not cfg.tensorflow:
        notes.append("TensorFlow skipped: --no-tensorflow")
    elif not tensorflow_available():
        notes.append("TensorFlow skipped: not installed; pip install '.[train]'")
    else:  # no checkpoint: the worker rebuilds the Keras model from the fp32 ONNX file
        specs.append(EngineSpec(TF, str(cfg.keras if cfg.keras is not None else model)))
    unknown = [name for name in cfg.providers or () if name not in runtimes.REGISTRY]
    if unknown:
        raise BenchError(f"--providers {','.join(unknown)}: expected registered runtimes "
                         f"({', '.join(runtimes.names())})")
    facts = runtimes.machine_facts()
    bf16_offered = False
    for name in cfg.providers or runtimes.names():
        runtime = runtimes.REGISTRY[name]
        if name == "openvino" and not cfg.openvino and not cfg.providers:
            notes.append("openvino skipped: --no-openvino")
            continue
        problem = _runnable(name, facts)
        if problem and cfg.providers:
            raise BenchError(problem)
        if problem:
            notes.append(f"{name} skipped: {problem}")
            continue
        specs.append(EngineSpec(engine_name(name, "fp32"), str(model), name))
        if int8:
            specs.append(EngineSpec(engine_name(name, "int8"), str(int8), name, variant="int8"))
        if cfg.bf16 and "bf16" in runtime.precisions:
            bf16_offered = True
            specs.append(EngineSpec(engine_name(name, "bf16"), str(model), name, "bf16", "bf16"))
    if cfg.bf16 and not bf16_offered:
        notes.append("bf16 skipped: no runtime timed here offers it")
    if not any(spec.name != TF for spec in specs):
        raise BenchError("no ONNX runtime to time (see the notes)" if not notes else
                         f"no ONNX runtime to time: {notes[-1]}")
    return specs


def reference(specs: list[EngineSpec]) -> str:
    """The engine everything is compared with: the first ONNX fp32 one."""
    return next(s.name for s in specs if s.name != TF and s.variant == "fp32")


def ratio_pairs(specs: list[EngineSpec]) -> dict[str, tuple[str, str]]:
    """ratio name -> (numerator, denominator), both p50. The reference is the first ONNX fp32
    engine (onnxruntime CPU when timed): every other fp32 and int8 engine against it, bf16 against
    its own runtime's fp32, and the reference against TensorFlow."""
    onnx_specs = [s for s in specs if s.name != TF]
    ref = reference(specs)
    pairs = []
    if any(s.name == TF for s in specs):
        pairs.append((ref, TF))
    for spec in onnx_specs:
        if spec.name == ref:
            continue
        if spec.variant == "bf16":
            pairs.append((spec.name, engine_name(spec.providers, "fp32")))
        else:
            pairs.append((spec.name, ref))
    return {f"{a}_vs_{b}": (a, b) for a, b in pairs}


class _Workers:
    """One spawned process per engine; the parent talks to one at a time."""

    def __init__(self, specs: list[EngineSpec], threads: int, spin: bool, video: str | None):
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no shared thread pools
        self.conns, self.procs, self.info = {}, {}, {}
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, spec, threads, spin, video), daemon=True)
            proc.start()
            child.close()
            self.conns[spec.name], self.procs[spec.name] = parent, proc

    def ask(self, name: str, order) -> dict:
        """Send ``order`` (None: just wait for the worker's first message) and return the reply."""
        conn = self.conns[name]
        try:
            if order is not None:
                conn.send(order)
            reply = conn.recv()
        except (EOFError, BrokenPipeError):
            reply = {"error": f"worker exited with code {self.procs[name].exitcode}"}
        if "error" in reply:
            raise BenchError(f"{name}: {reply['error']}")
        return reply  # {"skip": why} only as a first message: the engine cannot be timed here

    def close(self) -> None:
        for name, conn in self.conns.items():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def _median(values: list[float]) -> float:
    return float(np.median(values))


def _summarise(turns: dict[str, list[dict]], ready: dict[str, dict], specs: list[EngineSpec]) -> dict:
    engines = {}
    for spec in specs:
        rounds = turns[spec.name]
        e = {k: _median([t[k] for t in rounds]) for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")}
        e["rounds"] = [{k: t[k] for k in ("p50_ms", "p95_ms", "p99_ms")} for t in rounds]
        e["runs"] = rounds[0]["runs"]
        e["throughput"] = {b: _median([t["throughput"][b] for t in rounds]) for b in rounds[0]["throughput"]}
        if "video_fps" in rounds[0]:
            e["video_fps"] = _median([t["video_fps"] for t in rounds])
        info = dict(ready[spec.name])
        info.pop("versions", None)
        e.update(info, model=spec.model)
        engines[spec.name] = e
    return engines


def _ratios(engines: dict, turns: dict, pairs: dict[str, tuple[str, str]]) -> tuple[dict, dict]:
    ratios, spread = {}, {}
    for name, (a, b) in pairs.items():
        if a in engines and b in engines:
            ratios[name] = engines[a]["p50_ms"] / engines[b]["p50_ms"]
            per_round = [x["p50_ms"] / y["p50_ms"] for x, y in zip(turns[a], turns[b])]
            spread[name] = {"rounds": per_round, "min": min(per_round), "max": max(per_round)}
    return ratios, spread


def describe_machine() -> dict:
    """CPU model, cores, the ISA flags that decide int8/bf16 speed, OS."""
    from ..engine.runtimes import available_cpus

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), "usable_cpus": available_cpus(),
            "isa": [f for f in CPU_FLAGS if f in flags], "platform": platform.platform()}


def versions(extra: dict) -> dict[str, str]:
    import cv2
    import onnxruntime as ort
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__,
           "opencv": cv2.__version__}
    for package in ("openvino", "unetlite"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    out.update(extra)
    return out


def _probe_video(path: Path) -> str:
    """Fail before any timing when the video cannot be decoded; returns its size."""
    import cv2
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # our one-line error, not FFmpeg's log
    cap = cv2.VideoCapture(str(path))
    try:
        count = 0
        while count < MIN_VIDEO_FRAMES and cap.isOpened() and cap.read()[0]:
            count += 1
        if count < MIN_VIDEO_FRAMES:  # OpenCV also "opens" a still image as a one-frame video
            raise BenchError(f"{path}: cannot open or decode as a video (need at least {MIN_VIDEO_FRAMES} frames)")
        return f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
    finally:
        cap.release()


def benchmark(cfg: BenchConfig) -> dict:
    """Run every measurement and return the JSON-ready report."""
    from ..engine.runtimes import available_cpus

    if 1 not in cfg.batch_sizes:
        raise BenchError("--batch-sizes must include 1 (latency percentiles)")
    threads = cfg.threads or available_cpus()
    notes = list(cfg.notes)
    specs = engine_specs(cfg, notes)
    source_size = _probe_video(Path(cfg.video)) if cfg.video is not None else None
    if cfg.video is None:
        notes.append("video skipped: pass --video FILE (decoded and timed end to end at 640x480)")
    workers = _Workers(specs, threads, cfg.spin, str(cfg.video) if cfg.video else None)
    try:
        ready = {}
        for spec in list(specs):
            reply = workers.ask(spec.name, None)
            if "skip" in reply:
                notes.append(f"{spec.name} skipped: {reply['skip']}")
                specs.remove(spec)
            else:
                ready[spec.name] = reply["ready"]
        pairs = ratio_pairs(specs)
        ref = reference(specs)
        size = tuple(ready[ref]["input_size"])
        for spec in specs:
            if tuple(ready[spec.name]["input_size"]) != size:
                raise BenchError(f"{spec.model}: input {ready[spec.name]['input_size']} differs from the fp32 "
                                 f"model's {list(size)}")
        probe = (np.random.default_rng(cfg.seed).integers(0, 256, (1, *size, 3)) / np.float32(255)).astype(np.float32)
        outputs = {spec.name: workers.ask(spec.name, {"probe": probe})["probe"] for spec in specs}
        parity = {f"{name}_vs_{ref}_max_abs": float(np.abs(out - outputs[ref]).max())
                  for name, out in outputs.items() if name != ref}
        if parity.get(f"{TF}_vs_{ref}_max_abs", 0.0) > 1e-3:
            notes.append(f"warning: the Keras model ({ready[TF]['keras']}) and the ONNX model disagree (max |diff| "
                         f"{parity[f'{TF}_vs_{ref}_max_abs']:.3g}): are they the same network?")
        order = {"batch_sizes": sorted(set(cfg.batch_sizes)), "runs": cfg.runs, "warmup": cfg.warmup,
                 "video_frames": cfg.video_frames if cfg.video else 0, "seed": cfg.seed}
        turns: dict[str, list[dict]] = {spec.name: [] for spec in specs}
        for round_ in range(cfg.rounds):
            for spec in specs:  # A B C A B C ...: every engine alone while it is timed
                log.info("round %d/%d: %s", round_ + 1, cfg.rounds, spec.name)
                time.sleep(PAUSE_S)
                turns[spec.name].append(workers.ask(spec.name, order)["turn"])
    finally:
        workers.close()
    engines = _summarise(turns, ready, specs)
    ratios, spread = _ratios(engines, turns, pairs)
    video_fps = {name: e["video_fps"] for name, e in engines.items() if "video_fps" in e}
    extra_versions = {k: v for r in ready.values() for k, v in r.get("versions", {}).items()}
    return {
        "engines": engines,
        "ratios": ratios,
        "ratio_rounds": spread,
        "video_fps": video_fps or None,
        "video": {"source": str(cfg.video), "source_size": source_size, "size": f"{VIDEO_SIZE[1]}x{VIDEO_SIZE[0]}",
                  "frames_per_round": cfg.video_frames} if cfg.video else None,
        "parity": parity,
        "reference": ref,
        "threads": threads,
        "spin": cfg.spin,
        "input_size": list(size),
        "batch_sizes": sorted(set(cfg.batch_sizes)),
        "rounds": cfg.rounds,
        "runs": cfg.runs,
        "warmup": cfg.warmup,
        "method": "each engine in its own process, engines take turns over rounds (A B C A B C ...); "
                  "percentiles and fps are medians over rounds",
        "machine": describe_machine(),
        "versions": versions(extra_versions),
        "notes": notes,
    }


def format_report(report: dict) -> str:
    """A short table for people."""
    sizes = [s for s in report["batch_sizes"] if s != 1]
    video = report["video_fps"] or {}
    head = f"{'engine':<17}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}" + "".join(f"{f'img/s@{s}':>11}" for s in sizes)
    head += f"{'video fps':>11}" if video else ""
    lines = [head]
    for name, e in report["engines"].items():
        row = f"{name:<17}" + "".join(f"{e[k]:>9.2f}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        row += "".join(f"{e['throughput'].get(str(s), float('nan')):>11.1f}" for s in sizes)
        if video:
            row += f"{video[name]:>11.1f}" if name in video else f"{'-':>11}"
        lines.append(row)
    for name, value in report["ratios"].items():
        r = report["ratio_rounds"][name]
        lines.append(f"{name}: {value:.2f}x p50 (rounds {r['min']:.2f}-{r['max']:.2f})")
    h, w = report["input_size"]
    m = report["machine"]
    lines.append(f"{report['rounds']} rounds x {report['runs']} runs, each engine in its own process, "
                 f"{report['threads']} threads{'' if report['spin'] else ' (no spin)'}, input {w}x{h}; "
                 f"{m['cpu']} ({m['usable_cpus']} CPUs usable{', ' + ' '.join(m['isa']) if m['isa'] else ''})")
    return "\n".join(lines)

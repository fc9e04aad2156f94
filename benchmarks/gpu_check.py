"""The measuring half of benchmarks/gpu_check.sh: one runtime (CUDA) against onnxruntime CPU.

    python benchmarks/gpu_check.py --providers cuda --out benchmarks/gpu.json [--out $OUT/gpu.json]

1. Library: the bundled model (and its int8 twin) on the fixture pets with ``--providers`` and
   with onnxruntime CPU: max |prob diff|, pooled mask IoU and the worst image's; what really ran
   (``Segmenter.describe()``); batch-1 p50 and images/s at larger batches for both.
2. The commands as users run them, each in a subprocess with ``--providers``: ``segment`` (its
   masks compared with a CPU run's), ``video`` (the fixture clip) and ``bench`` (cpu and the
   runtime, turns alternating).

Writes one JSON (to every ``--out``) even when a check fails, then exits 1 naming each failure;
``--providers cpu`` runs the whole script against itself on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "tests" / "data" / "pets" / "images"
VIDEO = REPO / "tests" / "data" / "video" / "vtest_people_short_384x288.mp4"
MODEL = REPO / "infer" / "models" / "unet_pets.onnx"
PROVIDER_OF = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "openvino": "OpenVINO"}
MAX_PROB_DIFF = {"fp32": 1e-3, "int8": 0.1}    # the runtime vs onnxruntime CPU on the same model file
MIN_MASK_IOU = {"fp32": 0.999, "int8": 0.98}
DESCRIBE = re.compile(r"unetlite\.infer\.engine\.segmenter: (.+?) \((?:asked for|NVIDIA|no GPU|a GPU)")
SEGMENT = re.compile(r"(\d+) done, .* in ([\d.]+) s \(([\d.]+) images/s\) on (\S+)")
VIDEO_DONE = re.compile(r"(\d+) segmented, (\d+) dropped, ([\d.]+) fps mean")


class Failures(list):
    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.append(what)
        return ok


def pooled_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def machine() -> dict:
    import onnxruntime as ort

    out = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "onnxruntime": ort.__version__, "onnxruntime_providers": ort.get_available_providers()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        out["gpus"] = [line.strip() for line in smi.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        out["gpus"] = []
    return out


def timed(call, batch: np.ndarray, runs: int, budget_s: float) -> list[float]:
    call(batch)  # warm-up: CUDA kernels, cuDNN algorithm search
    call(batch)
    times, start = [], time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return times


def library(model: Path, providers: str, images: list, threads: int, runs: int, failures: Failures) -> dict:
    """Parity and speed of one model file: the runtime under test vs onnxruntime CPU."""
    from unetlite.infer.engine.segmenter import Segmenter

    variant = "int8" if ".int8." in model.name else "fp32"
    ref = Segmenter(model, providers="cpu", threads=threads)
    seg = Segmenter(model, providers=providers, threads=threads)
    out: dict = {"model": model.name, "describe": seg.describe(), "cpu_describe": ref.describe(),
                 "provider": seg.provider}
    want = PROVIDER_OF.get(providers)
    failures.check(want is None or seg.provider == want, f"{variant}: asked for {providers}, ran {seg.provider}")
    batch = np.stack([ref.prepare(img) for img in images])
    a, b = ref.run(batch), seg.run(batch)
    threshold = seg.contract.threshold
    per_image = [pooled_iou(x >= threshold, y >= threshold) for x, y in zip(a, b)]
    out["parity"] = {"images": len(images), "max_abs_prob_diff": float(np.abs(a - b).max()),
                     "mean_abs_prob_diff": float(np.abs(a - b).mean()),
                     "mask_iou": pooled_iou(a >= threshold, b >= threshold), "worst_image_mask_iou": min(per_image)}
    p = out["parity"]
    failures.check(p["max_abs_prob_diff"] <= MAX_PROB_DIFF[variant],
                   f"{variant}: max |prob diff| {p['max_abs_prob_diff']:.3g} > {MAX_PROB_DIFF[variant]}")
    failures.check(p["mask_iou"] >= MIN_MASK_IOU[variant],
                   f"{variant}: mask IoU {p['mask_iou']:.5f} < {MIN_MASK_IOU[variant]}")
    for name, s in (("runtime", seg), ("cpu", ref)):
        one = timed(s.run, batch[:1], runs, budget_s=20)
        speed = {"batch1_p50_ms": float(np.percentile(one, 50) * 1e3),
                 "batch1_p95_ms": float(np.percentile(one, 95) * 1e3), "batch1_runs": len(one), "images_per_s": {}}
        for size in (8, 32):
            big = np.concatenate([batch] * -(-size // len(batch)))[:size]
            t = timed(s.run, big, max(3, runs // size), budget_s=20)
            speed["images_per_s"][str(size)] = float(size * len(t) / sum(t))
        out[f"{name}_speed"] = speed
    return out


def command(argv: list[str], timeout: int) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "unetlite.infer.cli", "-v", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def describe_line(log: str) -> str | None:
    match = DESCRIBE.search(log)
    return match.group(1) if match else None


def commands(providers: str, model: Path, work: Path, failures: Failures, quick: bool) -> dict:
    """segment, video and bench as a user runs them, with --providers."""
    import cv2

    out: dict = {}
    masks = {}
    for prov in dict.fromkeys([providers, "cpu"]):
        folder = work / f"segment_{prov}"
        rc, log, wall = command(["segment", str(IMAGES), "-o", str(folder), "--model", str(model),
                                 "--providers", prov, "--no-progress"], timeout=240)
        match = SEGMENT.search(log)
        entry = {"rc": rc, "wall_s": wall, "describe": describe_line(log),
                 "images_per_s": float(match.group(3)) if match else None, "ran_on": match.group(4) if match else None}
        if failures.check(rc == 0 and match is not None, f"segment --providers {prov}: rc {rc}: {log[-400:]}"):
            masks[prov] = {p.name: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in sorted(folder.glob("*.png"))}
        out[f"segment_{prov}"] = entry
    if providers != "cpu" and len(masks) == 2 and failures.check(masks["cpu"].keys() == masks[providers].keys(),
                                                                 "segment: different outputs from cpu and the runtime"):
        names = sorted(masks["cpu"])
        a = np.stack([masks["cpu"][n] for n in names]) if names else np.zeros(0, bool)
        b = np.stack([masks[providers][n] for n in names]) if names else np.zeros(0, bool)
        iou = pooled_iou(a, b)
        out[f"segment_{providers}"]["mask_iou_vs_cpu"] = iou
        failures.check(iou >= MIN_MASK_IOU["fp32"], f"segment: written masks IoU vs cpu {iou:.5f}")

    rc, log, wall = command(["video", str(VIDEO), "-o", str(work / "video.mp4"), "--model", str(model),
                             "--providers", providers], timeout=240)
    match = VIDEO_DONE.search(log)
    out["video"] = {"rc": rc, "wall_s": wall, "describe": describe_line(log), "source": VIDEO.name,
                    "frames": int(match.group(1)) if match else None, "dropped": int(match.group(2)) if match else None,
                    "fps_mean": float(match.group(3)) if match else None}
    failures.check(rc == 0 and match is not None, f"video --providers {providers}: rc {rc}: {log[-400:]}")

    rounds, runs = ("1", "5") if quick else ("3", "30")
    bench_providers = ",".join(dict.fromkeys(["cpu", providers]))
    rc, log, wall = command(["bench", "--model", str(model), "--providers", bench_providers, "--no-tensorflow",
                             "--json", "--rounds", rounds, "--runs", runs, "--warmup", "3", "--batch-sizes", "1,8",
                             "--video", str(VIDEO), "--video-frames", "10" if quick else "50"], timeout=300)
    entry: dict = {"rc": rc, "wall_s": wall, "providers": bench_providers}
    if failures.check(rc == 0, f"bench --providers {bench_providers}: rc {rc}: {log[-400:]}"):
        report = json.loads(log[log.index("{"):log.rindex("}") + 1])
        entry.update({name: {k: e.get(k) for k in ("p50_ms", "p95_ms", "throughput", "video_fps", "provider",
                                                   "describe")}
                      for name, e in report["engines"].items()},
                     ratios=report["ratios"], parity=report["parity"], notes=report["notes"])
    out["bench"] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--providers", default="cuda", help="the registered runtime to check against onnxruntime CPU")
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--out", type=Path, action="append", required=True, help="JSON to write (repeatable)")
    p.add_argument("--runs", type=int, default=100, help="timed batch-1 calls (capped at 20 s)")
    p.add_argument("--quick", action="store_true", help="fewer bench rounds (the CPU self-test)")
    args = p.parse_args(argv)

    from unetlite.infer.engine.runtimes import available_cpus
    from unetlite.infer.engine.segmenter import int8_twin
    from unetlite.infer.io.images import read_image

    started = time.time()
    failures = Failures()
    report: dict = {"check": "benchmarks/gpu_check.py", "providers": args.providers,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    images = [read_image(path) for path in sorted(IMAGES.glob("*.jpg"))]
    threads = available_cpus()
    try:
        report["fp32"] = library(args.model, args.providers, images, threads, args.runs, failures)
        twin = int8_twin(args.model)
        if twin.is_file():
            report["int8"] = library(twin, args.providers, images, threads, args.runs, failures)
        with tempfile.TemporaryDirectory() as tmp:
            report["commands"] = commands(args.providers, args.model, Path(tmp), failures, args.quick)
    except Exception as exc:  # a crash is a result too: written, then the exit code says so
        failures.append(f"{type(exc).__name__}: {exc}")
    report["seconds"] = round(time.time() - started, 1)
    report["failures"] = list(failures)
    report["ok"] = not failures
    text = json.dumps(report, indent=2)
    for path in args.out:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"wrote {path}")
    fp32 = report.get("fp32", {})
    if fp32:
        s, par = fp32["runtime_speed"], fp32["parity"]
        print(f"{fp32['describe']}\n  vs cpu: max |prob diff| {par['max_abs_prob_diff']:.2e}, mask IoU "
              f"{par['mask_iou']:.6f}; batch-1 p50 {s['batch1_p50_ms']:.2f} ms "
              f"(cpu {fp32['cpu_speed']['batch1_p50_ms']:.2f}); images/s at 32: {s['images_per_s']['32']:.0f} "
              f"(cpu {fp32['cpu_speed']['images_per_s']['32']:.1f})")
    for failure in failures:
        print(f"gpu_check FAILED: {failure}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

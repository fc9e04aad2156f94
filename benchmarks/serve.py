"""`unetlite serve` under load, against `unetlite segment` on the same images. JSON out:

    python benchmarks/serve.py --out benchmarks/serve.json

1. `unetlite segment` over the images (subprocess, --overwrite, median of --segment-runs): images/s.
2. A real server (`unetlite serve --port 0`, subprocess) on loopback; warm-up; then memory:
   --sequential requests one by one and --burst requests at concurrency 16, with the server's
   RSS (/proc) after warm-up and after each phase.
3. For each --concurrency level, as many client threads (one keep-alive httpx client each)
   send the images round-robin for --seconds: requests/s, p50/p99 latency, errors, and the
   mean inference batch the server formed (X-Unetlite-Batch-Size).
4. The same at concurrency 4 over the Open Inference Protocol (v2, tritonclient's
   InferenceServerClient, the image as encoded BYTES), then --v2-requests more at concurrency 4
   with the server's RSS before and after (skipped without tritonclient[http]).
Targets (issue 11): at concurrency 4, >= 80% of segment's images/s; RSS growth < 50 MB (over /v1,
and over v2).
The load generator runs on the same machine as the server and takes CPU from it.
"""
from __future__ import annotations

import argparse
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _report import FIXTURE_IMAGES, PETS_IMAGES, emit  # benchmarks/ is on sys.path when run as a script

CLI = [sys.executable, "-m", "unetlite.infer.cli"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def segment_rate(files: list[Path], engine: list[str], runs: int) -> list[float]:
    """`unetlite segment`'s own images/s figure (its summary line), once per run."""
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for f in files:
            shutil.copy(f, src / f.name)
        for _ in range(runs):
            done = subprocess.run([*CLI, "segment", str(src), "-o", str(Path(tmp) / "out"), "--overwrite",
                                   "--no-progress", *engine], capture_output=True, text=True, check=True)
            rates.append(float(re.search(r"\(([\d.]+) images/s\)", done.stdout).group(1)))
    return rates


def start_server(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        match = re.search(r"listening on (http://\S+?:\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # drain the log
            print(line.strip(), file=sys.stderr)
            return proc, match.group(1)
    raise SystemExit(f"server did not start (exit {proc.wait()})")


def run_clients(client, concurrency: int) -> float:
    """Run ``client`` in ``concurrency`` threads at once; the wall-clock seconds until all are done."""
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def load(url: str, images: list[bytes], concurrency: int, seconds: float | None = None,
         requests: int | None = None) -> dict:
    """``concurrency`` client threads until ``seconds`` pass or ``requests`` are sent in all."""
    import httpx

    latencies: list[float] = []
    batches: list[int] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests if requests is not None else 1 << 62))
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")

    def client() -> None:
        with httpx.Client(timeout=120) as session:
            while time.perf_counter() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                started = time.perf_counter()
                try:
                    r = session.post(f"{url}/v1/segment", content=images[n % len(images)])
                    ok, key = r.status_code == 200 and len(r.content) > 0, str(r.status_code)
                except httpx.HTTPError as exc:
                    ok, key = False, type(exc).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    if ok:
                        latencies.append(elapsed * 1000)
                        batches.append(int(r.headers["x-unetlite-batch-size"]))
                    else:
                        errors[key] = errors.get(key, 0) + 1

    wall = run_clients(client, concurrency)
    result = {"concurrency": concurrency, "seconds": round(wall, 2), "ok": len(latencies), "errors": errors,
              "requests_per_s": len(latencies) / wall if wall > 0 else 0.0}
    if latencies:
        result.update(p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
                      mean_ms=statistics.fmean(latencies), mean_batch=statistics.fmean(batches))
    return result


def load_v2(url: str, images: list[bytes], concurrency: int, seconds: float | None = None,
            requests: int | None = None) -> dict:
    """``load`` over v2: one tritonclient InferenceServerClient per thread, image_bytes in, mask out."""
    import numpy as np
    import tritonclient.http as triton

    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests if requests is not None else 1 << 62))
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")
    wanted = [triton.InferRequestedOutput("mask")]

    def client() -> None:
        session = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=120.0)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                tensor = triton.InferInput("image_bytes", [1], "BYTES")
                tensor.set_data_from_numpy(np.array([images[n % len(images)]], dtype=np.object_))
                started = time.perf_counter()
                try:
                    ok = session.infer("unetlite", [tensor], outputs=wanted).as_numpy("mask").size > 0
                    key = "200"
                except Exception as exc:  # tritonclient raises its own exception types
                    ok, key = False, str(getattr(exc, "status", lambda: None)() or type(exc).__name__)
                elapsed = time.perf_counter() - started
                with lock:
                    if ok:
                        latencies.append(elapsed * 1000)
                    else:
                        errors[key] = errors.get(key, 0) + 1
        finally:
            session.close()

    wall = run_clients(client, concurrency)
    result = {"protocol": "v2", "concurrency": concurrency, "seconds": round(wall, 2), "ok": len(latencies),
              "errors": errors, "requests_per_s": len(latencies) / wall if wall > 0 else 0.0}
    if latencies:
        result.update(p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
                      mean_ms=statistics.fmean(latencies))
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=PETS_IMAGES if PETS_IMAGES.is_dir() else FIXTURE_IMAGES,
                   help="folder of JPEGs (default: the shared Oxford pets, else the test fixtures)")
    p.add_argument("--count", type=int, default=128, help="images taken from the folder (default: 128)")
    p.add_argument("--seconds", type=float, default=30.0, help="per concurrency level (default: 30)")
    p.add_argument("--concurrency", default="1,4,16", help="client threads per level (default: 1,4,16)")
    p.add_argument("--sequential", type=int, default=2000, help="memory phase: one-by-one requests (default: 2000)")
    p.add_argument("--burst", type=int, default=500, help="memory phase: requests at concurrency 16 (default: 500)")
    p.add_argument("--v2-requests", type=int, default=500,
                   help="v2 memory phase: requests at concurrency 4 (default: 500)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--segment-runs", type=int, default=3)
    p.add_argument("--providers", default="cpu")
    p.add_argument("--model", type=Path, help="ONNX model (default: the bundled one)")
    p.add_argument("--serve-args", default="", help="extra `unetlite serve` arguments, e.g. '--max-concurrency 8'")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()

    files = sorted(f for f in args.images.iterdir() if f.suffix.lower() in (".jpg", ".jpeg"))[: args.count]
    if not files:
        raise SystemExit(f"no JPEGs in {args.images}")
    images = [f.read_bytes() for f in files]
    engine = ["--providers", args.providers] + (["--model", str(args.model)] if args.model else [])
    levels = [int(c) for c in args.concurrency.split(",")]

    segment = segment_rate(files, engine, args.segment_runs)
    print(f"segment: {statistics.median(segment):.1f} images/s", file=sys.stderr)

    proc, url = start_server([*engine, "--max-queue", str(max(levels + [16]) * 2), *args.serve_args.split()])
    try:
        load(url, images, 1, requests=args.warmup)
        load(url, images, 16, requests=args.warmup)
        memory = {"after_warmup_mb": rss_mb(proc.pid)}
        memory["sequential"] = load(url, images, 1, requests=args.sequential)
        memory["after_sequential_mb"] = rss_mb(proc.pid)
        memory["concurrent_16"] = load(url, images, 16, requests=args.burst)
        memory["after_concurrent_mb"] = rss_mb(proc.pid)
        if memory["after_warmup_mb"] is not None:
            memory["growth_mb"] = memory["after_concurrent_mb"] - memory["after_warmup_mb"]
        levels_out = []
        for c in levels:
            levels_out.append(load(url, images, c, seconds=args.seconds))
            r = levels_out[-1]
            print(f"concurrency {c}: {r['requests_per_s']:.1f} req/s, p50 {r.get('p50_ms', 0):.1f} ms, "
                  f"p99 {r.get('p99_ms', 0):.1f} ms, errors {r['errors']}", file=sys.stderr)
        v2 = None
        try:
            import tritonclient.http  # noqa: F401  the [dev] extra
        except ImportError:
            print("v2: skipped (tritonclient[http] is not installed)", file=sys.stderr)
        else:
            load_v2(url, images, 4, requests=args.warmup)
            v2 = {"before_mb": rss_mb(proc.pid), "concurrent_4": load_v2(url, images, 4, requests=args.v2_requests),
                  "after_mb": rss_mb(proc.pid)}
            if v2["before_mb"] is not None:
                v2["growth_mb"] = v2["after_mb"] - v2["before_mb"]
            levels_out.append(load_v2(url, images, 4, seconds=args.seconds))
            r = levels_out[-1]
            print(f"v2, concurrency 4: {r['requests_per_s']:.1f} req/s, p50 {r.get('p50_ms', 0):.1f} ms, "
                  f"p99 {r.get('p99_ms', 0):.1f} ms, errors {r['errors']}, RSS growth "
                  f"{v2.get('growth_mb', float('nan')):.1f} MB", file=sys.stderr)
        memory["v2"] = v2
        memory["after_all_mb"] = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)

    import onnxruntime

    from unetlite.infer.engine.runtimes import available_cpus
    result = {
        "images": len(images), "image_folder": str(args.images), "providers": args.providers,
        "cpus": available_cpus(), "platform": platform.platform(), "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "segment_images_per_s": statistics.median(segment), "segment_runs": segment,
        "levels": levels_out, "memory": memory,
    }
    at4 = next((r for r in levels_out if r["concurrency"] == 4 and r.get("protocol", "v1") == "v1"), None)
    if at4:
        result["c4_vs_segment"] = at4["requests_per_s"] / result["segment_images_per_s"]
    result["targets"] = {
        "c4_vs_segment": {"want": ">= 0.80", "met": result.get("c4_vs_segment", 0) >= 0.8},
        "rss_growth_mb": {"want": "< 50", "met": memory.get("growth_mb") is not None and memory["growth_mb"] < 50},
    }
    v2_at4 = next((r for r in levels_out if r.get("protocol") == "v2"), None)
    if v2_at4 and memory.get("v2"):
        result["v2_c4_vs_segment"] = v2_at4["requests_per_s"] / result["segment_images_per_s"]
        growth = memory["v2"].get("growth_mb")
        result["targets"]["v2_rss_growth_mb"] = {"want": "< 50", "met": growth is not None and growth < 50}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

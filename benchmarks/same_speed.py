"""Two ONNX models, same speed? Batch-1 p50 of each, in its own process, alternating rounds (A B A B ...).

    python benchmarks/same_speed.py runs/v2.onnx infer/models/unet_pets.onnx --out benchmarks/same_speed.json

For a retrained model of the same architecture the ratio should be ~1.0: it checks that nothing about the
graph (size, ops, input type) changed with the weights.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from _report import emit  # benchmarks/ is on sys.path when run as a script

CHILD = """
import json, sys, time
import numpy as np
from unetlite.infer import Segmenter
seg = Segmenter(sys.argv[1], providers=sys.argv[2], threads=int(sys.argv[3]))
x = np.random.default_rng(0).integers(0, 256, (1, *seg.contract.input_size, 3), dtype=np.uint8)
for _ in range(5):
    seg.run(x)
times = []
for _ in range(int(sys.argv[4])):
    t = time.perf_counter(); seg.run(x); times.append((time.perf_counter() - t) * 1000)
times.sort()
print(json.dumps({"p50_ms": times[len(times) // 2], "runs": seg.describe()}))
"""


def machine() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "no AVX2"
    return f"{names[0] if names else platform.machine()} ({isa}), {len(names) or '?'} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs=2)
    parser.add_argument("--providers", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    p50 = {str(m): [] for m in args.models}
    runs = {}
    for _ in range(args.rounds):
        for model in args.models:
            out = subprocess.run([sys.executable, "-c", CHILD, str(model), args.providers, str(args.threads),
                                  str(args.calls)], check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            p50[str(model)].append(row["p50_ms"])
            runs[str(model)] = row["runs"]
    a, b = (str(m) for m in args.models)
    ratios = [y / x for x, y in zip(p50[a], p50[b])]
    emit({"machine": f"{machine()}, {args.threads} threads",
          "models": {m: {"p50_ms_median": round(statistics.median(v), 2), "p50_ms_rounds": [round(t, 2) for t in v],
                         "runs": runs[m]} for m, v in p50.items()},
          "ratio_second_vs_first": round(statistics.median(ratios), 3),
          "ratio_rounds": [round(r, 3) for r in ratios]}, args.out)


if __name__ == "__main__":
    main()

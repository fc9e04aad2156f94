"""Is `unetlite segment` close to pure inference speed? One command, JSON out:

    python benchmarks/segment_throughput.py --out benchmarks/segment_throughput.json

Times, alternately, (a) the whole segment pipeline (decode, resize, infer, resize back,
threshold, PNG encode, atomic write) over a folder of JPEGs and (b) pure inference
(`Segmenter.run`) on the same images already decoded and prepared, with the same
batch size and the same session. Target: (a) within 15% of (b).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _report import PETS_IMAGES, emit  # benchmarks/ is on sys.path when run as a script
from unetlite.infer.io.images import read_image
from unetlite.infer.pipeline.naming import collect_jobs
from unetlite.infer.pipeline.items import SegmentSettings
from unetlite.infer.pipeline.batch import segment_jobs
from unetlite.infer.engine.segmenter import Segmenter


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=PETS_IMAGES, help="folder of JPEGs")
    p.add_argument("--model", type=Path, help="ONNX model (default: the bundled one)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    segmenter = Segmenter(args.model, providers="cpu", spin=False)  # as `unetlite segment` runs it
    with tempfile.TemporaryDirectory() as tmp:
        jobs = collect_jobs([str(args.images)], Path(tmp), "mask").jobs
        prepared = np.stack([segmenter.prepare(read_image(j.source)) for j in jobs])
        settings = SegmentSettings("mask", args.batch_size)
        segmenter.run(prepared[: args.batch_size])  # warm-up
        pipeline, pure = [], []
        for _ in range(args.repeats):
            summary = segment_jobs(segmenter, jobs, settings, progress=False)
            assert summary.done == len(jobs) and not summary.failed, summary.line()
            pipeline.append(summary.images_per_second)
            start = time.perf_counter()
            for i in range(0, len(prepared), args.batch_size):
                segmenter.run(prepared[i:i + args.batch_size])
            pure.append(len(prepared) / (time.perf_counter() - start))
    result = {"images": len(jobs), "batch_size": args.batch_size, "provider": segmenter.provider,
              "segment_images_per_s": statistics.median(pipeline),
              "pure_inference_images_per_s": statistics.median(pure),
              "runs": {"segment": pipeline, "pure_inference": pure}}
    result["segment_vs_pure"] = result["segment_images_per_s"] / result["pure_inference_images_per_s"]
    result["target"] = {"want": ">= 0.85", "met": result["segment_vs_pure"] >= 0.85}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

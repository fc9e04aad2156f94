"""Images/s of `segment --ray` (local runtime, 2 workers) against plain `segment`. JSON out:

    python benchmarks/ray_segment.py --out benchmarks/ray_segment.json

Both write the same masks (decode, resize, infer, resize back, threshold, PNG encode, write)
for the same folder into a fresh temp folder each run, alternating plain / Ray for
``--repeats`` rounds. The Ray runtime is started once (its start-up is reported apart, as
``ray_init_s``); each Ray run still pays for its actor pool (start, model load), as every
`segment --ray` invocation does.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _report import PETS_IMAGES, emit  # benchmarks/ is on sys.path when run as a script


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=PETS_IMAGES, help="folder of images (default: the 491 shared pets)")
    p.add_argument("--limit", type=int, help="only the first N images (smoke runs)")
    p.add_argument("--model", type=Path, help="ONNX model (default: the bundled one)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="Ray actors (default: 2)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray runtime (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    import ray

    from unetlite.infer.pipeline.distributed import segment_jobs_on_ray
    from unetlite.infer.engine.runtimes import available_cpus
    from unetlite.infer.pipeline.naming import collect_jobs
    from unetlite.infer.pipeline.items import SegmentSettings
from unetlite.infer.pipeline.batch import segment_jobs
    from unetlite.infer.engine.segmenter import Segmenter

    segmenter = Segmenter(args.model, providers="cpu", spin=False)  # as `unetlite segment` opens it
    settings = SegmentSettings("mask", args.batch_size)
    start = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_init_s = time.perf_counter() - start
    plain, on_ray, ran = [], [], ""
    try:
        for _ in range(args.repeats):
            for mode in ("plain", "ray"):
                with tempfile.TemporaryDirectory() as tmp:
                    jobs = collect_jobs([str(args.images)], Path(tmp), "mask").jobs[: args.limit]
                    if mode == "plain":
                        summary = segment_jobs(segmenter, jobs, settings, progress=False)
                    else:
                        summary, ran = segment_jobs_on_ray(segmenter, jobs, settings, progress=False,
                                                           providers="cpu", workers=args.workers)
                    assert summary.done == len(jobs) and not summary.failed, summary.line()
                    (plain if mode == "plain" else on_ray).append(summary.images_per_second)
                    print(f"{mode}: {summary.line()}", file=sys.stderr)
    finally:
        ray.shutdown()
    result = {"images": len(jobs), "batch_size": args.batch_size, "cpus": available_cpus(),
              "plain_provider": segmenter.provider, "ray": ran, "ray_init_s": ray_init_s,
              "plain_images_per_s": statistics.median(plain), "ray_images_per_s": statistics.median(on_ray),
              "runs": {"plain": plain, "ray": on_ray}}
    result["ray_vs_plain"] = result["ray_images_per_s"] / result["plain_images_per_s"]
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

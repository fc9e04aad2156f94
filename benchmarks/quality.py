"""Inference-time switches, measured: IoU and time per image with and without --tta / --clean.

    python benchmarks/quality.py --data runs/eval_val --split test --out benchmarks/quality_val.json

Run it on the validation split (settings are chosen there, never on the test split). Each
variant runs the same `unetlite eval` code path (read-ahead, Segmenter, postprocess).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from unetlite.infer.io.dataset import discover
from unetlite.infer.pipeline.evaluate import evaluate, species_scores
from unetlite.infer.engine.segmenter import Segmenter

from _report import emit  # benchmarks/ is on sys.path when run as a script

VARIANTS = {"plain": {}, "tta": {"tta": True}, "clean": {"clean": True}, "tta+clean": {"tta": True, "clean": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, nargs="+")
    parser.add_argument("--split", default="test", help="list file name in each root (default: test)")
    parser.add_argument("--model", type=Path, action="append", help="repeatable; default: the bundled model")
    parser.add_argument("--providers", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pairs = [p for root in args.data for p in discover(root, args.split)]
    report = {"images": len(pairs), "split": args.split, "data": [str(d) for d in args.data], "models": {}}
    for model in args.model or [None]:
        segmenter = Segmenter(model, providers=args.providers)
        rows = {}
        for name, switches in VARIANTS.items():
            evaluate(segmenter, pairs[:4], **switches)  # warm-up
            started = time.perf_counter()
            result = evaluate(segmenter, pairs, **switches)
            seconds = time.perf_counter() - started
            rows[name] = {**{k: round(v, 4) for k, v in result.summary().items() if k != "images"},
                          "ms_per_image": round(1000 * seconds / max(result.images, 1), 1),
                          "by_species": {k: round(v["iou"], 4) for k, v in species_scores(result.per_image).items()}}
        report["models"][str(segmenter.path)] = {"provider": segmenter.provider, "variants": rows}
    emit(report, args.out)


if __name__ == "__main__":
    main()

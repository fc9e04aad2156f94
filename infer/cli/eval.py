"""`unetlite eval`: score a model on labelled Oxford-IIIT Pet style data (no TensorFlow)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import add_engine_arguments, add_limit_argument, engine_options, positive_int, say, say_error

SUMMARY_KEYS = ("iou", "mean_image_iou", "pixel_accuracy", "images")   # pipeline.evaluate.SUMMARY_KEYS
CSV_FIELDS = ("name", "iou", "pixel_accuracy", "foreground_true", "foreground_pred")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model on labelled pet images (IoU, pixel accuracy)",
                       description="Score an ONNX model against Oxford-IIIT Pet trimaps (pet = 1; background "
                                   "and border = 0), compared at each trimap's resolution.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, metavar="DIR", nargs="+", action="extend",
                     help="dataset root in the Oxford layout (images/, annotations/trimaps/, annotations/test.txt) "
                          "or the flat one (images/, trimaps/, test.txt); several (or repeated) are scored together")
    src.add_argument("--images", type=Path, metavar="DIR", help="folder of images (needs --trimaps)")
    p.add_argument("--trimaps", type=Path, metavar="DIR", help="folder of NAME.png trimaps (with --images)")
    p.add_argument("--list", type=Path, metavar="FILE",
                   help="with --images: names to score, one per line (extra columns ignored); default: all")
    p.add_argument("--split", default="test", help="with --data: list to use, e.g. test or trainval (default: test; "
                                                   "all images when the list file is absent)")
    add_engine_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per inference call (default: 8)")
    p.add_argument("--tile", action="store_true", help="segment at native resolution with overlapping tiles")
    p.add_argument("--clean", action="store_true", help="score masks after clean-up (main regions, holes filled)")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image (2x the work)")
    p.add_argument("--ignore-outline", action="store_true",
                   help="leave the trimap's border band (class 3, over the pet's outline) out of the score; "
                        "by default it counts as background, as Oxford-IIIT Pet scores it")
    p.add_argument("--by-breed", action="store_true",
                   help="also score each breed (name before the last '_') and cats vs dogs; with --json under "
                        "'by_breed' and 'by_species'")
    add_limit_argument(p)
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N pairs")
    p.add_argument("--json", action="store_true", help=f"print one JSON object with keys {', '.join(SUMMARY_KEYS)}")
    p.add_argument("--per-image", type=Path, metavar="FILE", help=f"write a CSV: {', '.join(CSV_FIELDS)}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def format_table(result) -> str:
    rows = [("images", str(result.images)),
            ("foreground IoU (dataset)", f"{result.iou:.4f}"),
            ("mean per-image IoU", f"{result.mean_image_iou:.4f}"),
            ("pixel accuracy", f"{result.pixel_accuracy:.4f}")]
    if result.failed:
        rows.append(("failed (skipped)", str(len(result.failed))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def format_breed_table(result) -> str:
    """One row per breed, then cats and dogs: images, dataset IoU, mean and worst image IoU."""
    from ..pipeline.evaluate import breed_scores, species_scores
    rows = [(breed, v["species"], v) for breed, v in breed_scores(result.per_image).items()]
    rows += [(group, "", v) for group, v in species_scores(result.per_image).items()]
    width = max([len("breed")] + [len(r[0]) for r in rows])
    lines = [f"{'breed':<{width}}  species  images     IoU  mean IoU  worst IoU"]
    for i, (name, species, v) in enumerate(rows):
        if i == len(rows) - len(species_scores(result.per_image)):
            lines.append("-" * len(lines[0]))
        lines.append(f"{name:<{width}}  {species:<7}  {v['images']:>6}  {v['iou']:.4f}  {v['mean_image_iou']:>8.4f}"
                     f"  {v['worst_image_iou']:>9.4f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..engine.options import open_segmenter
    from ..errors import UnetliteError
    from ..pipeline.evaluate import breed_scores, collect_pairs, evaluate, species_scores, write_per_image_csv

    pairs = collect_pairs(args.data, args.split, args.images, args.trimaps, args.list)
    missing = list(getattr(pairs, "missing", []))  # already logged by name in dataset.find_pairs
    if args.limit is not None:
        pairs = pairs[:max(0, args.limit)]
    if not pairs:
        where = ", ".join(map(str, args.data)) if args.data is not None else f"{args.images} + {args.trimaps}"
        raise UnetliteError(f"no image/trimap pairs found in {where}")
    segmenter = open_segmenter(engine_options(args))
    result = evaluate(segmenter, pairs, batch_size=args.batch_size, tile=args.tile, threshold=args.threshold,
                      progress=not (args.no_progress or args.json), clean=args.clean, tta=args.tta,
                      max_pixels=args.max_pixels, ignore_outline=args.ignore_outline)
    result.failed[:0] = missing
    if args.per_image is not None:
        write_per_image_csv(args.per_image, result.per_image)
    if result.images == 0:
        raise UnetliteError(f"none of the {len(result.failed)} pair(s) could be read; nothing to score")
    if args.json:
        summary = result.summary()
        if args.by_breed:
            summary |= {"by_breed": breed_scores(result.per_image), "by_species": species_scores(result.per_image)}
        say(json.dumps(summary))
    else:
        say(format_table(result))
        if args.by_breed:
            say("")
            say(format_breed_table(result))
    if result.failed:
        say_error("eval", f"{len(result.failed)} pair(s) failed and were skipped")
        return 1
    return 0

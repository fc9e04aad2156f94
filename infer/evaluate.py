"""`unetlite eval`: score a model on labelled Oxford-IIIT Pet style data (no TensorFlow).

The target is the binary pet mask (trimap 1 -> pet; background and border -> 0) and
masks are compared at the trimap's own resolution, so the numbers do not depend on
the model's input size.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .cliargs import add_engine_arguments, open_segmenter, positive_int
from .metrics import confusion, iou_from_counts

if TYPE_CHECKING:  # the CLI imports this module for argparse only: keep cv2 out until run()
    from .dataset import Pair

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("iou", "mean_image_iou", "pixel_accuracy", "images")
CSV_FIELDS = ("name", "iou", "pixel_accuracy", "foreground_true", "foreground_pred")


@dataclass(frozen=True)
class ImageScore:
    """One image's scores; foreground_* are pixel counts at the trimap's resolution."""

    name: str
    iou: float
    pixel_accuracy: float
    foreground_true: int
    foreground_pred: int


@dataclass
class EvalResult:
    """Pixel counts summed over the data set, per-image scores, and the pairs that failed."""

    intersection: int = 0
    union: int = 0
    correct: int = 0
    total: int = 0
    per_image: list[ImageScore] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)   # one-line messages naming the file

    @property
    def images(self) -> int:
        return len(self.per_image)

    @property
    def iou(self) -> float:
        """Data-set foreground IoU: sum of intersections over sum of unions (1.0 if no foreground at all)."""
        return iou_from_counts(self.intersection, self.union)

    @property
    def mean_image_iou(self) -> float:
        return float(np.mean([s.iou for s in self.per_image])) if self.per_image else float("nan")

    @property
    def pixel_accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def summary(self) -> dict:
        """The four numbers ``--json`` prints."""
        return {"iou": self.iou, "mean_image_iou": self.mean_image_iou,
                "pixel_accuracy": self.pixel_accuracy, "images": self.images}

    def add(self, name: str, truth: np.ndarray, pred: np.ndarray) -> ImageScore:
        """Score one prediction against its binary target and accumulate it."""
        intersection, union, correct, total = confusion(truth, pred)
        score = ImageScore(name, iou_from_counts(intersection, union), correct / total,
                           int(np.count_nonzero(truth)), int(np.count_nonzero(pred)))
        self.intersection += intersection
        self.union += union
        self.correct += correct
        self.total += total
        self.per_image.append(score)
        return score


@dataclass
class _Loaded:
    pair: Pair
    image: np.ndarray | None = None
    truth: np.ndarray | None = None
    error: str | None = None


def _load(pair: Pair) -> _Loaded:
    from .imageio import ImageReadError, read_image, read_label
    from .preprocess import trimap_to_mask
    try:
        # Trimaps are aligned with the stored pixels: do not apply EXIF orientation.
        image = read_image(pair.image, apply_orientation=False)
        trimap = read_label(pair.trimap)
    except ImageReadError as exc:
        return _Loaded(pair, error=str(exc))
    if not np.isin(trimap, (1, 2, 3)).all():  # e.g. a 0/255 mask: scoring it would be silently wrong
        return _Loaded(pair, error=f"{pair.trimap}: values outside {{1, 2, 3}}: not an Oxford-IIIT Pet trimap")
    return _Loaded(pair, image, trimap_to_mask(trimap))


def _batches(pairs: Sequence[Pair], batch_size: int, workers: int = 2) -> Iterator[list[_Loaded]]:
    """Decode the next batch in background threads while the current one is inferred."""
    chunks = [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(_load, p) for p in chunks[0]] if chunks else []
        for k in range(len(chunks)):
            current = [f.result() for f in pending]
            pending = [pool.submit(_load, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
            yield current


def evaluate(segmenter, pairs: Sequence[Pair], batch_size: int = 8, tile: bool = False,
             threshold: float | None = None, progress: bool = False) -> EvalResult:
    """Predict every pair with ``segmenter`` (a Segmenter) and score it against its trimap.

    Unreadable pairs are recorded in ``result.failed`` (and logged) and skipped.
    """
    from tqdm import tqdm

    from .preprocess import resize_image

    result = EvalResult()
    bar = tqdm(total=len(pairs), unit="img", disable=not progress, file=sys.stderr)
    for batch in _batches(list(pairs), max(1, batch_size)):
        for item in batch:
            if item.error:
                log.warning("%s, skipped", item.error)
                result.failed.append(item.error)
        good = [item for item in batch if item.error is None]
        segs = segmenter.predict([item.image for item in good], tile=tile, threshold=threshold)
        for item, seg in zip(good, segs):
            prob = seg.probability
            if prob.shape != item.truth.shape:  # image and trimap stored at different sizes
                log.info("%s: image %s vs trimap %s, scoring at the trimap's size",
                         item.pair.name, prob.shape, item.truth.shape)
                prob = resize_image(prob, item.truth.shape, "linear")
            result.add(item.pair.name, item.truth, (prob >= seg.threshold).astype(np.uint8))
        bar.update(len(batch))
    bar.close()
    return result


def write_per_image_csv(path: str | Path, scores: Sequence[ImageScore]) -> None:
    """One row per scored image (atomic write)."""
    from dataclasses import astuple

    from .imageio import write_atomic
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for s in scores:
        name, iou, acc, fg_true, fg_pred = astuple(s)
        writer.writerow([name, f"{iou:.6f}", f"{acc:.6f}", fg_true, fg_pred])
    write_atomic(path, buf.getvalue().encode())


def format_table(result: EvalResult) -> str:
    rows = [("images", str(result.images)),
            ("foreground IoU (dataset)", f"{result.iou:.4f}"),
            ("mean per-image IoU", f"{result.mean_image_iou:.4f}"),
            ("pixel accuracy", f"{result.pixel_accuracy:.4f}")]
    if result.failed:
        rows.append(("failed (skipped)", str(len(result.failed))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model on labelled pet images (IoU, pixel accuracy)",
                       description="Score an ONNX model against Oxford-IIIT Pet trimaps (pet = 1; background "
                                   "and border = 0), compared at each trimap's resolution.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, metavar="DIR",
                     help="dataset root in the Oxford layout (images/, annotations/trimaps/, annotations/test.txt) "
                          "or the flat one (images/, trimaps/, test.txt)")
    src.add_argument("--images", type=Path, metavar="DIR", help="folder of images (needs --trimaps)")
    p.add_argument("--trimaps", type=Path, metavar="DIR", help="folder of NAME.png trimaps (with --images)")
    p.add_argument("--list", type=Path, metavar="FILE",
                   help="with --images: names to score, one per line (extra columns ignored); default: all")
    p.add_argument("--split", default="test", help="with --data: list to use, e.g. test or trainval (default: test; "
                                                   "all images when the list file is absent)")
    add_engine_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per inference call (default: 8)")
    p.add_argument("--tile", action="store_true", help="segment at native resolution with overlapping tiles")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N pairs")
    p.add_argument("--json", action="store_true", help=f"print one JSON object with keys {', '.join(SUMMARY_KEYS)}")
    p.add_argument("--per-image", type=Path, metavar="FILE", help=f"write a CSV: {', '.join(CSV_FIELDS)}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _pairs_from_args(args: argparse.Namespace):
    from .dataset import discover, find_pairs
    if args.data is not None:
        return discover(args.data, args.split)
    if args.trimaps is None:
        raise ValueError("--images needs --trimaps")
    for flag, folder in (("--images", args.images), ("--trimaps", args.trimaps)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: {flag} folder not found")
    if args.list is not None and not args.list.is_file():
        raise FileNotFoundError(f"{args.list}: list file not found")
    return find_pairs(args.images, args.trimaps, args.list)


def run(args: argparse.Namespace) -> int:
    try:
        pairs = _pairs_from_args(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"unetlite eval: {exc}", file=sys.stderr)
        return 2
    missing = list(getattr(pairs, "missing", []))  # already logged by name in dataset.find_pairs
    if args.limit is not None:
        pairs = pairs[:max(0, args.limit)]
    if not pairs:
        where = args.data if args.data is not None else f"{args.images} + {args.trimaps}"
        print(f"unetlite eval: no image/trimap pairs found in {where}", file=sys.stderr)
        return 2
    segmenter = open_segmenter(args, "eval")
    if segmenter is None:
        return 2
    result = evaluate(segmenter, pairs, batch_size=args.batch_size, tile=args.tile, threshold=args.threshold,
                      progress=not (args.no_progress or args.json))
    result.failed[:0] = missing
    if args.per_image is not None:
        write_per_image_csv(args.per_image, result.per_image)
    if result.images == 0:
        print(f"unetlite eval: none of the {len(result.failed)} pair(s) could be read; nothing to score",
              file=sys.stderr)
        return 2
    print(json.dumps(result.summary()) if args.json else format_table(result))
    if result.failed:
        print(f"unetlite eval: {len(result.failed)} pair(s) failed and were skipped", file=sys.stderr)
        return 1
    return 0

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .cliargs import add_engine_arguments, add_limit_argument, open_segmenter, positive_int
from .imageio import DEFAULT_MAX_PIXELS
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
    intersection: int = 0
    union: int = 0

    @property
    def breed(self) -> str:
        from .dataset import breed_of
        return breed_of(self.name)


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
                           int(np.count_nonzero(truth)), int(np.count_nonzero(pred)), intersection, union)
        self.intersection += intersection
        self.union += union
        self.correct += correct
        self.total += total
        self.per_image.append(score)
        return score


def _pair_loader(segmenter, tile: bool, max_pixels: int | None):
    """load(pair, reserve) -> (Decoded, binary target): segment's image loader plus the trimap."""
    from .imageio import ImageReadError, read_label
    from .dataset import label_problem
    from .preprocess import label_to_mask
    from .segment import SegmentSettings, image_loader

    # Trimaps are aligned with the stored pixels: no EXIF orientation, no reduced decode.
    load_image = image_loader(segmenter, SegmentSettings(tile=tile, max_pixels=max_pixels, reduced_decode=False),
                              apply_orientation=False)

    def load(pair: Pair, reserve):
        decoded = load_image(pair.image, reserve)
        trimap = read_label(pair.trimap, max_pixels=max_pixels)
        problem = label_problem(trimap, pair.kind)
        if problem:
            raise ImageReadError(pair.trimap, problem)
        return decoded, label_to_mask(trimap, pair.kind)

    return load


def _message(pair: Pair, exc: BaseException) -> str:
    """"path: reason" naming the file that failed."""
    from .imageio import ImageReadError, display_path
    from .messages import one_line
    return str(exc) if isinstance(exc, ImageReadError) else f"{display_path(pair.image)}: {one_line(exc)}"


def evaluate(segmenter, pairs: Sequence[Pair], batch_size: int = 8, tile: bool = False,
             threshold: float | None = None, progress: bool = False, clean: bool = False, tta: bool = False,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> EvalResult:
    """Predict every pair with ``segmenter`` (a Segmenter) and score it against its trimap.

    Decoding runs ahead in segment's pipeline (same loader, same memory budget, same
    post-processing). Unreadable pairs are recorded in ``result.failed`` (and logged) and skipped.
    """
    from tqdm import tqdm

    from .postprocess import postprocess
    from .readahead import read_ahead
    from .segment import infer_batch

    thr = segmenter.contract.resolve_threshold(threshold)
    result = EvalResult()
    bar = tqdm(total=len(pairs), unit="img", disable=not progress, file=sys.stderr)
    for batch in read_ahead(list(pairs), _pair_loader(segmenter, tile, max_pixels), max(1, batch_size)):
        good = []
        for item in batch:
            if item.error is None:
                good.append(item)
                continue
            message = _message(item.item, item.error)
            log.warning("%s, skipped", message)
            result.failed.append(message)
        try:
            probs = infer_batch(segmenter, [item.value[0] for item in good], tile, tta) if good else []
        except Exception as exc:  # the batch's images are counted as failed, the run goes on
            probs = []
            for item in good:
                result.failed.append(_message(item.item, exc))
            good = []
        for item, prob in zip(good, probs):
            truth = item.value[1]
            # compared at the trimap's resolution, whatever size the image was stored at
            seg = postprocess(prob, truth.shape, thr, clean)
            result.add(item.item.name, truth, seg.mask)
        for item in batch:
            item.release()
        bar.update(len(batch))
    bar.close()
    return result


def breed_scores(scores: Sequence[ImageScore]) -> dict[str, dict]:
    """Per breed (name before the last '_'): species, images, dataset IoU, mean image IoU, pixel accuracy."""
    from .dataset import species_of
    groups: dict[str, list[ImageScore]] = {}
    for s in scores:
        groups.setdefault(s.breed, []).append(s)
    return {breed: {"species": species_of(breed), **_group_summary(group)} for breed, group in sorted(groups.items())}


def species_scores(scores: Sequence[ImageScore]) -> dict[str, dict]:
    """The same numbers for all cats and all dogs."""
    from .dataset import species_of
    groups: dict[str, list[ImageScore]] = {}
    for s in scores:
        groups.setdefault(species_of(s.breed) + "s", []).append(s)
    return {k: _group_summary(v) for k, v in sorted(groups.items())}


def _group_summary(group: Sequence[ImageScore]) -> dict:
    return {"images": len(group),
            "iou": iou_from_counts(sum(s.intersection for s in group), sum(s.union for s in group)),
            "mean_image_iou": float(np.mean([s.iou for s in group])),
            "worst_image_iou": float(min(s.iou for s in group))}


def write_per_image_csv(path: str | Path, scores: Sequence[ImageScore]) -> None:
    """One row per scored image (atomic write)."""
    from .imageio import write_atomic
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for s in scores:
        writer.writerow([s.name, f"{s.iou:.6f}", f"{s.pixel_accuracy:.6f}", s.foreground_true, s.foreground_pred])
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


def format_breed_table(result: EvalResult) -> str:
    """One row per breed, then cats and dogs: images, dataset IoU, mean and worst image IoU."""
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
    p.add_argument("--by-breed", action="store_true",
                   help="also score each breed (name before the last '_') and cats vs dogs; with --json under "
                        "'by_breed' and 'by_species'")
    add_limit_argument(p)
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N pairs")
    p.add_argument("--json", action="store_true", help=f"print one JSON object with keys {', '.join(SUMMARY_KEYS)}")
    p.add_argument("--per-image", type=Path, metavar="FILE", help=f"write a CSV: {', '.join(CSV_FIELDS)}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _pairs_from_args(args: argparse.Namespace):
    from .dataset import PairList, discover, find_pairs
    if args.data is not None:
        pairs = PairList()
        for root in args.data:
            found = discover(root, args.split)
            pairs += found
            pairs.missing += found.missing
        return pairs
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
        where = ", ".join(map(str, args.data)) if args.data is not None else f"{args.images} + {args.trimaps}"
        print(f"unetlite eval: no image/trimap pairs found in {where}", file=sys.stderr)
        return 2
    segmenter = open_segmenter(args, "eval")
    if segmenter is None:
        return 2
    result = evaluate(segmenter, pairs, batch_size=args.batch_size, tile=args.tile, threshold=args.threshold,
                      progress=not (args.no_progress or args.json), clean=args.clean, tta=args.tta,
                      max_pixels=args.max_pixels)
    result.failed[:0] = missing
    if args.per_image is not None:
        write_per_image_csv(args.per_image, result.per_image)
    if result.images == 0:
        print(f"unetlite eval: none of the {len(result.failed)} pair(s) could be read; nothing to score",
              file=sys.stderr)
        return 2
    if args.json:
        summary = result.summary()
        if args.by_breed:
            summary |= {"by_breed": breed_scores(result.per_image), "by_species": species_scores(result.per_image)}
        print(json.dumps(summary))
    else:
        print(format_table(result))
        if args.by_breed:
            print()
            print(format_breed_table(result))
    if result.failed:
        print(f"unetlite eval: {len(result.failed)} pair(s) failed and were skipped", file=sys.stderr)
        return 1
    return 0

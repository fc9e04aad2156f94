"""Evaluation: score a model on labelled Oxford-IIIT Pet style data (no TensorFlow).

The target is the binary pet mask (trimap 1 -> pet; background and border -> 0) and
masks are compared at the trimap's own resolution, so the numbers do not depend on
the model's input size. ``ignore_outline`` leaves the trimap's border band out of the
score instead (a mask that covers the whole pet then loses nothing at the outline).
"""
from __future__ import annotations

import csv
import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..io.images import DEFAULT_MAX_PIXELS
from .metrics import confusion, iou_from_counts

if TYPE_CHECKING:
    from ..io.dataset import Pair

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
        from ..io.dataset import breed_of
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

    def add(self, name: str, truth: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> ImageScore:
        """Score one prediction against its binary target and accumulate it (``ignore``: pixels left out)."""
        if ignore is not None:
            truth, pred = truth[~ignore], pred[~ignore]
        intersection, union, correct, total = confusion(truth, pred)
        score = ImageScore(name, iou_from_counts(intersection, union), correct / total,
                           int(np.count_nonzero(truth)), int(np.count_nonzero(pred)), intersection, union)
        self.intersection += intersection
        self.union += union
        self.correct += correct
        self.total += total
        self.per_image.append(score)
        return score


def _pair_loader(segmenter, tile: bool, max_pixels: int | None, ignore_outline: bool = False):
    """load(pair, reserve) -> (Decoded, binary target, ignored pixels or None): segment's image loader
    plus the trimap."""
    from ..engine.preprocess import label_to_mask, outline_band
    from ..io.dataset import label_problem
    from ..io.images import ImageReadError, read_label
    from .items import SegmentSettings, image_loader

    # Trimaps are aligned with the stored pixels: no EXIF orientation, no reduced decode.
    load_image = image_loader(segmenter, SegmentSettings(tile=tile, max_pixels=max_pixels, reduced_decode=False),
                              apply_orientation=False)

    def load(pair: Pair, reserve):
        decoded = load_image(pair.image, reserve)
        trimap = read_label(pair.trimap, max_pixels=max_pixels)
        problem = label_problem(trimap, pair.kind)
        if problem:
            raise ImageReadError(pair.trimap, problem)
        return decoded, label_to_mask(trimap, pair.kind), outline_band(trimap, pair.kind) if ignore_outline else None

    return load


def _message(pair: Pair, exc: BaseException) -> str:
    """"path: reason" naming the file that failed."""
    from ..errors import one_line
    from ..io.images import ImageReadError, display_path
    return str(exc) if isinstance(exc, ImageReadError) else f"{display_path(pair.image)}: {one_line(exc)}"


def evaluate(segmenter, pairs: Sequence[Pair], batch_size: int = 8, tile: bool = False,
             threshold: float | None = None, progress: bool = False, clean: bool = False, tta: bool = False,
             max_pixels: int | None = DEFAULT_MAX_PIXELS, ignore_outline: bool = False) -> EvalResult:
    """Predict every pair with ``segmenter`` (a Segmenter) and score it against its trimap.

    Decoding runs ahead in segment's pipeline (same loader, same memory budget, same
    post-processing). Unreadable pairs are recorded in ``result.failed`` (and logged) and skipped.
    """
    from tqdm import tqdm

    from .items import infer_batch, post_process
    from .readahead import read_ahead

    thr = segmenter.contract.resolve_threshold(threshold)
    result = EvalResult()
    bar = tqdm(total=len(pairs), unit="img", disable=not progress, file=sys.stderr)
    load = _pair_loader(segmenter, tile, max_pixels, ignore_outline)
    for batch in read_ahead(list(pairs), load, max(1, batch_size)):
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
            _, truth, ignore = item.value
            # compared at the trimap's resolution, whatever size the image was stored at
            seg = post_process(prob, truth.shape, thr, clean)
            result.add(item.item.name, truth, seg.mask, ignore)
        for item in batch:
            item.release()
        bar.update(len(batch))
    bar.close()
    return result


def breed_scores(scores: Sequence[ImageScore]) -> dict[str, dict]:
    """Per breed (name before the last '_'): species, images, dataset IoU, mean image IoU, pixel accuracy."""
    from ..io.dataset import species_of
    groups: dict[str, list[ImageScore]] = {}
    for s in scores:
        groups.setdefault(s.breed, []).append(s)
    return {breed: {"species": species_of(breed), **_group_summary(group)} for breed, group in sorted(groups.items())}


def species_scores(scores: Sequence[ImageScore]) -> dict[str, dict]:
    """The same numbers for all cats and all dogs."""
    from ..io.dataset import species_of
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
    from ..io.atomic import write_atomic
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for s in scores:
        writer.writerow([s.name, f"{s.iou:.6f}", f"{s.pixel_accuracy:.6f}", s.foreground_true, s.foreground_pred])
    write_atomic(path, buf.getvalue().encode())


def collect_pairs(data: Sequence[Path] | None = None, split: str = "test", images: Path | None = None,
                  trimaps: Path | None = None, list_file: Path | None = None):
    """The pairs to score: dataset roots (``data``, several scored together) or an images folder
    with a trimaps folder (and an optional name list). UnetliteError when the folders are wrong."""
    from ..errors import UnetliteError
    from ..io.dataset import PairList, discover, find_pairs

    try:
        if data is not None:
            pairs = PairList()
            for root in data:
                found = discover(root, split)
                pairs += found
                pairs.missing += found.missing
            return pairs
        if trimaps is None:
            raise UnetliteError("--images needs --trimaps")
        for flag, folder in (("--images", images), ("--trimaps", trimaps)):
            if not folder.is_dir():
                raise UnetliteError(f"{folder}: {flag} folder not found")
        if list_file is not None and not list_file.is_file():
            raise UnetliteError(f"{list_file}: list file not found")
        return find_pairs(images, trimaps, list_file)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        raise UnetliteError(str(exc)) from None

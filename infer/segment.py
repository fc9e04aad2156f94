"""`unetlite segment`: segment files, folders and globs into masks, cutouts or overlays.

Decode (+ resize) and encode (+ write) run in thread pools around the inference loop,
with bounded look-ahead, so a folder of JPEGs runs close to pure inference speed
without ever holding the whole folder in memory. Outputs are written atomically and
existing ones are skipped, so an interrupted run simply resumes.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import logging
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cliargs import add_engine_arguments, open_segmenter, positive_int
from .imageio import IMAGE_EXTENSIONS, ImageReadError, read_image, write_atomic, write_image
from .outputs import FORMATS, render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.done} done, {self.skipped} skipped (already there), {len(self.failed)} failed "
                f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s)")


def _output_for(rel: Path, out_dir: Path, ext: str, taken: set[Path]) -> Path:
    """OUT/rel with the format's extension; 'a.jpg' and 'a.png' side by side keep apart."""
    out = out_dir / rel.with_suffix(ext)
    if out in taken:
        out = out_dir / rel.with_name(rel.name + ext)
    taken.add(out)
    return out


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: outputs mirror paths below it."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[:next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))]]
    return Path(*fixed) if fixed else Path(".")


def collect_jobs(inputs: list[str], out_dir: Path, fmt: str, recursive: bool = False) -> tuple[list[Job], list[str]]:
    """(jobs, inputs that matched nothing). Folder contents are filtered by image extension;
    files named explicitly are always tried (and reported if they are not images)."""
    ext = FORMATS[fmt]
    jobs, missing, taken = [], [], set()
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            files = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not p.name.startswith("."))
            jobs += [Job(f, _output_for(f.relative_to(path), out_dir, ext, taken)) for f in files]
        elif path.is_file():
            jobs.append(Job(path, _output_for(Path(path.name), out_dir, ext, taken)))
        elif glob.has_magic(spec):
            base = _glob_base(spec)
            files = sorted(Path(p) for p in glob.glob(spec, recursive=recursive) if Path(p).is_file())
            if not files:
                missing.append(spec)
            jobs += [Job(f, _output_for(f.relative_to(base), out_dir, ext, taken)) for f in files]
        else:
            missing.append(spec)
    return jobs, missing


def _decode(job: Job, segmenter, tile: bool):
    """Reader thread: decode and, in resize mode, prepare the model input."""
    from .preprocess import prepare
    rgb = read_image(job.source)
    return rgb, (None if tile else prepare(rgb, segmenter.contract))


def _encode(job: Job, rgb: np.ndarray, probability: np.ndarray, fmt: str, threshold: float) -> None:
    """Writer thread: back to the original size, threshold, render, write atomically."""
    from .postprocess import postprocess
    seg = postprocess(probability, rgb.shape[:2], threshold)
    write_image(job.output, render(fmt, rgb, seg.probability, seg.mask))


def segment_jobs(segmenter, jobs: list[Job], fmt: str = "mask", batch_size: int = 4, tile: bool = False,
                 threshold: float | None = None, overwrite: bool = False, workers: int = 2,
                 progress: bool = True) -> Summary:
    """Run every job; failures are reported by name and collected, never raised."""
    from tqdm import tqdm

    threshold = segmenter.contract.threshold if threshold is None else threshold
    summary = Summary()
    todo = [j for j in jobs if overwrite or not j.output.exists()]
    summary.skipped = len(jobs) - len(todo)
    started = time.perf_counter()
    lookahead = max(2 * batch_size, 4)
    bar = tqdm(total=len(todo), unit="img", disable=not progress, file=sys.stderr)

    def fail(job: Job, reason: str) -> None:
        summary.failed.append((str(job.source), reason))
        tqdm.write(f"unetlite segment: {job.source}: {reason}", file=sys.stderr)

    with ThreadPoolExecutor(workers, "decode") as readers, ThreadPoolExecutor(workers, "encode") as writers:
        pending_reads: deque[tuple[Job, Future]] = deque()
        pending_writes: deque[tuple[Job, Future]] = deque()
        queue = iter(todo)

        def refill() -> None:
            while len(pending_reads) < lookahead:
                job = next(queue, None)
                if job is None:
                    return
                pending_reads.append((job, readers.submit(_decode, job, segmenter, tile)))

        def drain_writes(limit: int) -> None:
            while len(pending_writes) > limit:
                job, fut = pending_writes.popleft()
                try:
                    fut.result()
                    summary.done += 1
                except (OSError, ValueError) as exc:
                    fail(job, f"cannot write {job.output} ({exc})")
                bar.update()

        refill()
        while pending_reads:
            batch: list[tuple[Job, np.ndarray, np.ndarray | None]] = []
            while pending_reads and len(batch) < batch_size:
                job, fut = pending_reads.popleft()
                try:
                    batch.append((job, *fut.result()))
                except ImageReadError as exc:
                    fail(job, exc.reason)
                    bar.update()
                refill()
            if not batch:
                continue
            if tile:
                probs = [segmenter.predict([rgb], tile=True)[0].probability for _, rgb, _ in batch]
            else:
                probs = segmenter.run(np.stack([prepared for _, _, prepared in batch]))
            for (job, rgb, _), prob in zip(batch, probs):
                pending_writes.append((job, writers.submit(_encode, job, rgb, prob, fmt, threshold)))
            drain_writes(lookahead)
        drain_writes(0)
    bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


def write_failures(path: Path, failed: list[tuple[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "reason"])
    writer.writerows(failed)
    write_atomic(path, buf.getvalue().encode())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images: files, folders, globs",
                       description="Segment images and write one output per image under OUT, mirroring the "
                                   "inputs' folder structure. Existing outputs are skipped (resume).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output folder")
    p.add_argument("--format", dest="fmt", choices=list(FORMATS), default="mask",
                   help="mask: 0/255 PNG (default); cutout: RGBA PNG with transparent background; overlay: "
                        "colour overlay JPEG; prob: 8-bit probability PNG; side-by-side: image | mask | image*mask")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per inference call (default: 4)")
    p.add_argument("--tile", action="store_true", help="segment at native resolution with overlapping tiles")
    p.add_argument("--overwrite", action="store_true", help="redo images whose output already exists")
    add_engine_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    jobs, missing = collect_jobs(args.inputs, args.output, args.fmt, args.recursive)
    for spec in missing:
        print(f"unetlite segment: {spec}: no such file, folder or matching glob", file=sys.stderr)
    if not jobs:
        print("unetlite segment: no input images found", file=sys.stderr)
        return 2
    segmenter = open_segmenter(args, "segment")
    if segmenter is None:
        return 2
    summary = segment_jobs(segmenter, jobs, args.fmt, args.batch_size, args.tile, args.threshold,
                           args.overwrite, progress=not args.no_progress)
    summary.failed += [(spec, "no such file, folder or matching glob") for spec in missing]
    if summary.failed:
        write_failures(args.output / "failures.csv", summary.failed)
    print(f"{summary.line()} on {segmenter.provider} -> {args.output}"
          + (f"; see {args.output / 'failures.csv'}" if summary.failed else ""))
    return 1 if summary.failed else 0

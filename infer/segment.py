"""`unetlite segment`: segment files, folders and globs into masks, cutouts or overlays.

Decoding runs ahead of inference in a reader pool bounded by a byte budget
(readahead.py), encoding and writing in a writer pool; every output is written
atomically and durably and recorded in OUT's manifest, which is what resume trusts
(manifest.py). Naming rules: naming.py. Any failure of one file becomes a row of
OUT/failures.csv; the batch always goes on.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .cliargs import add_engine_arguments, add_limit_argument, open_segmenter, positive_int
from .imageio import DEFAULT_MAX_PIXELS, display_path
from .naming import Job, NamingError, collect_jobs
from .outputs import FORMATS
from .messages import one_line
from .signals import stop_on_signals

log = logging.getLogger(__name__)

FAILURES_NAME = "failures.csv"
REDUCED_DECODE_FORMATS = frozenset({"mask", "prob"})   # outputs that never show the photo's own pixels
# Working bytes per output pixel in the writer (float probability, mask, rendered picture,
# colour conversion and encoder buffers): what the read-ahead budget reserves.
WRITER_BYTES_PER_PIXEL = {"mask": 8, "prob": 8, "cutout": 20, "overlay": 20, "side-by-side": 36}


@dataclass(frozen=True)
class SegmentSettings:
    """How a run segments and writes (the pixel-changing part is the manifest's OutputConfig)."""

    fmt: str = "mask"
    batch_size: int = 4
    tile: bool = False
    threshold: float | None = None      # None: the model's
    clean: bool = False
    tta: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    reduced_decode: bool = True          # mask/prob: decode JPEGs at reduced size, write at full size
    workers: int | None = None           # reader and writer threads (default: from usable CPUs)
    budget_bytes: int | None = None      # read-ahead memory (default: readahead.DEFAULT_BUDGET_BYTES)


def settings_from_args(args: argparse.Namespace) -> SegmentSettings:
    """The settings `unetlite segment`'s command line asks for (plain and --ray alike)."""
    return SegmentSettings(args.fmt, args.batch_size, args.tile, args.threshold, args.clean, args.tta,
                           args.max_pixels, args.reduced_decode)


@dataclass
class Summary:
    """Counts of a run; ``failed`` rows are (printable path, one-line reason)."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    redone: dict[str, int] = field(default_factory=dict)   # why existing outputs were redone -> count
    seconds: float = 0.0
    interrupted: int = 0     # exit code of the signal that stopped the run (130, 143, 129); 0: ran to the end

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def line(self, where: str = "") -> str:
        """The one summary line: counts, rate, ``where`` (e.g. " on CPU -> out"), why outputs were redone."""
        text = (f"{self.done} done, {self.skipped} skipped (already done), {len(self.failed)} failed "
                f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s){where}")
        text += "".join(f"; {count} redone because {why}" for why, count in self.redone.items())
        return text + ("; interrupted (the rest resumes on the next run)" if self.interrupted else "")


@dataclass
class Decoded:
    """A loaded image: what inference and the writer need of it."""

    rgb: np.ndarray | None          # None once only the model input is needed (mask/prob)
    model_input: np.ndarray | None  # None in tile mode
    size: tuple[int, int]           # the output's (height, width): the oriented original


def keeps_rgb(settings: SegmentSettings) -> bool:
    """Whether the photo's pixels are needed after decoding: tiling reads them, and every format
    but mask/prob shows them."""
    return settings.tile or settings.fmt not in REDUCED_DECODE_FORMATS


def as_decoded(segmenter, rgb: np.ndarray, size: tuple[int, int], settings: SegmentSettings) -> Decoded:
    """A decoded picture -> what inference and the writer keep of it (``size``: the output's)."""
    return Decoded(rgb if keeps_rgb(settings) else None, None if settings.tile else segmenter.prepare(rgb),
                   (int(size[0]), int(size[1])))


def image_decoder(segmenter, settings: SegmentSettings, apply_orientation: bool = True) -> Callable:
    """``decode(data, name, reserve) -> Decoded`` for encoded image bytes: read the header,
    reserve the memory the image will need, decode (reduced when the output never shows the
    photo's pixels), prepare the model input with ``segmenter.prepare`` (its dtype).
    ``segmenter`` needs only ``contract`` and ``prepare``."""
    from .imageio import decode_image, image_size

    reduce = settings.reduced_decode and not keeps_rgb(settings)
    per_pixel = WRITER_BYTES_PER_PIXEL[settings.fmt] + (8 if settings.tile else 0)

    def decode(data: bytes, name: str | Path, reserve: Callable[[int], None]) -> Decoded:
        size = image_size(data, apply_orientation)
        if size is not None and (settings.max_pixels is None or size[0] * size[1] <= settings.max_pixels):
            reserve(len(data) + size[0] * size[1] * (3 + per_pixel))  # decode_image refuses the rest unallocated
        rgb = decode_image(data, name, apply_orientation, settings.max_pixels,
                           reduce_to=segmenter.contract.input_size if reduce and size else None)
        if size is None:  # header not readable here: OpenCV's own limit bounded the decode
            size = rgb.shape[:2]
            reserve(size[0] * size[1] * (3 + per_pixel))
        return as_decoded(segmenter, rgb, size, settings)

    return decode


def image_loader(segmenter, settings: SegmentSettings, apply_orientation: bool = True) -> Callable:
    """The read-ahead loader ``load(path, reserve) -> Decoded`` of segment and eval: the file's
    bytes (bounded by what ``max_pixels`` allows), then ``image_decoder``."""
    from .imageio import byte_limit, read_bytes

    decode = image_decoder(segmenter, settings, apply_orientation)
    max_bytes = byte_limit(settings.max_pixels)

    def load(path: Path, reserve: Callable[[int], None]) -> Decoded:
        return decode(read_bytes(path, max_bytes), path, reserve)

    return load


def infer_batch(segmenter, decoded: Sequence[Decoded], tile: bool = False, tta: bool = False) -> list[np.ndarray]:
    """Probabilities for a batch: model resolution, or full size in tile mode (``tta``: flip-averaged)."""
    if tile:
        return segmenter.probabilities([d.rgb for d in decoded], tile=True, tta=tta)
    return list(segmenter.run(np.stack([d.model_input for d in decoded]), tta=tta))


def encode_output(decoded: Decoded, probability: np.ndarray, settings: SegmentSettings, threshold: float) -> bytes:
    """The output file's bytes: the one post-processing, then the format's picture, encoded."""
    from .imageio import encode_image
    from .outputs import render
    from .postprocess import postprocess

    seg = postprocess(probability, decoded.size, threshold, settings.clean)
    return encode_image(render(settings.fmt, decoded.rgb, seg.probability, seg.mask), FORMATS[settings.fmt])


def _write(job: Job, decoded: Decoded, probability: np.ndarray, settings: SegmentSettings,
           threshold: float) -> tuple[tuple[int, int], int]:
    """Writer thread: encode, durable atomic write -> (size, bytes)."""
    from .imageio import write_atomic

    data = encode_output(decoded, probability, settings, threshold)
    write_atomic(job.output, data)
    return decoded.size, len(data)


def segment_jobs(segmenter, jobs: Sequence[Job], settings: SegmentSettings = SegmentSettings(),
                 on_written: Callable[[Job, tuple[int, int], int], None] | None = None,
                 progress: bool = True) -> Summary:
    """Segment and write every job (no resume logic here: pass only the jobs to do).

    ``on_written(job, size, bytes)`` runs in the writer thread after each durable write
    (segment's manifest append). Failures are reported by name and collected, never raised.
    """
    from tqdm import tqdm

    from .readahead import DEFAULT_BUDGET_BYTES, ByteBudget, pool_size, read_ahead

    threshold = segmenter.contract.resolve_threshold(settings.threshold)
    workers = settings.workers or pool_size()
    budget = ByteBudget(settings.budget_bytes or DEFAULT_BUDGET_BYTES)
    summary = Summary()
    started = time.perf_counter()
    bar = tqdm(total=len(jobs), unit="img", disable=not progress, file=sys.stderr)

    def fail(job: Job, exc: BaseException) -> None:
        reason = one_line(exc)
        summary.failed.append((display_path(job.source), reason))
        tqdm.write(f"unetlite segment: {display_path(job.source)}: {reason}", file=sys.stderr)
        bar.update()

    def write_task(item, prob: np.ndarray) -> None:
        try:
            size, nbytes = _write(item.item, item.value, prob, settings, threshold)
            if on_written is not None:
                on_written(item.item, size, nbytes)
        finally:
            item.release()

    pending: deque[tuple[Job, Future]] = deque()

    def drain(limit: int) -> None:
        while len(pending) > limit or (pending and pending[0][1].done()):
            job, fut = pending.popleft()
            try:
                fut.result()
            except Exception as exc:
                fail(job, exc)
                continue
            summary.done += 1
            bar.update()

    load = image_loader(segmenter, settings)
    batches = read_ahead(jobs, lambda job, reserve: load(job.source, reserve), settings.batch_size, workers, budget)

    def run_batch(batch, writers: ThreadPoolExecutor) -> None:
        good = [item for item in batch if item.error is None]
        for item in batch:
            if item.error is not None:
                fail(item.item, item.error)
        if not good:
            return
        try:
            probs = infer_batch(segmenter, [item.value for item in good], settings.tile, settings.tta)
        except Exception as exc:  # e.g. an image too small or odd for the model, out of memory
            for item in good:
                item.release()
                fail(item.item, exc)
            return
        for item, prob in zip(good, probs):
            item.value.model_input = None
            pending.append((item.item, writers.submit(write_task, item, prob)))
        drain(2 * settings.batch_size + workers)

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="write") as writers:
            for batch in batches:
                run_batch(batch, writers)
            drain(0)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: what was written stays written
        summary.interrupted = getattr(exc, "exit_code", 130)
        batches.close()
        drain(0)  # the writes that finished while stopping count as done
    bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


def failures_csv(failed: Sequence[tuple[str, str]]) -> bytes:
    """failures.csv's content: a header, then one (printable path, one-line reason) row per failure."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(failed)
    return buf.getvalue().encode("utf-8")


def write_failures(path: Path, failed: Sequence[tuple[str, str]]) -> str | None:
    """Write failures.csv atomically; returns a one-line error instead of raising."""
    from .imageio import write_atomic
    try:
        write_atomic(path, failures_csv(failed))
    except OSError as exc:
        return f"cannot write {display_path(path)} ({one_line(exc)})"
    return None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images: files, folders, globs",
                       description="Segment images and write one output per image under OUT: the source's full "
                                   "name plus the format's extension (cat.jpg -> cat.jpg.png); folders mirror the "
                                   "paths below them, files and globs their path below the current folder (else "
                                   "their bare name). Outputs that OUT's manifest shows were made from the same "
                                   "source with the same settings are kept (resume); others are redone.")
    # nargs="*": `--ray DIR` takes DIR as its address, and run() hands it back (split_ray_argument)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or glob patterns "
                                                              "(with --ray also s3://, gs://, file:// URIs)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (with --ray also a URI)")
    p.add_argument("--format", dest="fmt", choices=list(FORMATS), default="mask",
                   help="mask: 0/255 PNG (default); cutout: RGBA PNG with transparent background; overlay: "
                        "colour overlay JPEG; prob: 8-bit probability PNG; side-by-side: image | mask | image*mask")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders ('**' in globs)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per inference call (default: 4)")
    p.add_argument("--tile", action="store_true", help="segment at native resolution with overlapping tiles")
    p.add_argument("--clean", action="store_true",
                   help="keep the main foreground regions and fill holes enclosed by them")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image (2x the work)")
    p.add_argument("--overwrite", action="store_true", help="redo every output, even those the manifest shows done")
    p.add_argument("--no-reduced-decode", dest="reduced_decode", action="store_false", help=argparse.SUPPRESS)
    add_engine_arguments(p)
    add_limit_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on Ray Data: a local runtime, or the cluster at ADDRESS ('auto', 'ray://HEAD:10001'); "
                        "same outputs, names, resume and failures.csv (needs pip install 'unetlite[ray]')")
    p.add_argument("--ray-workers", type=positive_int, metavar="N",
                   help="with --ray: model replicas (default: one per GPU, else half the cluster's CPUs)")
    p.set_defaults(run=run)


def _usage_error(message: str) -> int:
    print(f"unetlite segment: {message}", file=sys.stderr)
    return 2


def _finish(summary: Summary, out: Path, provider: str) -> int:
    """failures.csv (or one line saying it could not be written), the summary line, the exit code."""
    failures = out / FAILURES_NAME
    trailer = ""
    if summary.failed:
        error = write_failures(failures, summary.failed)
        if error:
            print(f"unetlite segment: {error}", file=sys.stderr)
        else:
            trailer = f"; see {display_path(failures)}"
    elif failures.is_file() and not summary.interrupted:
        failures.unlink()  # it described an earlier run, whose failures are all done now
    print(summary.line(f" on {provider} -> {display_path(out)}") + trailer)
    return summary.interrupted or (1 if summary.failed else 0)


def _open_model(args: argparse.Namespace):
    """The Segmenter, or None after a one-line error. With --ray this is the driver's CPU copy
    (for the contract and the model file); the Ray workers open their own with --providers."""
    if args.ray is None:
        return open_segmenter(args, "segment")
    from .distributed import open_driver_model
    return open_driver_model(args)


def _run_jobs(args: argparse.Namespace, segmenter, jobs: Sequence[Job], settings: SegmentSettings,
              on_written: Callable[[Job, tuple[int, int], int], None]) -> tuple[Summary, str]:
    """segment_jobs here, or the same on Ray (--ray); returns the summary and what ran."""
    if args.ray is None:
        return segment_jobs(segmenter, jobs, settings, on_written, progress=not args.no_progress), segmenter.provider
    from .distributed import segment_jobs_on_ray
    return segment_jobs_on_ray(segmenter, jobs, settings, on_written, progress=not args.no_progress,
                               providers=args.providers, threads=args.threads, precision=args.precision,
                               address=args.ray or None, workers=args.ray_workers)


def _segment_locked(args: argparse.Namespace, out: Path, jobs: Sequence[Job]) -> tuple[Summary, str] | None:
    """With OUT locked: clear stale temps, load the model, plan the resume, run. None: model failed."""
    from .imageio import remove_stale_temps
    from .manifest import Manifest, OutputConfig, file_sha256, load_records, make_record, plan_resume

    removed = remove_stale_temps(out)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run", removed)
    segmenter = _open_model(args)
    if segmenter is None:
        return None
    threshold = segmenter.contract.resolve_threshold(args.threshold)
    config = OutputConfig(args.fmt, threshold, file_sha256(segmenter.path), args.clean, args.tile, args.tta)
    plan = plan_resume(jobs, config, load_records(out), args.overwrite)
    settings = settings_from_args(args)
    manifest = Manifest(out)
    try:
        summary, provider = _run_jobs(args, segmenter, plan.todo, settings,
                                      lambda job, size, n: manifest.append(make_record(job, config, size, n)))
    finally:
        manifest.close()
    summary.skipped = len(plan.done)
    summary.redone = {v.value: n for v, n in plan.redone.items()}
    return summary, provider


def run(args: argparse.Namespace) -> int:
    from .distributed import MissingRay, RayUnavailable, import_ray, is_uri, run_uri_segment, split_ray_argument

    args.ray, args.inputs = split_ray_argument(args.ray, args.inputs)
    if not args.inputs:
        return _usage_error("give at least one INPUT (image file, folder or glob)")
    uris = [spec for spec in (*args.inputs, args.output) if is_uri(spec)]
    if args.ray is None:
        if uris:
            return _usage_error(f"{uris[0]}: URIs need --ray")
        if args.ray_workers is not None:
            return _usage_error("--ray-workers needs --ray")
        return _run_local(args, Path(args.output))
    try:
        import_ray()
        return run_uri_segment(args) if uris else _run_local(args, Path(args.output))
    except (MissingRay, RayUnavailable) as exc:
        return _usage_error(str(exc))


def _run_local(args: argparse.Namespace, out: Path) -> int:
    """A run whose OUT is a local folder: locked, manifest-based resume, failures.csv."""
    from .manifest import OutputBusy, RunLock, load_records, recorded_outputs

    if out.exists() and not out.is_dir():
        return _usage_error(f"{display_path(out)}: -o must be a folder, and this is an existing file")
    records = load_records(out) if out.is_dir() else {}
    try:
        collected = collect_jobs(args.inputs, out, args.fmt, args.recursive, exclude=recorded_outputs(out, records))
    except NamingError as exc:
        return _usage_error(str(exc))
    for path, reason in collected.problems:
        print(f"unetlite segment: {path}: {reason}", file=sys.stderr)
    if not collected.jobs:
        return _usage_error("no input images found")
    try:
        with RunLock(out), stop_on_signals():
            result = _segment_locked(args, out, collected.jobs)
    except OutputBusy as exc:
        return _usage_error(str(exc))
    except OSError as exc:
        return _usage_error(f"{display_path(out)}: cannot write here ({exc.strerror or exc})")
    if result is None:
        return 2
    summary, provider = result
    summary.failed[:0] = collected.problems
    return _finish(summary, out, provider)

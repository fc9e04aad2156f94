"""The local batch runner: load (read-ahead pool) -> infer (this thread) -> write (writer pool).

Each step is a plain function over one :class:`BatchRun`; failures of one file become a row of
the returned :class:`Summary`, and the batch always goes on. Nothing here prints: per-file
failures are logged, progress is a tqdm bar on stderr.
"""
from __future__ import annotations

import csv
import io
import logging
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import one_line
from ..io.atomic import display_path, write_atomic
from .items import Decoded, SegmentSettings, image_loader, infer_batch, encode_output
from .naming import Job
from .readahead import DEFAULT_BUDGET_BYTES, ByteBudget, Loaded, pool_size, read_ahead

log = logging.getLogger(__name__)

# The tool's own name: a user's failures.csv in OUT (-o may be the input folder) is never touched.
FAILURES_NAME = "unetlite-failures.csv"
OnWritten = Callable[[Job, tuple[int, int], int], None]
OnFailed = Callable[[str, str], None]   # (printable path, one-line reason), as the file fails


def log_failure(path: str, reason: str) -> None:
    """The default ``on_failed``: a warning in the log."""
    log.warning("%s: %s", path, reason)


@dataclass
class Summary:
    """Counts of a run; ``failed`` rows are (printable path, one-line reason)."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    redone: dict[str, int] = field(default_factory=dict)   # why existing outputs were redone -> count
    seconds: float = 0.0
    interrupted: int = 0     # exit code of the signal that stopped the run (130, 143, 129); 0: ran to the end
    errors: list[str] = field(default_factory=list)   # run-level problems (OUT deleted...): exit 1, in the line

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return self.interrupted or (1 if self.failed or self.errors else 0)

    def line(self, where: str = "") -> str:
        """The one summary line: counts, rate, ``where`` (e.g. " on CPU -> out"), why outputs were redone."""
        text = (f"{self.done} done, {self.skipped} skipped (already done), {len(self.failed)} failed "
                f"in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s){where}")
        text += "".join(f"; {count} redone because {why}" for why, count in self.redone.items())
        text += "".join(f"; {error}" for error in self.errors)
        return text + ("; interrupted (the rest resumes on the next run)" if self.interrupted else "")


@dataclass
class BatchRun:
    """The state one run's steps share: settings, the writer pool's futures, the counts."""

    segmenter: Any
    settings: SegmentSettings
    threshold: float
    on_written: OnWritten | None
    bar: Any
    on_failed: OnFailed = log_failure
    writers: ThreadPoolExecutor | None = None
    summary: Summary = field(default_factory=Summary)
    pending: deque = field(default_factory=deque)   # (Job, Future) in submission order


def fail(run: BatchRun, job: Job, exc: BaseException) -> None:
    """Count one file as failed, with its one-line reason."""
    reason = one_line(exc)
    run.summary.failed.append((display_path(job.source), reason))
    run.on_failed(display_path(job.source), reason)
    run.bar.update()


def write(job: Job, decoded: Decoded, probability: np.ndarray, settings: SegmentSettings,
          threshold: float) -> tuple[tuple[int, int], int]:
    """Writer step: encode, durable atomic write -> (size, bytes)."""
    data = encode_output(decoded, probability, settings, threshold)
    write_atomic(job.output, data)
    return decoded.size, len(data)


def write_task(run: BatchRun, item: Loaded, probability: np.ndarray) -> None:
    """Writer thread: write one output, record it (``on_written``), free its read-ahead memory."""
    try:
        size, nbytes = write(item.item, item.value, probability, run.settings, run.threshold)
        if run.on_written is not None:
            run.on_written(item.item, size, nbytes)
    finally:
        item.release()


def drain(run: BatchRun, limit: int) -> None:
    """Collect finished writes (and wait until at most ``limit`` are outstanding)."""
    while len(run.pending) > limit or (run.pending and run.pending[0][1].done()):
        job, fut = run.pending.popleft()
        try:
            fut.result()
        except Exception as exc:
            fail(run, job, exc)
            continue
        run.summary.done += 1
        run.bar.update()


def infer_step(run: BatchRun, batch: Sequence[Loaded]) -> None:
    """Infer step: one batch of loaded images -> probabilities, handed to the writer pool."""
    good = [item for item in batch if item.error is None]
    for item in batch:
        if item.error is not None:
            fail(run, item.item, item.error)
    if not good:
        return
    try:
        probs = infer_batch(run.segmenter, [item.value for item in good], run.settings.tile, run.settings.tta)
    except Exception as exc:  # e.g. an image too small or odd for the model, out of memory
        for item in good:
            item.release()
            fail(run, item.item, exc)
        return
    for item, prob in zip(good, probs):
        item.value.model_input = None
        run.pending.append((item.item, run.writers.submit(write_task, run, item, prob)))


def segment_jobs(segmenter, jobs: Sequence[Job], settings: SegmentSettings = SegmentSettings(),
                 on_written: OnWritten | None = None, progress: bool = True,
                 on_failed: OnFailed = log_failure) -> Summary:
    """Segment and write every job (no resume logic here: pass only the jobs to do).

    ``on_written(job, size, bytes)`` runs in the writer thread after each durable write
    (segment's manifest append). Failures are collected by name, never raised.
    """
    from tqdm import tqdm

    workers = settings.workers or pool_size()
    budget = ByteBudget(settings.budget_bytes or DEFAULT_BUDGET_BYTES)
    bar = tqdm(total=len(jobs), unit="img", disable=not progress, file=sys.stderr)
    run = BatchRun(segmenter, settings, segmenter.contract.resolve_threshold(settings.threshold), on_written, bar,
                   on_failed=on_failed)
    started = time.perf_counter()
    load = image_loader(segmenter, settings)
    batches = read_ahead(jobs, _job_loader(load), settings.batch_size, workers, budget)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="write") as run.writers:
            for batch in batches:
                infer_step(run, batch)
                drain(run, 2 * settings.batch_size + workers)
            drain(run, 0)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: what was written stays written
        run.summary.interrupted = getattr(exc, "exit_code", 130)
        batches.close()
        drain(run, 0)  # the writes that finished while stopping count as done
    bar.close()
    run.summary.seconds = time.perf_counter() - started
    return run.summary


def _job_loader(load: Callable) -> Callable:
    """The read-ahead loader for jobs: their source files through ``load``."""
    return lambda job, reserve: load(job.source, reserve)


def failures_csv(failed: Sequence[tuple[str, str]]) -> bytes:
    """failures.csv's content: a header, then one (printable path, one-line reason) row per failure."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(failed)
    return buf.getvalue().encode("utf-8")


def write_failures(path: Path, failed: Sequence[tuple[str, str]]) -> str | None:
    """Write failures.csv atomically; returns a one-line error instead of raising."""
    try:
        write_atomic(path, failures_csv(failed))
    except OSError as exc:
        return f"cannot write {display_path(path)} ({one_line(exc)})"
    return None

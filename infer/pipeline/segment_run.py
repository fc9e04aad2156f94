"""A whole `segment` run: collect the jobs, lock OUT, resume from its manifest, run them locally or on
Ray, write failures.csv. Returns a :class:`SegmentResult`; usage errors raise UnetliteError (exit 2).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from ..engine.options import EngineOptions, open_segmenter
from ..errors import UnetliteError, one_line
from ..io.atomic import display_path, remove_stale_temps
from ..signals import stop_on_signals
from .batch import FAILURES_NAME, OnFailed, Summary, log_failure, segment_jobs, write_failures
from .items import SegmentSettings
from .naming import Job, collect_jobs, collect_uri_jobs, is_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentRequest:
    inputs: tuple[str, ...]
    output: str
    settings: SegmentSettings = SegmentSettings()
    engine: EngineOptions = EngineOptions()
    recursive: bool = False
    overwrite: bool = False
    progress: bool = True
    ray: str | None = None            # None: this process; "": a local Ray runtime; else the cluster's address
    ray_workers: int | None = None


@dataclass(frozen=True)
class Report:
    """Where a run's messages go while it runs (the CLI prints them; the default logs them)."""

    failed: OnFailed = log_failure               # (printable path, reason) for each input that failed
    note: Callable[[str], None] = log.info       # one-line status (what Ray runs on, a file not written)


@dataclass
class SegmentResult:
    summary: Summary
    ran: str                       # what ran: the provider, or the Ray line
    out: str                       # OUT, printable
    failures_file: str | None = None   # failures.csv written (printable), None when no failure
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.summary.exit_code

    def line(self) -> str:
        trailer = f"; see {self.failures_file}" if self.failures_file else ""
        return self.summary.line(f" on {self.ran} -> {self.out}") + trailer


def segment(request: SegmentRequest, report: Report = Report()) -> SegmentResult:
    """Run ``request``; per-file failures go to ``report.failed`` and the summary, never raised."""
    if not request.inputs:
        raise UnetliteError("give at least one INPUT (image file, folder or glob)")
    uris = [spec for spec in (*request.inputs, request.output) if is_uri(spec)]
    if request.ray is None:
        if uris:
            raise UnetliteError(f"{uris[0]}: URIs need --ray")
        if request.ray_workers is not None:
            raise UnetliteError("--ray-workers needs --ray")
    else:
        from .distributed import import_ray
        import_ray()
        if uris:
            return _segment_uris(request, report)
    return _segment_local(request, report, Path(request.output))


def _run_jobs(request: SegmentRequest, model, jobs: Sequence, settings: SegmentSettings, report: Report,
              on_written=None) -> tuple[Summary, str]:
    """The jobs here, or on Ray (``request.ray``); returns the summary and what ran."""
    if request.ray is None:
        return segment_jobs(model, jobs, settings, on_written, progress=request.progress,
                            on_failed=report.failed), model.provider
    from .distributed import segment_jobs_on_ray
    engine = request.engine
    return segment_jobs_on_ray(model, jobs, settings, on_written, progress=request.progress,
                               providers=engine.providers, threads=engine.threads, precision=engine.precision,
                               address=request.ray or None, workers=request.ray_workers,
                               on_failed=report.failed, note=report.note)


def _open_model(request: SegmentRequest):
    """The Segmenter; with Ray the driver's view of the model (read from the file, no session)."""
    if request.ray is None:
        return open_segmenter(request.engine)
    from .distributed import driver_model
    return driver_model(request.engine.model, request.engine.int8)


def _segment_locked(request: SegmentRequest, report: Report, out: Path, jobs: Sequence[Job]) -> tuple[Summary, str]:
    """With OUT locked: clear stale temps, load the model, plan the resume, run."""
    from .manifest import Manifest, OutputConfig, file_sha256, load_records, make_record, plan_resume

    removed = remove_stale_temps(out)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run", removed)
    model = _open_model(request)
    settings = request.settings
    threshold = model.contract.resolve_threshold(settings.threshold)
    config = OutputConfig(settings.fmt, threshold, file_sha256(model.path), settings.clean, settings.tile,
                          settings.tta)
    plan = plan_resume(jobs, config, load_records(out), request.overwrite)
    manifest = Manifest(out)
    try:
        summary, ran = _run_jobs(request, model, plan.todo, settings, report,
                                 lambda job, size, n: manifest.append(make_record(job, config, size, n)))
    finally:
        manifest.close()
    summary.skipped = len(plan.done)
    summary.redone = {v.value: n for v, n in plan.redone.items()}
    return summary, ran


def _segment_local(request: SegmentRequest, report: Report, out: Path) -> SegmentResult:
    """A run whose OUT is a local folder: locked, manifest-based resume, failures.csv."""
    from .manifest import RunLock, load_records, recorded_outputs

    if out.exists() and not out.is_dir():
        raise UnetliteError(f"{display_path(out)}: -o must be a folder, and this is an existing file")
    records = load_records(out) if out.is_dir() else {}
    collected = collect_jobs(request.inputs, out, request.settings.fmt, request.recursive,
                             exclude=recorded_outputs(out, records))
    for path, reason in collected.problems:
        report.failed(path, reason)
    if not collected.jobs:
        raise UnetliteError("no input images found")
    try:
        with RunLock(out), stop_on_signals():
            summary, ran = _segment_locked(request, report, out, collected.jobs)
    except UnetliteError:
        raise
    except OSError as exc:
        raise UnetliteError(f"{display_path(out)}: cannot write here ({exc.strerror or exc})") from None
    summary.failed[:0] = collected.problems
    return _finish(summary, ran, out, report)


def _finish(summary: Summary, ran: str, out: Path, report: Report) -> SegmentResult:
    """failures.csv (or a note saying it could not be written)."""
    result = SegmentResult(summary, ran, display_path(out))
    failures = out / FAILURES_NAME
    if summary.failed:
        error = write_failures(failures, summary.failed)
        if error:
            result.notes.append(error)
            report.note(error)
        else:
            result.failures_file = display_path(failures)
    elif failures.is_file() and not summary.interrupted:
        failures.unlink()  # it described an earlier run, whose failures are all done now
    return result


def _segment_uris(request: SegmentRequest, report: Report) -> SegmentResult:
    """`segment --ray` when an INPUT or OUT is a URI (s3://, gs://, file://...): the same naming,
    formats, failures.csv and exit codes; resume by existing outputs (no manifest)."""
    from .distributed import driver_model, pending, segment_jobs_on_ray, write_output
    from .batch import failures_csv

    settings = request.settings
    jobs, problems = collect_uri_jobs(request.inputs, str(request.output), settings.fmt, request.recursive)
    for spec, reason in problems:
        report.failed(spec, reason)
    if not jobs:
        raise UnetliteError("no input images found")
    model = driver_model(request.engine.model, request.engine.int8)
    todo, done = pending(jobs, request.overwrite)
    engine = request.engine
    with stop_on_signals():
        summary, ran = segment_jobs_on_ray(model, todo, settings, progress=request.progress,
                                           providers=engine.providers, threads=engine.threads,
                                           precision=engine.precision, address=request.ray or None,
                                           workers=request.ray_workers, on_failed=report.failed, note=report.note)
    summary.skipped = done
    summary.failed[:0] = problems
    out = str(request.output).rstrip("/")
    result = SegmentResult(summary, ran, out)
    if summary.failed:
        try:
            write_output(f"{out}/failures.csv", failures_csv(summary.failed))
            result.failures_file = f"{out}/failures.csv"
        except (OSError, ValueError) as exc:
            message = f"cannot write {out}/failures.csv ({one_line(exc)})"
            result.notes.append(message)
            report.note(message)
    return result

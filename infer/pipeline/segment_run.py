"""A whole `segment` run: collect the jobs, lock OUT, resume from its manifest, run them locally or on
Ray, write the failures file.

The failures file is ``OUT/unetlite-failures.csv`` (:data:`FAILURES_NAME`), a name that is clearly the
tool's: it is replaced after a run with failures and removed after a clean one, and a user's own
``failures.csv`` in OUT (``-o`` may be the input folder) is never read, replaced or removed.
Returns a :class:`SegmentResult`; usage errors raise UnetliteError (exit 2).
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
    _check_photo_options(request.settings)
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


def _check_photo_options(settings: SegmentSettings) -> None:
    """--background / --edge: a usage error (exit 2) for a background with another format than
    composite or an unreadable PATH background (decoded here, once, before anything is written)."""
    if getattr(settings, "background", None) is None and getattr(settings, "edge", "hard") == "hard":
        return
    from .backgrounds import BackgroundError, check_photo_settings
    try:
        check_photo_settings(settings.fmt, settings.background, settings.edge)
    except BackgroundError as exc:
        raise UnetliteError(str(exc)) from None


def _photo_config(settings: SegmentSettings) -> dict:
    """The manifest's background/edge entries (None where they leave the pixels as they were)."""
    from .backgrounds import photo_config
    return photo_config(settings.fmt, getattr(settings, "background", None), getattr(settings, "edge", "hard"))


def _segment_locked(request: SegmentRequest, report: Report, out: Path, jobs: Sequence[Job], model) -> tuple[Summary, str]:
    """With OUT locked: clear stale temps, plan the resume, run."""
    from .manifest import Manifest, OutputConfig, file_sha256, load_records, make_record, plan_resume

    removed = remove_stale_temps(out)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run", removed)
    settings = request.settings
    threshold = model.contract.resolve_threshold(settings.threshold)
    config = OutputConfig(settings.fmt, threshold, file_sha256(model.path), settings.clean, settings.tile,
                          settings.tta, **_photo_config(settings))
    plan = plan_resume(jobs, config, load_records(out, quiet=True), request.overwrite)  # warned before
    manifest = Manifest(out)
    try:
        if plan.todo:
            manifest.open()  # an unsafe manifest stops the run before any output is written
        summary, ran = _run_jobs(request, model, plan.todo, settings, report,
                                 lambda job, size, n: manifest.append(make_record(job, config, size, n)))
    finally:
        manifest.close()
    summary.skipped = len(plan.done)
    summary.redone = {v.value: n for v, n in plan.redone.items()}
    return summary, ran


def _folder_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _segment_local(request: SegmentRequest, report: Report, out: Path) -> SegmentResult:
    """A run whose OUT is a local folder: locked, manifest-based resume, failures file.

    The model is opened before OUT is created or locked: a run that cannot start (a bad --model,
    --providers cuda without a GPU, no Ray) leaves no OUT folder and no lock behind. OUT's identity
    is checked at the end: a folder deleted or replaced during the run is said in the summary (exit 1).
    """
    from .manifest import RUN_FILE_NAMES, RunLock, load_records, recorded_outputs

    if out.exists() and not out.is_dir():
        raise UnetliteError(f"{display_path(out)}: -o must be a folder, and this is an existing file")
    records = load_records(out) if out.is_dir() else {}
    collected = collect_jobs(request.inputs, out, request.settings.fmt, request.recursive,
                             exclude=recorded_outputs(out, records),
                             run_files=[out / name for name in (*RUN_FILE_NAMES, FAILURES_NAME)])
    for path, reason in collected.problems:
        report.failed(path, reason)
    if not collected.jobs:
        raise UnetliteError("no input images found")
    created = not out.exists()
    try:
        with stop_on_signals():
            model = _open_model(request)
            with RunLock(out):
                out_id = _folder_id(out)
                summary, ran = _segment_locked(request, report, out, collected.jobs, model)
    except UnetliteError:
        _remove_if_ours(out, created)
        raise
    except OSError as exc:
        _remove_if_ours(out, created)
        raise UnetliteError(f"{display_path(out)}: cannot write here ({exc.strerror or exc})") from None
    gone = _folder_id(out) != out_id
    if gone:
        summary.errors.append(f"{display_path(out)} was deleted or replaced during the run: its outputs are gone "
                              f"(run again to redo them)")
    summary.failed[:0] = collected.problems
    return _finish(summary, ran, out, report, write=not gone)


def _remove_if_ours(out: Path, created: bool) -> None:
    """A run that could not start: remove OUT if this run created it and left only its lock there."""
    if not created:
        return
    from .manifest import LOCK_NAME
    try:
        names = set(os.listdir(out))
        if names <= {LOCK_NAME}:
            if names:
                os.unlink(out / LOCK_NAME)
            os.rmdir(out)
    except OSError:
        pass


def _finish(summary: Summary, ran: str, out: Path, report: Report, write: bool = True) -> SegmentResult:
    """The failures file (or a note saying it could not be written). Only the tool's own
    FAILURES_NAME is ever replaced or removed: a user's failures.csv in OUT is never touched."""
    result = SegmentResult(summary, ran, display_path(out))
    failures = out / FAILURES_NAME
    if summary.failed and write:
        error = write_failures(failures, summary.failed)
        if error:
            result.notes.append(error)
            report.note(error)
        else:
            result.failures_file = display_path(failures)
    elif not summary.interrupted and not summary.errors and os.path.isfile(failures) \
            and not os.path.islink(failures):
        try:
            failures.unlink()  # it described an earlier run, whose failures are all done now
        except OSError:
            pass
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
            write_output(f"{out}/{FAILURES_NAME}", failures_csv(summary.failed))
            result.failures_file = f"{out}/{FAILURES_NAME}"
        except (OSError, ValueError) as exc:
            message = f"cannot write {out}/{FAILURES_NAME} ({one_line(exc)})"
            result.notes.append(message)
            report.note(message)
    return result

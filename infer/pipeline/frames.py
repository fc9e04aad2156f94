"""The frame loop behind ``unetlite video``: read, segment, render, write or show, frame by frame.

Per frame the work is the shared pipeline's (``items``): prepare (one resize, BGR frames fed with
the contract's channel order flipped), infer (``tta``: flip-averaged), temporal smoothing at model
resolution, the one post-processing (``clean``), the format registry's render. Decoding runs in a
reader thread (io.sources) so it overlaps inference; the sink (io.sinks) checks the file before
it appears under its name. Ctrl-C, SIGTERM and SIGHUP stop reading and save the frames done so far.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..engine.postprocess import Segmentation
from ..io import formats
from ..io.images import DEFAULT_MAX_PIXELS
from ..io.sinks import Display, VideoSink, WallClockWriter  # noqa: F401  (VideoSink: type hints)
from ..io.sources import (FrameReader, LatestFrameReader, QueuedFrameReader, Reconnect, SourceError, SourceInfo,
                          open_source, source_kind)
from ..signals import held_signals, signal_number
from .backgrounds import Background, BackgroundSpec
from .items import post_process, prepare_pixels

log = logging.getLogger(__name__)

DEFAULT_BACKGROUND = (0, 255, 0)  # RGB: green screen
DEFAULT_RECONNECT = 3
# A file is reported as truncated (exit 1) when fewer frames than this fraction of what its
# container declares could be decoded; a frame or two of difference is left to container quirks.
MIN_DECODED_FRACTION = 0.98


def video_format(name: str) -> str:
    """A format a video can carry, old spellings resolved (video's ``cutout`` is ``composite``)."""
    name = formats.VIDEO_ALIASES.get(name, name)
    if name not in formats.video_formats():
        raise ValueError(f"unknown video format {name!r}; choose from {', '.join(formats.video_formats())}")
    return name


@dataclass(frozen=True)
class VideoOptions:
    """How frames are segmented and rendered."""

    fmt: str = "overlay"
    background: tuple[int, int, int] = DEFAULT_BACKGROUND  # RGB, for --format composite
    smooth: float = 0.0                 # temporal EMA weight of the previous probability map
    threshold: float | None = None      # None: the model contract's
    max_frames: int | None = None
    live: bool | None = None            # None: decided by the source type
    fourcc: str | None = None           # None: chosen from the output extension
    reconnect: int = DEFAULT_RECONNECT  # attempts to reopen a live network stream that fails
    clean: bool = False                 # keep the main foreground regions, fill their holes
    tta: bool = False                   # average with the mirrored frame (2x the work)
    max_pixels: int | None = DEFAULT_MAX_PIXELS   # larger frames are refused (SourceError)
    scene: BackgroundSpec | None = None  # --background blur|PATH|R,G,B: the subject on it (format composite)
    edge: str = "soft"                  # soft: guided-filter alpha from the frame; hard: the binary mask
    transparent: bool = False           # --format cutout into a container with alpha: BGRA frames


@dataclass
class FrameResult:
    """One processed frame, handed to the ``on_frame`` hook."""

    index: int                  # position in the source
    image: np.ndarray           # BGR uint8 as decoded
    probability: np.ndarray     # float32 HxW at frame size, after smoothing
    mask: np.ndarray            # uint8 HxW, 1 = foreground
    output: np.ndarray          # BGR uint8 frame as written


@dataclass
class VideoSummary:
    """What a run did; ``line()`` is the one line ``unetlite video`` prints, ``exit_code`` its status."""

    source: str
    frames_read: int
    frames_segmented: int
    dropped: int
    seconds: float
    output: Path | None
    live: bool
    stop_signal: int | None = None   # the signal that ended the run early (SIGINT for Ctrl-C)
    output_requested: bool = False
    frames_written: int = 0          # live sources: wall-time slots, so repeats of held frames count
    output_fps: float = 0.0
    declared: int = 0                # frames the container declared, when the source was read to its end
    reconnects: int = 0
    stream_lost: bool = False        # a network stream ended and could not be reopened
    skipped: int = 0                 # frames over --max-pixels mid-run (the source grew), not written

    @property
    def interrupted(self) -> bool:
        return self.stop_signal is not None

    @property
    def truncated(self) -> bool:
        """Far fewer frames decoded than the container declared (a cut or damaged file)."""
        return self.declared > 0 and self.frames_read < MIN_DECODED_FRACTION * self.declared

    @property
    def exit_code(self) -> int:
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 1 if self.truncated or self.stream_lost or self.skipped else 0

    @property
    def mean_fps(self) -> float:
        return self.frames_segmented / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        where = str(self.output) if self.output else "none (shown only)" if not self.output_requested else \
            "none (no frame was written)"
        if self.output and self.live and self.output_fps > 0:
            where += (f" ({self.frames_written} frames at {self.output_fps:g} fps = "
                      f"{self.frames_written / self.output_fps:.1f} s, wall time)")
        text = (f"{self.source}: {self.frames_read} frames read, {self.frames_segmented} segmented, "
                f"{self.dropped} dropped, {self.mean_fps:.1f} fps mean, output {where}")
        notes = []
        if self.declared and self.frames_read < self.declared:
            notes.append(f"decoded {self.frames_read} of {self.declared} frames the container declared"
                         + (" (truncated or damaged file)" if self.truncated else ""))
        if self.skipped:
            notes.append(f"{self.skipped} frames over --max-pixels skipped")
        if self.stream_lost:
            notes.append(f"stream ended after {self.frames_read} frames; reconnected {self.reconnects} times")
        elif self.reconnects:
            notes.append(f"reconnected {self.reconnects} times")
        text += "".join(f"; {note}" for note in notes)
        if self.stop_signal is not None:
            text += " (interrupted)" if self.stop_signal == signal.SIGINT else \
                f" (interrupted by {signal.Signals(self.stop_signal).name})"
        return text


class TemporalSmoother:
    """Exponential smoothing of the probability map, p_t = a*p_{t-1} + (1-a)*p_new:
    cuts mask flicker between frames at the cost of a little lag. alpha 0 turns it off."""

    def __init__(self, alpha: float):
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"smoothing alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.state: np.ndarray | None = None

    def __call__(self, probability: np.ndarray) -> np.ndarray:
        if self.alpha == 0.0:
            return probability
        if self.state is None or self.state.shape != probability.shape:
            self.state = probability.astype(np.float32, copy=True)
        else:
            cv2.addWeighted(self.state, self.alpha, probability, 1.0 - self.alpha, 0.0, dst=self.state)
        return self.state.copy()


class FramePipeline:
    """BGR frame -> probability -> rendered BGR frame, with the smoothing state.

    ``prepare`` (model input), ``infer`` and ``finish`` (smooth, post-process, render) are separate
    steps so the frame loop can overlap them and several streams can share one batch.
    """

    def __init__(self, segmenter, options: VideoOptions):
        self.segmenter = segmenter
        self.options = options
        self.fmt = video_format(options.fmt)
        self.threshold = segmenter.contract.resolve_threshold(options.threshold)
        self.smoother = TemporalSmoother(options.smooth)
        legacy = tuple(options.background) if isinstance(options.background, tuple) else DEFAULT_BACKGROUND
        self.style = formats.Style(background=legacy).reversed()  # frames are BGR
        if options.edge not in ("soft", "hard"):
            raise ValueError(f"unknown edge {options.edge!r}; choose soft or hard")
        self.edge = options.edge
        scene = options.scene
        if scene is None and self.fmt == "composite":  # the flat colour, now with soft edges too
            scene = BackgroundSpec("color", color=legacy)
        self.background = Background(scene, "BGR") if scene is not None and not options.transparent else None

    def prepare(self, bgr: np.ndarray) -> np.ndarray:
        """The model's input for one frame; SourceError over --max-pixels (a stream may grow mid-run)."""
        limit = self.options.max_pixels
        if limit is not None and bgr.shape[0] * bgr.shape[1] > limit:
            raise SourceError("frame", f"{bgr.shape[1]}x{bgr.shape[0]} pixels is over the limit of {limit} "
                                       f"(--max-pixels)")
        return prepare_pixels(self.segmenter, bgr, "BGR")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Model-resolution probabilities for prepared inputs (``--tta``: flip-averaged)."""
        return self.segmenter.run(batch, tta=True) if self.options.tta else self.segmenter.run(batch)

    def post(self, bgr: np.ndarray, probability: np.ndarray) -> Segmentation:
        """Smooth at model resolution, then the one post-processing to the frame's size."""
        return post_process(self.smoother(probability), bgr.shape[:2], self.threshold, self.options.clean)

    def segment(self, bgr: np.ndarray) -> Segmentation:
        """The shared steps: prepare, infer, smooth at model resolution, post-process to the frame's size."""
        return self.post(bgr, self.infer(self.prepare(bgr)[None])[0])

    def render(self, bgr: np.ndarray, seg: Segmentation) -> np.ndarray:
        """The frame to write: BGR uint8 (BGRA for a transparent cutout). Backgrounds, cutouts and the
        overlay use the soft alpha (engine.alpha) unless --edge hard."""
        from ..engine.alpha import alpha_for, blend, premultiplied_cutout
        if self.options.transparent:
            return premultiplied_cutout(bgr, alpha_for(self.edge, bgr, seg.mask))
        if self.background is not None:
            return self.background.composite(bgr, seg.mask, self.edge)
        if self.fmt == "overlay" and self.edge == "soft":
            tint = np.empty_like(bgr)
            tint[:] = self.style.overlay
            return blend(cv2.addWeighted(bgr, 0.5, tint, 0.5, 0.0), bgr, alpha_for("soft", bgr, seg.mask))
        picture = formats.get(self.fmt).render(bgr, seg.probability, seg.mask, self.style)
        return cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR) if picture.ndim == 2 else picture

    def finish(self, index: int, bgr: np.ndarray, probability: np.ndarray) -> FrameResult:
        """Post-process and render one frame from its model-resolution probability."""
        seg = self.post(bgr, probability)
        return FrameResult(index, bgr, seg.probability, seg.mask, self.render(bgr, seg))

    def __call__(self, index: int, bgr: np.ndarray) -> FrameResult:
        seg = self.segment(bgr)
        return FrameResult(index, bgr, seg.probability, seg.mask, self.render(bgr, seg))


def check_frame_size(source: str, info: SourceInfo, max_pixels: int | None) -> None:
    """SourceError (exit 2) before any frame is processed when the source's frames are over the limit."""
    if max_pixels is not None and info.width * info.height > max_pixels:
        raise SourceError(source, f"{info.width}x{info.height} frames are over the limit of {max_pixels} pixels "
                                  f"(--max-pixels)")


def process_video(segmenter, source: str, output: str | os.PathLike | None = None,
                  options: VideoOptions = VideoOptions(), capture: cv2.VideoCapture | None = None,
                  display: Display | None = None,
                  on_frame: Callable[[FrameResult], None] | None = None) -> VideoSummary:
    """Segment every frame of a file (or the newest frames of a live source) and write/show them.

    ``capture`` is an already opened source (else ``source`` is opened). ``on_frame`` is called
    after each frame is written. Ctrl-C (KeyboardInterrupt, or ``Stopped`` for SIGTERM/SIGHUP
    under ``stop_on_signals``) ends the run early with the output saved and ``stop_signal`` set;
    any other error removes the partial output and propagates. VideoNotSaved: the finished file
    did not reopen with every frame written.
    """
    cap = capture if capture is not None else open_source(source)
    reader: FrameReader | None = None
    try:
        info = SourceInfo.of(cap)
        check_frame_size(source, info, options.max_pixels)
        kind = source_kind(source)
        live = kind.live if options.live is None else options.live
        pipeline = FramePipeline(segmenter, options)
        if live:  # a file read live is paced at its own frame rate, like a camera
            reconnect = Reconnect(source, options.reconnect) if kind.can_reconnect and options.reconnect > 0 else None
            reader = LatestFrameReader(cap, pace_fps=None if kind.live else info.fps, name=source,
                                       reconnect=reconnect)
        else:
            reader = QueuedFrameReader(cap, limit=options.max_frames, name=source)
        from ..io.video_av import open_sink
        sink = open_sink(output, info.fps, options.fourcc, alpha=options.transparent) if output is not None else None
        log.info("%s: %dx%d at %.3g fps, %s frames, %s mode; model input %dx%d on %s", source, info.width,
                 info.height, info.fps, info.frame_count or "unknown", "live" if live else "file",
                 *segmenter.contract.input_size, segmenter.provider)
        return _run(pipeline, reader, sink, display, on_frame, options, info, live, source)
    finally:
        if reader is None or not reader.running:  # never free a capture a blocked read still uses
            (reader.capture if reader is not None else cap).release()  # the reader may have reopened it
        if display is not None:
            display.close()


def _run(pipeline: FramePipeline, reader: FrameReader, sink: VideoSink | None, display: Display | None,
         on_frame: Callable[[FrameResult], None] | None, options: VideoOptions, info: SourceInfo, live: bool,
         source: str) -> VideoSummary:
    from tqdm import tqdm

    total = options.max_frames if live else (min(filter(None, (info.frame_count, options.max_frames)), default=None))
    clock = WallClockWriter(sink) if live and sink is not None else None
    done = 0
    submitted = 0
    oversized: list[str] = []    # frames over --max-pixels mid-run (a stream that grew): skipped
    stop_signal: int | None = None
    source_ended = False  # the reader reached the end by itself (not a user stop or --max-frames)
    start = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc="video", disable=None, leave=False)
    # Render + encode of frame N runs in a worker while frame N+1 is decoded (reader thread) and
    # inferred (here): the three overlap. on_frame and the window follow, here, once N is written.
    worker = ThreadPoolExecutor(1, thread_name_prefix="unetlite-render")
    pending: Future | None = None

    def render_and_write(index: int, bgr: np.ndarray, probability: np.ndarray) -> FrameResult:
        result = pipeline.finish(index, bgr, probability)
        if clock is not None:
            clock.push(result.output)
        elif sink is not None:
            sink.write(result.output)
        return result

    def complete(future: Future) -> bool:
        """Count a written frame, then the hooks; False when the window was closed."""
        nonlocal done
        with held_signals():
            result = future.result()
            done += 1
        bar.update()
        if on_frame is not None:
            on_frame(result)
        return display is None or display.show(result.output)

    try:
        reader.start()
        try:
            for index, bgr in reader:
                try:
                    x = pipeline.prepare(bgr)
                except SourceError as exc:
                    oversized.append(exc.reason)
                    continue
                probability = pipeline.infer(x[None])[0]
                if pending is not None:
                    previous, pending = pending, None
                    if not complete(previous):
                        break
                pending = worker.submit(render_and_write, index, bgr, probability)
                submitted += 1
                if options.max_frames and submitted >= options.max_frames:
                    break
            else:
                source_ended = True
            if pending is not None:
                previous, pending = pending, None
                complete(previous)
        finally:
            reader.close()
            if pending is not None:  # stopped or failed with a frame in flight: let its write finish
                try:
                    pending.result()
                    done += 1
                except BaseException:  # noqa: BLE001  (the first error is the one reported)
                    pass
            worker.shutdown(wait=True)
    except KeyboardInterrupt as exc:
        stop_signal = signal_number(exc)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    saved = None
    with held_signals(reraise=False) as late:  # the file is being finished: a late stop changes nothing
        if clock is not None:
            clock.finish()
        if sink is not None:
            if sink.frames == 0:
                sink.abort()
            else:
                saved = sink.commit()
    if late and stop_signal is None:
        stop_signal = late[0]
    if done == 0 and stop_signal is None:
        raise SourceError(source, "no frames could be decoded")
    if oversized:
        log.warning("%s: %d frame(s) skipped: %s", source, len(oversized), oversized[0])
    return VideoSummary(source=source, frames_read=reader.frames_read, frames_segmented=done, skipped=len(oversized),
                        dropped=reader.dropped, seconds=seconds, output=saved, live=live, stop_signal=stop_signal,
                        output_requested=sink is not None, frames_written=sink.frames if sink is not None else 0,
                        output_fps=info.fps, declared=info.frame_count if source_ended else 0,
                        reconnects=reader.reconnects, stream_lost=reader.lost)



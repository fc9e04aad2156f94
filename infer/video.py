"""``unetlite video``: segment a video file, camera or stream frame by frame.

Per frame the work is kept to a minimum: one resize to the model's input size, one
``Segmenter.run``, temporal smoothing, then the shared ``postprocess`` (probability back
to frame size, threshold) and cv2 blending. Decoding runs in a reader thread (see
stream.py) so it overlaps inference.

Success means a playable file: the video is written under a hidden temporary name beside
the target; when done, the finished file is reopened and must hold every frame written,
and only then is it fsynced and renamed (a full disk gives exit 1 and nothing under the
final name). Ctrl-C, SIGTERM and SIGHUP stop reading and save the frames done so far
(exit 130/143/129). Live sources are written by wall time, so dropped frames never
shorten the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from . import outputs
from .cliargs import add_engine_arguments, open_segmenter, positive_int, whole_number
from .imageio import WriteError, commit_temp, display_path, make_temp, remove_stale_temps
from .postprocess import Segmentation, postprocess
from .session import Segmenter, prepare_input
from .signals import exit_code, held_signals, signal_number, stop_on_signals
from .stream import (FrameReader, LatestFrameReader, QueuedFrameReader, Reconnect, SourceError, SourceInfo,
                     is_live, is_url, open_source)

log = logging.getLogger(__name__)

VIDEO_FORMATS = ("overlay", "mask", "prob", "cutout", "side-by-side")
# container (by extension) -> codec that OpenCV's pip wheels can encode (no H.264 encoder there)
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "XVID"}
DEFAULT_BACKGROUND = (0, 255, 0)  # RGB: green screen
WINDOW_TITLE = "unetlite video (q or Esc quits)"
DEFAULT_RECONNECT = 3
# A file is reported as truncated (exit 1) when fewer frames than this fraction of what its
# container declares could be decoded; a frame or two of difference is left to container quirks.
MIN_DECODED_FRACTION = 0.98


class VideoWriteError(Exception):
    """The output video cannot be written (one-line message naming it); nothing was processed."""


class VideoNotSaved(VideoWriteError):
    """Frames were processed but the finished file failed its check or could not be made durable."""


class DisplayError(Exception):
    """No window can be shown here (one-line reason)."""


@dataclass(frozen=True)
class VideoOptions:
    """How frames are segmented and rendered."""

    fmt: str = "overlay"
    background: tuple[int, int, int] = DEFAULT_BACKGROUND  # RGB, for --format cutout
    smooth: float = 0.0                 # temporal EMA weight of the previous probability map
    threshold: float | None = None      # None: the model contract's
    max_frames: int | None = None
    live: bool | None = None            # None: decided by the source type
    fourcc: str | None = None           # None: chosen from the output extension
    reconnect: int = DEFAULT_RECONNECT  # attempts to reopen a live network stream that fails


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
        return 1 if self.truncated or self.stream_lost else 0

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
    """BGR frame -> probability -> rendered BGR frame, with the smoothing state."""

    def __init__(self, segmenter: Segmenter, options: VideoOptions):
        contract = segmenter.contract
        self.segmenter = segmenter
        self.fmt = options.fmt
        self.threshold = contract.resolve_threshold(options.threshold)
        self.smoother = TemporalSmoother(options.smooth)
        self.background_bgr = tuple(reversed(options.background))
        self.overlay_bgr = tuple(reversed(outputs.OVERLAY_COLOR))
        # Frames arrive as BGR. Preparing them with the contract's channel order flipped feeds the
        # model exactly what prepare(rgb, contract) would, without converting the full frame.
        flipped = "RGB" if contract.channel_order.upper() == "BGR" else "BGR"
        self.bgr_contract = dataclasses.replace(contract, channel_order=flipped)
        if options.fmt not in VIDEO_FORMATS:
            raise ValueError(f"unknown video format {options.fmt!r}; choose from {', '.join(VIDEO_FORMATS)}")

    def segment(self, bgr: np.ndarray) -> Segmentation:
        """Smoothed at model resolution, then the shared post-processing to the frame's size."""
        x = prepare_input(bgr, self.bgr_contract, dtype=self.segmenter.input_dtype)
        prob = self.smoother(self.segmenter.run(x[None])[0])
        return postprocess(prob, bgr.shape[:2], self.threshold)

    def render(self, bgr: np.ndarray, seg: Segmentation) -> np.ndarray:
        """The frame to write, BGR uint8 3-channel (the outputs helpers don't care about channel order)."""
        if self.fmt == "overlay":
            return outputs.overlay(bgr, seg.mask, color=self.overlay_bgr)
        if self.fmt == "cutout":
            return outputs.composite(bgr, seg.mask, background=self.background_bgr)
        if self.fmt == "side-by-side":
            return outputs.side_by_side(bgr, seg.mask)
        grey = outputs.mask_image(seg.mask) if self.fmt == "mask" else outputs.probability_image(seg.probability)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)

    def __call__(self, index: int, bgr: np.ndarray) -> FrameResult:
        seg = self.segment(bgr)
        return FrameResult(index, bgr, seg.probability, seg.mask, self.render(bgr, seg))


def count_frames(path: str | os.PathLike, limit: int) -> int:
    """Frames a fresh VideoCapture decodes from ``path`` (at most ``limit`` + 1); -1 when it
    does not open at all (e.g. an MP4 whose index was never written)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return -1
        count = 0
        while count <= limit and cap.grab():
            count += 1
        return count
    finally:
        cap.release()


class VideoSink:
    """cv2.VideoWriter into a hidden temporary file beside ``path``; ``commit()`` checks the
    finished file and renames it.

    The writer opens on the first frame, so its size is the rendered frame's (side-by-side is
    three frames wide). The temp name follows imageio's pattern, so the next run removes what
    a killed one left.
    """

    def __init__(self, path: str | os.PathLike, fps: float, fourcc: str | None = None):
        self.path = Path(path)
        self.fps = fps
        self.fourcc = fourcc or FOURCC.get(self.path.suffix.lower(), "mp4v")
        self.tmp: Path | None = None
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None

    def write(self, bgr: np.ndarray) -> None:
        if self._writer is None:
            try:  # the real extension stays last: FFmpeg picks the container from it
                self.tmp = make_temp(self.path, keep_suffix=True)
            except WriteError as exc:
                raise VideoWriteError(str(exc)) from None
            height, width = bgr.shape[:2]
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                                           (width, height))
            if not self._writer.isOpened():
                self.abort()
                raise VideoWriteError(f"{display_path(self.path)}: cannot write video (codec {self.fourcc} not "
                                      f"available for {self.path.suffix or 'this extension'}, or folder not writable)")
        self._writer.write(bgr)
        self.frames += 1

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the container's index: the file is playable after this
            self._writer = None

    def commit(self) -> Path:
        """Reopen the finished temp file and count its frames; only when it holds every frame
        written is it fsynced and renamed to ``path``. Otherwise it is removed (VideoNotSaved)."""
        self._release()
        assert self.tmp is not None, "commit() before any frame was written"
        found = count_frames(self.tmp, self.frames)
        if found != self.frames:
            self.tmp.unlink(missing_ok=True)
            what = "could not be reopened" if found < 0 else f"holds {found} of the {self.frames} frames written"
            raise VideoNotSaved(f"{display_path(self.path)}: the written video {what} (disk full?)")
        try:
            commit_temp(self.tmp, self.path)
        except WriteError as exc:
            raise VideoNotSaved(str(exc)) from None
        return self.path

    def abort(self) -> None:
        self._release()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class WallClockWriter:
    """Writes a live source at the sink's fixed fps by wall time: each frame slot that elapsed
    gets the newest frame processed by then (held frames are repeated), so the file lasts as
    long as the capture however many frames were dropped."""

    def __init__(self, sink: VideoSink, clock: Callable[[], float] = time.monotonic):
        self.sink = sink
        self.clock = clock
        self.start: float | None = None
        self.pending: np.ndarray | None = None  # the newest frame, not yet written

    def _slot(self, now: float) -> float:
        assert self.start is not None
        return (now - self.start) * self.sink.fps

    def _fill(self, slots: int) -> None:
        while self.sink.frames < slots:
            self.sink.write(self.pending)

    def push(self, bgr: np.ndarray) -> None:
        now = self.clock()
        if self.start is None:
            self.start = now
        else:  # slots that ended before now show the frame that was newest then
            self._fill(int(self._slot(now)))
        self.pending = bgr

    def finish(self) -> None:
        """Fill every slot up to and including the current one with the newest frame."""
        if self.pending is not None:
            self._fill(int(self._slot(self.clock())) + 1)
            self.pending = None


def display_problem() -> str | None:
    """Why no window can be shown here, or None. Checked before touching HighGUI, because a
    Qt build with no display aborts the whole process instead of raising."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


class Display:
    """An OpenCV window with the live frame rate drawn on each frame."""

    def __init__(self, title: str = WINDOW_TITLE):
        problem = display_problem()
        if problem:
            raise DisplayError(problem)
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:  # opencv-python-headless and other builds without a GUI
            raise DisplayError(f"this OpenCV has no GUI support ({str(exc).strip().splitlines()[-1]})") from None
        self._last = time.perf_counter()
        self.fps = 0.0

    def show(self, bgr: np.ndarray) -> bool:
        """Show a frame; False when the user pressed q or Esc."""
        now = time.perf_counter()
        rate = 1.0 / max(now - self._last, 1e-6)
        self._last = now
        self.fps = rate if self.fps == 0.0 else 0.9 * self.fps + 0.1 * rate
        frame = bgr.copy()
        cv2.putText(frame, f"{self.fps:.1f} fps", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(frame, f"{self.fps:.1f} fps", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2,
                    cv2.LINE_AA)
        cv2.imshow(self.title, frame)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


def process_video(segmenter: Segmenter, source: str, output: str | os.PathLike | None = None,
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
        live = is_live(source) if options.live is None else options.live
        pipeline = FramePipeline(segmenter, options)
        if live:  # a file read live is paced at its own frame rate, like a camera
            reconnect = Reconnect(source, options.reconnect) if is_url(source) and options.reconnect > 0 else None
            reader = LatestFrameReader(cap, pace_fps=None if is_live(source) else info.fps, name=source,
                                       reconnect=reconnect)
        else:
            reader = QueuedFrameReader(cap, limit=options.max_frames, name=source)
        sink = VideoSink(output, info.fps, options.fourcc) if output is not None else None
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
    stop_signal: int | None = None
    source_ended = False  # the reader reached the end by itself (not a user stop or --max-frames)
    start = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc="video", disable=None, leave=False)
    try:
        reader.start()
        try:
            for index, bgr in reader:
                result = pipeline(index, bgr)
                with held_signals():
                    if clock is not None:
                        clock.push(result.output)
                    elif sink is not None:
                        sink.write(result.output)
                    done += 1
                bar.update()
                if on_frame is not None:
                    on_frame(result)
                if display is not None and not display.show(result.output):
                    break
                if options.max_frames and done >= options.max_frames:
                    break
            else:
                source_ended = True
        finally:
            reader.close()
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
    return VideoSummary(source=source, frames_read=reader.frames_read, frames_segmented=done,
                        dropped=reader.dropped, seconds=seconds, output=saved, live=live, stop_signal=stop_signal,
                        output_requested=sink is not None, frames_written=sink.frames if sink is not None else 0,
                        output_fps=info.fps, declared=info.frame_count if source_ended else 0,
                        reconnects=reader.reconnects, stream_lost=reader.lost)


# ---------------------------------------------------------------- command line

def _output_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in FOURCC:
        raise argparse.ArgumentTypeError(f"{text}: unsupported video extension; use one of {', '.join(FOURCC)}")
    return path


def _rgb(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected R,G,B with values 0-255, e.g. 0,255,0")
    return values  # type: ignore[return-value]


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: smoothing must be a number in [0, 1)")
    return value


_attempts = whole_number(0, None, "a whole number of attempts (0 turns reconnecting off)")  # --reconnect


def register(sub) -> None:
    p = sub.add_parser(
        "video", help="segment a video file, camera or stream",
        description="Segment a video frame by frame. Files: every frame. Cameras and URLs: real time, always "
                    "the newest frame (stale ones are dropped), written by wall time. The output is checked "
                    "(reopened, every frame there) before it appears under its name. Exit 0 done; 1 output not "
                    "saved, file truncated or stream lost; 2 bad input; 130/143/129 Ctrl-C/SIGTERM/SIGHUP "
                    "(the output so far is saved and playable).")
    p.add_argument("source", metavar="SOURCE", help="video file, camera index (0, 1, ...) or URL (rtsp://, http://...)")
    p.add_argument("-o", "--output", type=_output_path, metavar="OUT",
                   help=f"write the result video ({', '.join(FOURCC)})")
    p.add_argument("--show", action="store_true", help="show the result in a window with the live fps (q/Esc quits)")
    p.add_argument("--format", dest="fmt", choices=VIDEO_FORMATS, default="overlay",
                   help="overlay (default): tinted foreground; mask; prob; cutout: foreground on --background; "
                        "side-by-side: frame | mask | foreground on black (three times as wide)")
    p.add_argument("--background", type=_rgb, default=DEFAULT_BACKGROUND, metavar="R,G,B",
                   help="background colour for --format cutout (default 0,255,0)")
    p.add_argument("--smooth", type=_alpha, default=0.0, metavar="ALPHA",
                   help="temporal smoothing of the probability map against flicker, 0 (off) to <1 (default 0)")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N segmented frames")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="real-time mode, dropping stale frames (default: on for cameras and URLs, off for files; "
                        "a file read live is paced at its own fps)")
    p.add_argument("--reconnect", type=_attempts, default=DEFAULT_RECONNECT, metavar="N",
                   help=f"live network streams: reopen a stream that fails up to N times in a row, waiting "
                        f"0.5, 1, 2... s (default {DEFAULT_RECONNECT}; 0: off)")
    add_engine_arguments(p)
    p.add_argument("--fourcc", help="codec four-character code (default: mp4v, or XVID for .avi)")
    p.set_defaults(run=run)


def _say(line: str) -> None:
    """The result line on stdout; a terminal that went away (SIGHUP) must not turn it into a traceback."""
    try:
        print(line, flush=True)
    except OSError:
        pass


def _fail(message: str, code: int = 2) -> int:
    try:
        print(f"unetlite video: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass
    return code


def run(args: argparse.Namespace) -> int:
    """SIGTERM and SIGHUP end the run like Ctrl-C: the output so far is saved, exit 128 + signal."""
    with stop_on_signals():
        try:
            return _run_command(args)
        except KeyboardInterrupt as exc:  # before or after the frames (model loading, opening the source)
            return _fail("interrupted", exit_code(exc))


def _check_output(path: Path, source: str) -> str | None:
    """Why ``path`` cannot be written (checked before the model loads), or None. Also removes
    temp files that killed runs left in its folder."""
    if not path.parent.is_dir():
        return f"{display_path(path)}: folder {display_path(path.parent)} does not exist"
    if path.is_dir():
        return f"{display_path(path)}: is a folder; give a file name such as {display_path(path / 'out.mp4')}"
    if not is_live(source) and path.exists() and path.resolve() == Path(source.removeprefix("file://")).resolve():
        return f"{display_path(path)}: is the input; choose another output name"
    removed = remove_stale_temps(path.parent, recursive=False)
    if removed:
        log.info("%s: removed %d temp file(s) left by killed runs", display_path(path.parent), removed)
    try:  # a real write: permission bits, read-only mounts and quotas all show here
        make_temp(path, keep_suffix=True).unlink()
    except WriteError as exc:
        return str(exc)
    return None


def _run_command(args: argparse.Namespace) -> int:
    if args.output is None and not args.show:
        return _fail("error: nothing to do; give -o OUT and/or --show")
    if args.fourcc is not None and len(args.fourcc) != 4:
        return _fail(f"error: --fourcc {args.fourcc!r} must be four characters")
    if args.output is not None and (problem := _check_output(args.output, args.source)):
        return _fail(problem)

    def no_window(reason: str) -> bool:
        """Say why --show cannot work; True when that leaves nothing to do."""
        if args.output is None:
            _fail(f"--show: cannot open a window: {reason}; nothing else to do (add -o OUT)")
            return True
        _fail(f"--show: cannot open a window: {reason}; writing {display_path(args.output)} only")
        return False

    show = args.show
    if show and (problem := display_problem()):  # checked early: no model load just to find out
        if no_window(problem):
            return 2
        show = False
    try:
        capture = open_source(args.source)
    except SourceError as exc:
        return _fail(str(exc))
    segmenter = open_segmenter(args, "video")
    if segmenter is None:
        capture.release()
        return 2
    options = VideoOptions(fmt=args.fmt, background=args.background, smooth=args.smooth, threshold=args.threshold,
                           max_frames=args.max_frames, live=args.live, fourcc=args.fourcc, reconnect=args.reconnect)
    display = None
    if show:
        try:
            display = Display()
        except DisplayError as exc:
            if no_window(str(exc)):
                capture.release()
                return 2
    try:
        summary = process_video(segmenter, args.source, args.output, options, capture=capture, display=display)
    except VideoNotSaved as exc:  # frames were processed, the file is not there: a failure, not a usage error
        return _fail(str(exc), 1)
    except (SourceError, VideoWriteError) as exc:
        return _fail(str(exc))
    _say(summary.line())
    return summary.exit_code

"""``unetlite video``: segment a video file, camera or stream frame by frame.

Per frame the work is kept to a minimum: one resize to the model's input size, one
``Segmenter.run``, one resize of the probability map back, and cv2 blending. Decoding
runs in a reader thread (see stream.py) so it overlaps inference. The output file is
written under a hidden temporary name beside the target and renamed when done, so a
crash never leaves a half file under the final name; Ctrl-C still saves a playable
file with the frames done so far and exits 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import cv2
import numpy as np

from . import outputs
from .cliargs import add_engine_arguments, open_segmenter, positive_int
from .preprocess import prepare
from .stream import (FrameReader, LatestFrameReader, QueuedFrameReader, SourceError, SourceInfo, is_live,
                     open_source)

if TYPE_CHECKING:  # onnxruntime is imported only when a command runs
    from .session import Segmenter

log = logging.getLogger(__name__)

VIDEO_FORMATS = ("overlay", "mask", "prob", "cutout", "side-by-side")
# container (by extension) -> codec that OpenCV's pip wheels can encode (no H.264 encoder there)
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "XVID"}
DEFAULT_BACKGROUND = (0, 255, 0)  # RGB: green screen
WINDOW_TITLE = "unetlite video (q or Esc quits)"


class VideoWriteError(Exception):
    """The output video cannot be written (one-line message naming it)."""


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


@dataclass
class FrameResult:
    """One processed frame, handed to the ``on_frame`` hook."""

    index: int                  # position in the source
    image: np.ndarray           # BGR uint8 as decoded
    probability: np.ndarray     # float32 HxW at frame size, after smoothing
    output: np.ndarray          # BGR uint8 frame as written


@dataclass
class VideoSummary:
    """What a run did; ``line()`` is the one line ``unetlite video`` prints."""

    source: str
    frames_read: int
    frames_segmented: int
    dropped: int
    seconds: float
    output: Path | None
    live: bool
    interrupted: bool = False
    output_requested: bool = False

    @property
    def mean_fps(self) -> float:
        return self.frames_segmented / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        where = str(self.output) if self.output else "none (shown only)" if not self.output_requested else \
            "none (no frame was written)"
        text = (f"{self.source}: {self.frames_read} frames read, {self.frames_segmented} segmented, "
                f"{self.dropped} dropped, {self.mean_fps:.1f} fps mean, output {where}")
        return text + (" (interrupted)" if self.interrupted else "")


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

    def __init__(self, segmenter: "Segmenter", options: VideoOptions):
        contract = segmenter.contract
        self.segmenter = segmenter
        self.fmt = options.fmt
        self.threshold = contract.threshold if options.threshold is None else options.threshold
        self.smoother = TemporalSmoother(options.smooth)
        self.background_bgr = tuple(reversed(options.background))
        self.overlay_bgr = tuple(reversed(outputs.OVERLAY_COLOR))
        # Frames arrive as BGR. Preparing them with the contract's channel order flipped feeds the
        # model exactly what prepare(rgb, contract) would, without converting the full frame.
        flipped = "RGB" if contract.channel_order.upper() == "BGR" else "BGR"
        self.bgr_contract = dataclasses.replace(contract, channel_order=flipped)
        if options.fmt not in VIDEO_FORMATS:
            raise ValueError(f"unknown video format {options.fmt!r}; choose from {', '.join(VIDEO_FORMATS)}")

    def probability(self, bgr: np.ndarray) -> np.ndarray:
        """Smoothed probability map at the frame's size."""
        x = prepare(bgr, self.bgr_contract)
        prob = self.smoother(self.segmenter.run(x[None])[0])
        height, width = bgr.shape[:2]
        if prob.shape != (height, width):
            prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
        return prob

    def render(self, bgr: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """The frame to write, BGR uint8 3-channel (the outputs helpers don't care about channel order)."""
        mask = (prob >= self.threshold).view(np.uint8)
        if self.fmt == "overlay":
            return outputs.overlay(bgr, mask, color=self.overlay_bgr)
        if self.fmt == "cutout":
            return outputs.composite(bgr, mask, background=self.background_bgr)
        if self.fmt == "side-by-side":
            return outputs.side_by_side(bgr, mask)
        grey = outputs.mask_image(mask) if self.fmt == "mask" else outputs.probability_image(prob)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)

    def __call__(self, index: int, bgr: np.ndarray) -> FrameResult:
        prob = self.probability(bgr)
        return FrameResult(index, bgr, prob, self.render(bgr, prob))


class VideoSink:
    """cv2.VideoWriter into a hidden temporary file beside ``path``; ``commit()`` renames it.

    The writer opens on the first frame, so its size is the rendered frame's
    (side-by-side is three frames wide).
    """

    def __init__(self, path: str | os.PathLike, fps: float, fourcc: str | None = None):
        self.path = Path(path)
        self.fps = fps
        self.fourcc = fourcc or FOURCC.get(self.path.suffix.lower(), "mp4v")
        # the real extension stays last: FFmpeg picks the container from it
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part{self.path.suffix}")
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None

    def write(self, bgr: np.ndarray) -> None:
        if self._writer is None:
            height, width = bgr.shape[:2]
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                                           (width, height))
            if not self._writer.isOpened():
                self.abort()
                raise VideoWriteError(f"{self.path}: cannot write video (codec {self.fourcc} not available "
                                      f"for {self.path.suffix or 'this extension'}, or folder not writable)")
        self._writer.write(bgr)
        self.frames += 1

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the container's index: the file is playable after this
            self._writer = None

    def commit(self) -> Path:
        self._release()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._release()
        self.tmp.unlink(missing_ok=True)


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


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so a frame is either written and counted or not at all."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # ignored or customised
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def process_video(segmenter: "Segmenter", source: str, output: str | os.PathLike | None = None,
                  options: VideoOptions = VideoOptions(), capture: cv2.VideoCapture | None = None,
                  display: Display | None = None,
                  on_frame: Callable[[FrameResult], None] | None = None) -> VideoSummary:
    """Segment every frame of a file (or the newest frames of a live source) and write/show them.

    ``capture`` is an already opened source (else ``source`` is opened). ``on_frame`` is called
    after each frame is written. Ctrl-C (KeyboardInterrupt) ends the run early with the output
    saved and ``interrupted`` set; any other error removes the partial output and propagates.
    """
    cap = capture if capture is not None else open_source(source)
    reader: FrameReader | None = None
    try:
        info = SourceInfo.of(cap)
        live = is_live(source) if options.live is None else options.live
        pipeline = FramePipeline(segmenter, options)
        if live:  # a file read live is paced at its own frame rate, like a camera
            reader = LatestFrameReader(cap, pace_fps=None if is_live(source) else info.fps, name=source)
        else:
            reader = QueuedFrameReader(cap, limit=options.max_frames, name=source)
        sink = VideoSink(output, info.fps, options.fourcc) if output is not None else None
        log.info("%s: %dx%d at %.3g fps, %s frames, %s mode; model input %dx%d on %s", source, info.width,
                 info.height, info.fps, info.frame_count or "unknown", "live" if live else "file",
                 *segmenter.contract.input_size, segmenter.provider)
        return _run(pipeline, reader, sink, display, on_frame, options, info, live, source)
    finally:
        if reader is None or not reader.running:  # never free a capture a blocked read still uses
            cap.release()
        if display is not None:
            display.close()


def _run(pipeline: FramePipeline, reader: FrameReader, sink: VideoSink | None, display: Display | None,
         on_frame: Callable[[FrameResult], None] | None, options: VideoOptions, info: SourceInfo, live: bool,
         source: str) -> VideoSummary:
    from tqdm import tqdm

    total = options.max_frames if live else (min(filter(None, (info.frame_count, options.max_frames)), default=None))
    done = 0
    interrupted = False
    start = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc="video", disable=None, leave=False)
    try:
        reader.start()
        try:
            for index, bgr in reader:
                result = pipeline(index, bgr)
                with deferred_interrupt():
                    if sink is not None:
                        sink.write(result.output)
                    done += 1
                bar.update()
                if on_frame is not None:
                    on_frame(result)
                if display is not None and not display.show(result.output):
                    break
                if options.max_frames and done >= options.max_frames:
                    break
        finally:
            reader.close()
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    saved = None
    if sink is not None:
        if sink.frames == 0:
            sink.abort()
        else:
            saved = sink.commit()
    if done == 0 and not interrupted:
        raise SourceError(source, "no frames could be decoded")
    return VideoSummary(source=source, frames_read=reader.frames_read, frames_segmented=done,
                        dropped=reader.dropped, seconds=seconds, output=saved, live=live, interrupted=interrupted,
                        output_requested=sink is not None)


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


def register(sub) -> None:
    p = sub.add_parser(
        "video", help="segment a video file, camera or stream",
        description="Segment a video frame by frame. Files: every frame. Cameras and URLs: real time, always "
                    "the newest frame (stale ones are dropped). Exit 0 done, 2 bad input, 130 Ctrl-C "
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
    add_engine_arguments(p)
    p.add_argument("--fourcc", help="codec four-character code (default: mp4v, or XVID for .avi)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"unetlite video: {message}", file=sys.stderr)
        return 2

    if args.output is None and not args.show:
        return fail("error: nothing to do; give -o OUT and/or --show")
    if args.fourcc is not None and len(args.fourcc) != 4:
        return fail(f"error: --fourcc {args.fourcc!r} must be four characters")
    if args.output is not None and not args.output.parent.is_dir():
        return fail(f"{args.output}: folder {args.output.parent} does not exist")
    def no_window(reason: str) -> bool:
        """Say why --show cannot work; True when that leaves nothing to do."""
        if args.output is None:
            fail(f"--show: cannot open a window: {reason}; nothing else to do (add -o OUT)")
            return True
        print(f"unetlite video: --show: cannot open a window: {reason}; writing {args.output} only",
              file=sys.stderr)
        return False

    show = args.show
    if show and (problem := display_problem()):  # checked early: no model load just to find out
        if no_window(problem):
            return 2
        show = False
    try:
        capture = open_source(args.source)
    except SourceError as exc:
        return fail(str(exc))
    if args.output is not None and not is_live(args.source) and args.output.exists() \
            and args.output.resolve() == Path(args.source).resolve():
        capture.release()
        return fail(f"{args.output}: is the input; choose another output name")
    segmenter = open_segmenter(args, "video")
    if segmenter is None:
        capture.release()
        return 2
    options = VideoOptions(fmt=args.fmt, background=args.background, smooth=args.smooth, threshold=args.threshold,
                           max_frames=args.max_frames, live=args.live, fourcc=args.fourcc)
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
    except (SourceError, VideoWriteError) as exc:
        return fail(str(exc))
    print(summary.line())
    return 130 if summary.interrupted else 0

"""Video sinks: a file written under a temporary name and checked before it is renamed, the
wall-clock writer for live sources, and a window.

Success means a playable file: the finished temp file is reopened and must hold every frame
written, and only then is it fsynced and renamed (a full disk leaves nothing under the name).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import UnetliteError
from .atomic import WriteError, commit_temp, display_path, make_temp

# container (by extension) -> codec that OpenCV's pip wheels can encode (no H.264 encoder there)
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "XVID"}
WINDOW_TITLE = "unetlite video (q or Esc quits)"


class VideoWriteError(UnetliteError):
    """The output video cannot be written (one-line message naming it); nothing was processed."""


class VideoNotSaved(VideoWriteError):
    """Frames were processed but the finished file failed its check or could not be made durable."""

    exit_code = 1


class DisplayError(UnetliteError):
    """No window can be shown here (one-line reason)."""



def commit_checked(tmp: Path, path: Path, frames: int, found: int) -> Path:
    """Rename the finished temp file to ``path`` (fsynced) only when it reopened holding all ``frames``
    (``found``: -1 when it could not be reopened); otherwise remove it and raise VideoNotSaved."""
    if found != frames:
        tmp.unlink(missing_ok=True)
        what = "could not be reopened" if found < 0 else f"holds {found} of the {frames} frames written"
        raise VideoNotSaved(f"{display_path(path)}: the written video {what} (disk full?)")
    try:
        commit_temp(tmp, path)
    except WriteError as exc:
        raise VideoNotSaved(str(exc)) from None
    return path


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
        self.rescaled = 0                            # frames of another size scaled to the first one's
        self.size: tuple[int, int] | None = None     # (width, height) of the file
        self._writer: cv2.VideoWriter | None = None

    def write(self, bgr: np.ndarray) -> None:
        if self._writer is None:
            try:  # the real extension stays last: FFmpeg picks the container from it
                self.tmp = make_temp(self.path, keep_suffix=True)
            except WriteError as exc:
                raise VideoWriteError(str(exc)) from None
            height, width = bgr.shape[:2]
            self.size = (width, height)
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                                           (width, height))
            if not self._writer.isOpened():
                self.abort()
                raise VideoWriteError(f"{display_path(self.path)}: cannot write video (codec {self.fourcc} not "
                                      f"available for {self.path.suffix or 'this extension'}, or folder not writable)")
        if bgr.shape[:2] != self.size[::-1]:  # a stream that changed resolution: scale, keep recording
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
            self.rescaled += 1
        if bgr.ndim == 3 and bgr.shape[2] == 4:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGRA2BGR)
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
        return commit_checked(self.tmp, self.path, self.frames, count_frames(self.tmp, self.frames))

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

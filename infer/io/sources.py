"""Video sources: files, cameras and URLs (a registry, each saying whether it is live and can
reconnect), and the reader threads.

Decoding runs in a thread so it overlaps inference (OpenCV releases the GIL while it
decodes). Files go through a small bounded queue so every frame is processed; live
sources go through a one-slot buffer that always holds the newest frame, so a slow
model drops stale frames instead of falling further and further behind the camera.
A network stream that fails mid-run is reopened with exponential back-off.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path
from typing import Iterator

# FFmpeg's own log (read once, when OpenCV first opens a video) would print decoder noise for
# damaged files; our messages say what happened in one line. Set it yourself to see FFmpeg's log.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ..errors import UnetliteError  # noqa: E402

from . import images  # noqa: E402,F401  (sets OpenCV's own log level to errors only)

log = logging.getLogger(__name__)

FALLBACK_FPS = 25.0
URL_OPEN_TIMEOUT_MS = 10_000
RECONNECT_FIRST_DELAY = 0.5   # seconds before the first reconnection attempt; doubles each time
RECONNECT_MAX_DELAY = 8.0

Frame = tuple[int, np.ndarray]  # (index in the source, BGR uint8 image)


class SourceError(UnetliteError):
    """A video source cannot be opened or decoded; ``str()`` is one line naming it."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def is_camera(spec: str) -> bool:
    """'0', '1', ...: a camera index."""
    return spec.strip().isdigit()


def is_url(spec: str) -> bool:
    """rtsp://, http(s)://, udp://...: a network stream (file:// is a file)."""
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.isalpha() and scheme.lower() != "file"


def _open_camera(spec: str) -> cv2.VideoCapture:
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # probing backends logs errors
    try:
        cap = cv2.VideoCapture(int(spec))
    finally:
        cv2.utils.logging.setLogLevel(level)
    if cap.isOpened():
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ask the driver not to queue old frames (best effort)
    return _opened(cap, spec, f"cannot open camera {spec}")


def _open_url(spec: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(spec, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, URL_OPEN_TIMEOUT_MS,
                                               cv2.CAP_PROP_READ_TIMEOUT_MSEC, URL_OPEN_TIMEOUT_MS])
    return _opened(cap, spec, "cannot open stream")


def is_stdin(spec: str) -> bool:
    """'-': an encoded stream on standard input (PyAV; raw frames with --size go through AvCapture directly)."""
    return spec.strip() == "-"


def _open_stdin(spec: str):
    from .video_av import AvCapture, extra_message, have_av
    if not have_av():
        raise SourceError("standard input", extra_message("reading standard input (-)"))
    return _opened(AvCapture("-"), "standard input", "not a video stream FFmpeg can read")


# OpenCV's wheel cannot decode these (animated WebP) or loses their frames' timing: PyAV (or Pillow) reads them.
AV_FIRST = (".gif", ".webp")


def _open_file(spec: str) -> cv2.VideoCapture:
    path = Path(spec.removeprefix("file://"))
    if not path.exists():
        raise SourceError(spec, "no such file (nor a camera index or URL)")
    if path.is_dir():
        raise SourceError(spec, "is a folder, not a video")
    if not os.access(path, os.R_OK):
        raise SourceError(spec, "permission denied")
    from .video_av import AvCapture, have_av
    reason = "cannot be opened as a video (not a video, unsupported codec or corrupt)"
    if path.suffix.lower() in AV_FIRST:
        if path.suffix.lower() == ".webp" or have_av():
            return _opened(AvCapture(path), spec, reason)
    return _opened(cv2.VideoCapture(str(path)), spec, reason)


def _opened(cap: cv2.VideoCapture, spec: str, reason: str) -> cv2.VideoCapture:
    if not cap.isOpened():
        cap.release()
        raise SourceError(spec, reason)
    return cap


@dataclass(frozen=True)
class SourceKind:
    """A kind of video source: how to recognise and open one, and how it behaves."""

    name: str
    matches: Callable[[str], bool]
    open: Callable[[str], cv2.VideoCapture]   # raises SourceError
    live: bool                                # real time: newest frame, stale ones dropped
    can_reconnect: bool                       # reopened when it stops delivering frames


# First match wins; a new kind of source is one entry here.
SOURCES: tuple[SourceKind, ...] = (
    SourceKind("stdin", is_stdin, _open_stdin, live=False, can_reconnect=False),
    SourceKind("camera", is_camera, _open_camera, live=True, can_reconnect=False),
    SourceKind("url", is_url, _open_url, live=True, can_reconnect=True),
    SourceKind("file", lambda spec: True, _open_file, live=False, can_reconnect=False),
)


def source_kind(spec: str) -> SourceKind:
    """The kind of source ``spec`` names (a file when nothing else matches)."""
    return next(kind for kind in SOURCES if kind.matches(spec))


def is_live(spec: str) -> bool:
    """Cameras and network streams run in real time by default; files do not."""
    return source_kind(spec).live


def open_source(spec: str) -> cv2.VideoCapture:
    """Open a video file, camera index or URL; raises SourceError when it cannot be read."""
    return source_kind(spec).open(spec)


@dataclass(frozen=True)
class SourceInfo:
    """What the source says about itself; fps falls back to 25 when it reports none."""

    fps: float
    width: int
    height: int
    frame_count: int  # 0 when unknown (cameras, streams)

    @classmethod
    def of(cls, cap: cv2.VideoCapture) -> "SourceInfo":
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            log.info("source reports fps %r; using %g", fps, FALLBACK_FPS)
            fps = FALLBACK_FPS
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return cls(fps=fps, width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                   height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                   frame_count=int(count) if math.isfinite(count) and count > 0 else 0)


def reconnect_delays(attempts: int, first: float = RECONNECT_FIRST_DELAY,
                     cap: float = RECONNECT_MAX_DELAY) -> list[float]:
    """Exponential back-off: first, 2*first, 4*first, ... seconds, each at most ``cap``."""
    return [min(first * 2 ** k, cap) for k in range(attempts)]


@dataclass(frozen=True)
class Reconnect:
    """How a reader reopens a source that stops delivering frames (network streams)."""

    spec: str                       # what open_source() is given again
    attempts: int = 3               # consecutive failed attempts before giving up
    first_delay: float = RECONNECT_FIRST_DELAY


class FrameReader:
    """Base of the reader threads: decodes ``capture`` in the background until it ends,
    ``limit`` frames are read, or ``close()``. Iterate it to get ``(index, bgr)`` frames.

    With ``reconnect``, a source whose read fails is reopened (back-off between attempts) and
    reading goes on; ``reconnects`` counts the successes and ``lost`` says that the source ended
    and could not be reopened. The reader owns the capture it reopens: release ``capture``, not the
    one passed in, once ``running`` is False.
    """

    def __init__(self, capture: cv2.VideoCapture, limit: int | None = None, pace_fps: float | None = None,
                 name: str = "video", reconnect: Reconnect | None = None):
        self.capture = capture
        self.name = name                  # the source, for error messages
        self.limit = limit
        self.pace_fps = pace_fps          # read no faster than this (simulates a camera from a file)
        self.reconnect = reconnect
        self.reconnects = 0
        self.lost = False
        self._decoded = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"unetlite-{type(self).__name__}", daemon=True)

    def start(self) -> "FrameReader":
        self._thread.start()
        return self

    def _reopen(self) -> bool:
        """Reopen a failed source with back-off; False when every attempt failed or we were stopped."""
        assert self.reconnect is not None
        self.capture.release()  # closes the dead connection before the first attempt
        log.warning("%s: stream stopped after %d frames; reconnecting (up to %d attempts)", self.name,
                    self._decoded, self.reconnect.attempts)
        for attempt, delay in enumerate(reconnect_delays(self.reconnect.attempts, self.reconnect.first_delay), 1):
            if self._stop.wait(delay):
                return False
            try:
                capture = open_source(self.reconnect.spec)
            except SourceError as exc:
                log.info("%s: reconnection attempt %d failed: %s", self.name, attempt, exc.reason)
                continue
            self.capture = capture
            self.reconnects += 1
            return True
        return False

    def _run(self) -> None:
        start = time.perf_counter()
        index = 0
        try:
            while not self._stop.is_set() and (self.limit is None or index < self.limit):
                ok, frame = self.capture.read()
                if not ok:
                    if self._stop.is_set() or self.reconnect is None:
                        break
                    if self._reopen():
                        continue
                    self.lost = not self._stop.is_set()
                    break
                self._decoded += 1
                self._publish((index, frame))
                index += 1
                if self.pace_fps:
                    delay = start + index / self.pace_fps - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
        except Exception as exc:  # a decoder error ends the stream; the consumer re-raises it
            self.error = exc
        finally:
            self._finish()

    @property
    def frames_read(self) -> int:
        """Frames decoded from the source."""
        return self._decoded

    def _publish(self, frame: Frame) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame | None:
        """The next frame to process, or None when the source has ended."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame
        if self.error is not None:
            raise SourceError(self.name, f"decoding failed: {self.error}")

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (the capture stays open; its owner releases it, but
        only once ``running`` is False: a stalled camera or stream can keep read() blocked)."""
        self._stop.set()
        self._unblock()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: the reader is still blocked in a read; leaving it to exit with the process",
                            self.name)

    def _unblock(self) -> None:
        pass

    def __enter__(self) -> "FrameReader":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class QueuedFrameReader(FrameReader):
    """Every frame, in order, through a bounded queue: decoding runs ahead by at most
    ``maxsize`` frames, so memory stays small whatever the file's length."""

    _END = None

    def __init__(self, capture: cv2.VideoCapture, limit: int | None = None, maxsize: int = 4,
                 pace_fps: float | None = None, name: str = "video", reconnect: Reconnect | None = None):
        super().__init__(capture, limit, pace_fps, name, reconnect)
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=maxsize)
        self._discarded = 0

    def _put(self, item: Frame | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _publish(self, frame: Frame) -> None:
        self._put(frame)

    def _finish(self) -> None:
        self._put(self._END)

    def read(self) -> Frame | None:
        if self._stop.is_set():
            return None
        return self._queue.get()

    def _unblock(self) -> None:
        while True:  # let a blocked put() return; read-ahead frames were never used
            try:
                if self._queue.get_nowait() is not self._END:
                    self._discarded += 1
            except queue.Empty:
                return

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        self._unblock()

    @property
    def frames_read(self) -> int:
        """Frames handed to the consumer (decoded read-ahead that was thrown away is not counted)."""
        return self._decoded - self._discarded


class LatestFrameReader(FrameReader):
    """Real-time reading: the grabber keeps decoding and holds only the newest frame.

    A frame replaced before anyone took it is counted in ``dropped``; ``read()`` returns
    the newest frame not yet returned (so indices are strictly increasing) and blocks
    until there is one. The buffer is a single slot: memory never grows with lag.
    """

    def __init__(self, capture: cv2.VideoCapture, limit: int | None = None, pace_fps: float | None = None,
                 name: str = "video", reconnect: Reconnect | None = None):
        super().__init__(capture, limit, pace_fps, name, reconnect)
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._ended = False

    @property
    def buffered(self) -> int:
        """Frames waiting in the buffer: 0 or 1."""
        return int(self._slot is not None)

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self._cond.notify()

    def _finish(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def read(self) -> Frame | None:
        with self._cond:
            while self._slot is None and not self._ended and not self._stop.is_set():
                self._cond.wait()
            frame, self._slot = self._slot, None
            return frame

    def _unblock(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        with self._cond:  # a frame read but never processed counts as dropped
            if self._slot is not None:
                self.dropped += 1
                self._slot = None

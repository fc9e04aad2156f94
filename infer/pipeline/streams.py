"""Several video sources with one model: ``unetlite video A B C -o OUTDIR/``.

Each source has its own reader thread (files: every frame through a small queue; live sources:
the newest frame, stale ones dropped per stream), its own smoothing state and its own render +
encode thread and output file. The main thread takes the frames that are ready, one per stream,
and runs them through the model as one batch, so N streams cost one inference call per round.
Decode, inference and render + encode overlap (threads; OpenCV, onnxruntime and FFmpeg release
the GIL). The summary has frames and fps per stream.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..io.sources import FrameReader, LatestFrameReader, QueuedFrameReader, SourceError, SourceInfo, open_source, \
    source_kind
from ..signals import held_signals, signal_number

log = logging.getLogger(__name__)

RENDER_QUEUE = 4   # frames waiting for render + encode, per stream


@dataclass
class StreamSummary:
    source: str
    output: Path | None
    frames_read: int = 0
    frames_segmented: int = 0
    dropped: int = 0
    seconds: float = 0.0
    live: bool = False
    error: str | None = None
    declared: int = 0
    stream_lost: bool = False

    @property
    def fps(self) -> float:
        return self.frames_segmented / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (f"{self.source}: {self.frames_read} frames read, {self.frames_segmented} segmented, "
                f"{self.dropped} dropped, {self.fps:.1f} fps, output {self.output or 'none'}")
        if self.declared and self.frames_read < self.declared:
            text += f"; decoded {self.frames_read} of {self.declared} frames the container declared"
        if self.stream_lost:
            text += "; stream ended and could not be reopened"
        if self.error:
            text += f"; failed: {self.error}"
        return text


@dataclass
class StreamsSummary:
    streams: list[StreamSummary]
    seconds: float
    stop_signal: int | None = None
    batches: int = 0

    @property
    def exit_code(self) -> int:
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        bad = any(s.error or s.stream_lost or (s.declared and s.frames_read < 0.98 * s.declared)
                  for s in self.streams)
        return 1 if bad else 0

    def lines(self) -> list[str]:
        total = sum(s.frames_segmented for s in self.streams)
        mean_batch = total / self.batches if self.batches else 0.0
        return [s.line() for s in self.streams] + [
            f"{len(self.streams)} streams: {total} frames in {self.seconds:.1f} s, "
            f"{total / self.seconds if self.seconds > 0 else 0.0:.1f} fps together, {mean_batch:.2f} frames per batch"
            + (" (interrupted)" if self.stop_signal is not None else "")]


def _poll(reader: FrameReader):
    """A frame if one is ready now, ``_END`` when the source has ended, else None (never blocks)."""
    if isinstance(reader, QueuedFrameReader):
        try:
            item = reader._queue.get_nowait()
        except queue.Empty:
            return None
        return _END if item is None else item
    assert isinstance(reader, LatestFrameReader)
    with reader._cond:
        frame, reader._slot = reader._slot, None
        if frame is None and reader._ended:
            return _END
        return frame


_END = object()


class _Stream:
    """One source: reader, pipeline (own smoothing), sink, and the render + encode thread."""

    def __init__(self, source: str, capture, pipeline, sink, live: bool, info: SourceInfo, max_frames: int | None,
                 reconnect: int):
        from ..io.sources import Reconnect
        self.source = source
        self.pipeline = pipeline
        self.sink = sink
        self.live = live
        self.info = info
        kind = source_kind(source)
        if live:
            rc = Reconnect(source, reconnect) if kind.can_reconnect and reconnect > 0 else None
            self.reader: FrameReader = LatestFrameReader(capture, pace_fps=None if kind.live else info.fps,
                                                         name=source, reconnect=rc)
        else:
            self.reader = QueuedFrameReader(capture, limit=max_frames, name=source)
        self.max_frames = max_frames
        self.done = 0
        self.ended = False
        self.source_ended = False
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._start = 0.0
        self._queue: queue.Queue = queue.Queue()  # bounded by in_flight (wants_frame)
        self.in_flight = 0                 # frames handed to the render thread and not yet written
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._render_loop, name=f"unetlite-render-{source}", daemon=True)
        self.on_frame: Callable | None = None

    def start(self) -> None:
        self._start = time.perf_counter()
        self.reader.start()
        self._thread.start()

    def _render_loop(self) -> None:
        from ..io.sinks import WallClockWriter
        clock = WallClockWriter(self.sink) if self.live and self.sink is not None else None
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self.error is not None:
                continue
            index, bgr, probability = item
            try:
                result = self.pipeline.finish(index, bgr, probability)
                if clock is not None:
                    clock.push(result.output)
                elif self.sink is not None:
                    self.sink.write(result.output)
                if self.on_frame is not None:
                    self.on_frame(result)
            except BaseException as exc:  # noqa: BLE001  (reported per stream)
                self.error = exc
            finally:
                with self._lock:
                    self.in_flight -= 1
        if clock is not None and self.error is None:
            try:
                clock.finish()
            except BaseException as exc:  # noqa: BLE001
                self.error = exc
        self.seconds = time.perf_counter() - self._start

    def wants_frame(self) -> bool:
        """Whether to take a frame from this stream now. A live stream takes one only when its last
        is written, so stale frames are dropped in its reader (one slot), not queued here; a file
        takes one while its render queue has room (the main thread never blocks on one stream)."""
        with self._lock:
            return self.in_flight == 0 if self.live else self.in_flight < RENDER_QUEUE

    def submit(self, index: int, bgr: np.ndarray, probability: np.ndarray) -> None:
        with self._lock:
            self.in_flight += 1
        self._queue.put((index, bgr, probability))
        self.done += 1
        if self.max_frames and self.done >= self.max_frames:
            self.end()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.reader.close()
            self._queue.put(None)

    def join(self) -> None:
        self._thread.join()


def output_name(source: str, folder: Path, extension: str, taken: set[str]) -> Path:
    """OUTDIR/<source's stem><extension>, made unique among this run's outputs (cam0, stdin, url host)."""
    from ..io.sources import is_camera, is_url
    if source == "-":
        stem = "stdin"
    elif is_camera(source):
        stem = f"camera{source.strip()}"
    elif is_url(source):
        stem = "".join(c if c.isalnum() else "_" for c in source.split("://", 1)[1]).strip("_")[:60] or "stream"
    else:
        stem = Path(source.removeprefix("file://")).stem or "video"
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    taken.add(name)
    return folder / f"{name}{extension}"


def process_streams(segmenter, sources: list[str], outputs: list[Path | None], options, make_sink,
                    captures: list | None = None, on_frame: Callable | None = None) -> StreamsSummary:
    """Run every source through one model, batching the frames that are ready across streams.

    ``make_sink(output, fps)`` -> a sink (io.sinks.VideoSink / io.video_av.AvSink); ``options`` a
    pipeline.frames.VideoOptions. One stream's failure (a decode error, a full disk) is reported in
    its line and the others go on.
    """
    from .frames import FramePipeline, check_frame_size

    streams: list[_Stream] = []
    try:
        for k, (source, output) in enumerate(zip(sources, outputs)):
            cap = captures[k] if captures is not None else open_source(source)
            info = SourceInfo.of(cap)
            check_frame_size(source, info, options.max_pixels)
            kind = source_kind(source)
            live = kind.live if options.live is None else options.live
            sink = make_sink(output, info.fps) if output is not None else None
            stream = _Stream(source, cap, FramePipeline(segmenter, options), sink, live, info, options.max_frames,
                             options.reconnect)
            stream.on_frame = on_frame
            streams.append(stream)
    except BaseException:
        for stream in streams:
            stream.reader.capture.release()
        if captures is not None:
            for cap in captures[len(streams):]:
                cap.release()
        raise

    start = time.perf_counter()
    stop_signal = None
    batches = 0
    try:
        for stream in streams:
            stream.start()
        while True:
            active = [s for s in streams if not s.ended]
            if not active:
                break
            ready = []
            for stream in active:
                if stream.error is not None:
                    stream.end()
                    continue
                if not stream.wants_frame():
                    continue
                item = _poll(stream.reader)
                if item is _END:
                    stream.source_ended = True
                    stream.end()
                elif item is not None:
                    ready.append((stream, *item))
            if not ready:
                time.sleep(0.002)
                continue
            inputs = np.stack([s.pipeline.prepare(bgr) for s, _, bgr in ready])
            probabilities = ready[0][0].pipeline.infer(inputs)  # one call for every stream's frame
            batches += 1
            for (stream, index, bgr), prob in zip(ready, probabilities):
                stream.submit(index, bgr, prob)
    except KeyboardInterrupt as exc:
        stop_signal = signal_number(exc)
    finally:
        for stream in streams:
            stream.end()
    seconds = time.perf_counter() - start
    summaries = []
    with held_signals(reraise=False) as late:
        for stream in streams:
            stream.join()
            saved = None
            error = stream.error
            if error is None and stream.reader.error is not None:
                error = stream.reader.error
            if stream.sink is not None:
                if error is not None or stream.sink.frames == 0:
                    stream.sink.abort()
                else:
                    try:
                        saved = stream.sink.commit()
                    except Exception as exc:  # noqa: BLE001  (VideoNotSaved: reported in the line)
                        error = exc
            if not stream.reader.running:
                stream.reader.capture.release()
            if error is None and stream.done == 0 and stop_signal is None:
                error = SourceError(stream.source, "no frames could be decoded")
            summaries.append(StreamSummary(
                source=stream.source, output=saved, frames_read=stream.reader.frames_read,
                frames_segmented=stream.done, dropped=stream.reader.dropped, seconds=stream.seconds or seconds,
                live=stream.live, error=None if error is None else _one_line(error),
                declared=stream.info.frame_count if stream.source_ended else 0, stream_lost=stream.reader.lost))
    if late and stop_signal is None:
        stop_signal = late[0]
    return StreamsSummary(summaries, seconds, stop_signal, batches)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

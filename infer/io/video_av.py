"""Video through PyAV (the ``[video]`` extra, ``pip install '.[video]'``): H.264 ``.mp4`` that
browsers play, VP9 ``.webm`` with an alpha channel, animated ``.gif`` / ``.webp``, and pipes
(``-`` reads a stream from standard input, ``-o -`` writes Matroska to standard output).

PyAV is imported only when one of these is used. Without it, OpenCV's writer stays (``mp4v``,
which browsers do not play) and :func:`extra_message` says what the extra adds.

:class:`AvCapture` behaves like the slice of ``cv2.VideoCapture`` the readers use (``read``,
``get``, ``release``, ``isOpened``), so the reader threads, reconnects and ``SourceInfo`` work
unchanged. :class:`AvSink` behaves like io.sinks.VideoSink: a temp file beside the output,
checked (reopened, every frame there) before it is renamed; standard output cannot be reopened,
so there the muxed packets are counted instead.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from .atomic import WriteError, display_path, make_temp

log = logging.getLogger(__name__)

EXTRA = "pip install '.[video]'"
EXTRA_ADDS = "H.264 .mp4 that browsers play, VP9 .webm with alpha, animated .gif/.webp, pipes (-)"
# extension -> (container format, codec, pixel format, pixel format with alpha or None)
CODECS: dict[str, tuple[str, str, str, str | None]] = {
    ".mp4": ("mp4", "libx264", "yuv420p", None),
    ".m4v": ("mp4", "libx264", "yuv420p", None),
    ".mov": ("mov", "libx264", "yuv420p", None),
    ".mkv": ("matroska", "libx264", "yuv420p", None),
    ".webm": ("webm", "libvpx-vp9", "yuv420p", "yuva420p"),
    ".gif": ("gif", "gif", "pal8", "pal8"),
    ".webp": ("webp", "libwebp_anim", "yuv420p", "yuva420p"),
}
AV_ONLY_EXTENSIONS = (".webm", ".gif", ".webp")   # OpenCV's wheel cannot write these
ALPHA_EXTENSIONS = (".webm", ".gif", ".webp")     # containers that carry a transparent cutout
STDIO = "-"
PIPE_FORMAT = "matroska"                          # what -o - writes (streamable, any codec)
H264_OPTIONS = {"preset": "veryfast", "crf": "23"}
VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "b:v": "0", "crf": "32", "row-mt": "1"}
FALLBACK_FPS = 25.0


def have_av() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def extra_message(what: str) -> str:
    return f"{what} needs the [video] extra (PyAV): {EXTRA}; it adds {EXTRA_ADDS}"


def _av():
    import av
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own log: our messages say what happened in one line
    return av


# ---------------------------------------------------------------- reading

class AvCapture:
    """A cv2.VideoCapture look-alike over a PyAV container: a file, standard input (``-``) or any
    binary file object. ``raw_size`` (width, height): the input is raw bgr24 frames, no container."""

    def __init__(self, source: str | os.PathLike | BinaryIO, raw_size: tuple[int, int] | None = None,
                 raw_fps: float = FALLBACK_FPS):
        self.name = STDIO if source == STDIO else str(getattr(source, "name", source))
        self._file = sys.stdin.buffer if source == STDIO else source
        self._raw = raw_size
        self._container = None
        self._frames = None
        self._opened = False
        self.width = self.height = 0
        self.fps = raw_fps
        self.frame_count = 0
        self._pil = None
        if raw_size is not None:
            self.width, self.height = raw_size
            self._opened = True
            return
        path = Path(str(source)) if isinstance(source, (str, os.PathLike)) and source != STDIO else None
        if path is not None and path.suffix.lower() == ".webp":   # FFmpeg has no animated WebP decoder
            self._open_webp(path)
            return
        av = _av()
        try:
            self._container = av.open(self._file if path is None else str(path), "r")
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError, ValueError):
            self.release()
            return
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        self.width, self.height = int(ctx.width or 0), int(ctx.height or 0)
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.frame_count = int(stream.frames or 0)
        self._frames = self._container.decode(stream)
        self._opened = self.width > 0 and self.height > 0

    def _open_webp(self, path: Path) -> None:
        try:
            from PIL import Image
        except ImportError:
            return
        try:
            self._pil = Image.open(path)
            self.width, self.height = self._pil.size
            self.frame_count = int(getattr(self._pil, "n_frames", 1))
            duration = self._pil.info.get("duration") or 0
            self.fps = 1000.0 / duration if duration else 0.0
            self._pil_index = 0
            self._opened = True
        except Exception:  # noqa: BLE001  (not a WebP Pillow can read)
            self._pil = None

    def isOpened(self) -> bool:  # noqa: N802  (cv2.VideoCapture's name)
        return self._opened

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: self.fps or 0.0, cv2.CAP_PROP_FRAME_WIDTH: float(self.width),
                cv2.CAP_PROP_FRAME_HEIGHT: float(self.height),
                cv2.CAP_PROP_FRAME_COUNT: float(self.frame_count)}.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        return False

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self._opened:
            return False, None
        if self._raw is not None:
            size = self.width * self.height * 3
            data = _read_exactly(self._file, size)
            if len(data) < size:
                return False, None
            return True, np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3).copy()
        if self._pil is not None:
            return self._read_pil()
        av = _av()
        try:
            frame = next(self._frames)
        except StopIteration:
            return False, None
        except av.FFmpegError as exc:
            raise ValueError(str(exc)) from None
        return True, frame.to_ndarray(format="bgr24")

    def read_rgba(self) -> tuple[bool, np.ndarray | None]:
        """The next frame with its alpha channel (BGRA); for GIF/WebP inputs that carry one."""
        ok, frame = self.read()
        return ok, None if not ok else cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)

    def _read_pil(self) -> tuple[bool, np.ndarray | None]:
        if self._pil_index >= self.frame_count:
            return False, None
        self._pil.seek(self._pil_index)
        self._pil_index += 1
        rgb = np.asarray(self._pil.convert("RGB"))
        return True, np.ascontiguousarray(rgb[..., ::-1])

    def release(self) -> None:
        self._opened = False
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001
                pass
            self._container = None
        if self._pil is not None:
            self._pil.close()
            self._pil = None


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def parse_size(text: str) -> tuple[int, int]:
    """'640x360' -> (640, 360)."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise ValueError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 640x360")
    return int(width), int(height)


# ---------------------------------------------------------------- writing

def gif_palette() -> np.ndarray:
    """256 entries for GIF frames as PyAV's pal8 wants them (bytes A, R, G, B): a 6x7x6 colour cube
    (252 colours), index 255 transparent."""
    r, g, b = np.meshgrid(np.arange(6), np.arange(7), np.arange(6), indexing="ij")
    cube = np.stack([np.full(r.size, 255), (r.ravel() * 255) // 5, (g.ravel() * 255) // 6, (b.ravel() * 255) // 5],
                    axis=1).astype(np.uint8)
    palette = np.zeros((256, 4), np.uint8)
    palette[:len(cube)] = cube
    palette[len(cube):255, 0] = 255   # unused, opaque: FFmpeg's encoder takes the first transparent entry
    return palette


_BAYER = (np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], np.float32) + 0.5) / 16 - 0.5


def gif_indices(bgra: np.ndarray) -> np.ndarray:
    """BGR(A) uint8 -> palette indices into :func:`gif_palette` (ordered dither; alpha < 128: 255)."""
    h, w = bgra.shape[:2]
    dither = np.tile(_BAYER, (h // 4 + 1, w // 4 + 1))[:h, :w]
    b, g, r = (bgra[..., k].astype(np.float32) for k in range(3))
    qr = np.clip(np.floor(r * (5 / 255) + 0.5 + dither), 0, 5)
    qg = np.clip(np.floor(g * (6 / 255) + 0.5 + dither), 0, 6)
    qb = np.clip(np.floor(b * (5 / 255) + 0.5 + dither), 0, 5)
    idx = (qr * 42 + qg * 6 + qb).astype(np.uint8)
    if bgra.ndim == 3 and bgra.shape[2] == 4:
        idx[bgra[..., 3] < 128] = 255
    return idx


class AvSink:
    """Frames (BGR, or BGRA for transparent output) -> a PyAV-encoded file under a hidden temp name,
    checked and renamed by :meth:`commit`; or to standard output (``path`` "-": Matroska).

    The first frame fixes the output size; a later frame of another size (a stream that changed
    resolution) is scaled to it, so nothing recorded is lost.
    """

    def __init__(self, path: str | os.PathLike, fps: float, alpha: bool = False, stdout: BinaryIO | None = None):
        self.to_stdout = str(path) == STDIO
        self.path = Path(path)
        ext = ".mkv" if self.to_stdout else self.path.suffix.lower()
        if ext not in CODECS:
            raise ValueError(f"{path}: no PyAV codec for {ext or 'this extension'}")
        self.container_format, self.codec, pix, alpha_pix = CODECS[ext]
        self.alpha = bool(alpha and alpha_pix)
        self.pix_fmt = alpha_pix if self.alpha else pix
        self.fps = fps if fps and math.isfinite(fps) and fps > 0 else FALLBACK_FPS
        self._stdout = stdout
        self.tmp: Path | None = None
        self.frames = 0
        self.packets = 0
        self.rescaled = 0                  # frames of another size scaled to the output's
        self.size: tuple[int, int] | None = None   # (width, height) written
        self._container = None
        self._stream = None
        self._palette = gif_palette() if self.codec == "gif" else None

    @property
    def fourcc(self) -> str:
        return self.codec

    def _open(self, width: int, height: int) -> None:
        from .sinks import VideoWriteError
        av = _av()
        if self.to_stdout:
            target = self._stdout if self._stdout is not None else sys.stdout.buffer
        else:
            try:
                self.tmp = make_temp(self.path, keep_suffix=True)
            except WriteError as exc:
                raise VideoWriteError(str(exc)) from None
            target = str(self.tmp)
        options = {"movflags": "+faststart"} if self.container_format in ("mp4", "mov") else {}
        try:
            self._container = av.open(target, "w", format=self.container_format, options=options)
            codec_options = H264_OPTIONS if self.codec == "libx264" else VP9_OPTIONS if self.codec == "libvpx-vp9" \
                else {}
            rate = _rate(self.fps)
            self._stream = self._container.add_stream(self.codec, rate=rate, options=dict(codec_options))
            # 4:2:0 needs even sizes: the frame is padded by a pixel (replicated edge) when odd
            even = self.pix_fmt.startswith("yuv") or self.pix_fmt.startswith("yuva")
            self._stream.width = width + (width % 2 if even else 0)
            self._stream.height = height + (height % 2 if even else 0)
            self._stream.pix_fmt = self.pix_fmt
            self._stream.time_base = 1 / rate
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.abort()
            raise VideoWriteError(f"{display_path(self.path)}: cannot write video ({self.codec}: {exc})") from None
        self.size = (width, height)

    def _frame(self, picture: np.ndarray):
        av = _av()
        width, height = self.size
        if picture.shape[1] != width or picture.shape[0] != height:
            picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
            self.rescaled += 1
        if picture.ndim == 2:
            picture = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
        pad_w, pad_h = self._stream.width - width, self._stream.height - height
        if pad_w or pad_h:
            picture = cv2.copyMakeBorder(picture, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        if self.codec == "gif":
            return av.VideoFrame.from_ndarray((gif_indices(picture), self._palette), format="pal8")
        if self.alpha:
            if picture.shape[2] == 3:
                picture = cv2.cvtColor(picture, cv2.COLOR_BGR2BGRA)
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="bgra")
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[..., :3]), format="bgr24")

    def write(self, picture: np.ndarray) -> None:
        """One frame: BGR (HxWx3), BGRA (HxWx4, alpha kept when the format carries it) or grey."""
        from .sinks import VideoWriteError
        av = _av()
        if self._container is None:
            self._open(picture.shape[1], picture.shape[0])
        frame = self._frame(picture)
        frame.pts = self.frames
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
                self.packets += 1
        except (av.FFmpegError, OSError) as exc:
            raise VideoWriteError(f"{display_path(self.path)}: writing failed: {exc}") from None
        self.frames += 1

    def _finish(self) -> None:
        if self._container is None:
            return
        av = _av()
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
                self.packets += 1
        except (av.FFmpegError, OSError):
            pass
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass
        self._container = None
        if self.to_stdout:
            try:
                (self._stdout if self._stdout is not None else sys.stdout.buffer).flush()
            except (OSError, ValueError):
                pass

    def commit(self) -> Path:
        """Finish; reopen the temp file and count its frames; only when it holds every frame written
        is it fsynced and renamed. Standard output: the packets muxed must match the frames written."""
        from .sinks import VideoNotSaved, commit_checked
        self._finish()
        if self.to_stdout:
            if self.packets != self.frames:
                raise VideoNotSaved(f"standard output: {self.packets} of the {self.frames} frames were written "
                                    f"(reader gone?)")
            return self.path
        assert self.tmp is not None, "commit() before any frame was written"
        return commit_checked(self.tmp, self.path, self.frames, count_frames(self.tmp))

    def abort(self) -> None:
        self._finish()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def _rate(fps: float):
    from fractions import Fraction
    return Fraction(fps).limit_denominator(1001)


def count_frames(path: str | os.PathLike) -> int:
    """Video packets in the file (one per frame; nothing is decoded); -1 when it does not open.
    Animated WebP (one packet for the whole file in FFmpeg) is counted by Pillow."""
    if Path(path).suffix.lower() == ".webp":
        try:
            from PIL import Image
            with Image.open(path) as image:
                return int(getattr(image, "n_frames", 1))
        except ImportError:
            return -1
        except Exception:  # noqa: BLE001  (not a readable WebP)
            return -1
    av = _av()
    try:
        with av.open(str(path), "r") as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
    except (av.FFmpegError, IndexError, OSError, ValueError):
        return -1


def decode_frames(path: str | os.PathLike, alpha: bool = False, limit: int | None = None) -> list[np.ndarray]:
    """Every frame of a file, BGR (or BGRA with ``alpha``; VP9 alpha is decoded with libvpx, which
    reads the alpha side stream that FFmpeg's own VP9 decoder ignores). For tests and tools."""
    av = _av()
    out: list[np.ndarray] = []
    with av.open(str(path), "r") as container:
        stream = container.streams.video[0]
        fmt = "bgra" if alpha else "bgr24"
        if alpha and stream.codec_context.name == "vp9":
            ctx = av.CodecContext.create("libvpx-vp9", "r")
            for packet in container.demux(stream):
                for frame in ctx.decode(packet):
                    out.append(frame.to_ndarray(format=fmt))
                if limit and len(out) >= limit:
                    break
            return out
        for frame in container.decode(stream):
            out.append(frame.to_ndarray(format=fmt))
            if limit and len(out) >= limit:
                break
    return out


def codec_name(path: str | os.PathLike) -> str:
    """The video stream's codec as FFmpeg names it ('h264', 'vp9', 'gif')."""
    av = _av()
    with av.open(str(path), "r") as container:
        return container.streams.video[0].codec_context.name


_warned_mp4v = False


def open_sink(path: str | os.PathLike, fps: float, fourcc: str | None = None, alpha: bool = False):
    """The sink for ``path``: PyAV (H.264 / VP9 / GIF / WebP, or Matroska on standard output for "-")
    when the [video] extra is installed, else OpenCV's writer (mp4v / XVID), which cannot write
    .webm/.gif/.webp or a pipe (VideoWriteError naming the extra). ``fourcc`` asks for OpenCV's writer."""
    from .sinks import VideoSink, VideoWriteError
    global _warned_mp4v
    ext = ".mkv" if str(path) == STDIO else Path(path).suffix.lower()
    if fourcc is None and ext in CODECS and have_av():
        return AvSink(path, fps, alpha=alpha)
    if str(path) == STDIO or ext in AV_ONLY_EXTENSIONS:
        raise VideoWriteError(extra_message("standard output (-o -)" if str(path) == STDIO else f"{ext} output"))
    if fourcc is None and ext != ".avi" and not _warned_mp4v:
        _warned_mp4v = True
        log.warning("writing mp4v with OpenCV (browsers do not play it); %s", extra_message("H.264"))
    return VideoSink(path, fps, fourcc)

"""``--background blur[:STRENGTH] | PATH | R,G,B``: what goes behind the subject.

A :class:`Background` gives, for each frame, a picture of the frame's size and channel order; the
subject is put on it with a soft (or ``--edge hard``) alpha (engine.alpha.blend).

- ``blur`` / ``blur:STRENGTH``: the frame itself, Gaussian-blurred (STRENGTH: the blur's sigma as a
  percentage of the frame's shorter side, default 3; done at a reduced size, so it costs the same
  whatever the strength);
- ``R,G,B``: a flat colour;
- PATH: an image (scaled to cover the frame, centre-cropped), or a video that loops.

Photos (``segment --background``, :func:`render_photo`): a PATH background is decoded once per
process (:func:`photo_still`, cached by path, size and mtime) and scaled to cover each photo; a
video PATH gives its first frame.

Nothing here reads argparse: :func:`parse_background` raises :class:`BackgroundError` (a
ValueError); the argparse type is ``cli.args.background``.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..engine.alpha import alpha_for, blend

DEFAULT_BLUR = 3.0          # sigma, % of the frame's shorter side
MAX_BLUR = 50.0
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".gif", ".webp", ".mpg", ".mpeg", ".ts")


@dataclass(frozen=True)
class BackgroundSpec:
    """A parsed ``--background`` value (picklable, cheap: nothing is opened until :func:`open_background`)."""

    kind: str                                   # "blur", "color", "image", "video"
    strength: float = DEFAULT_BLUR              # blur
    color: tuple[int, int, int] = (0, 0, 0)     # RGB
    path: Path | None = None

    def describe(self) -> str:
        if self.kind == "blur":
            return f"blur:{self.strength:g}"
        if self.kind == "color":
            return ",".join(map(str, self.color))
        return str(self.path)


class BackgroundError(ValueError):
    """A ``--background`` value that is not blur[:STRENGTH], R,G,B or a readable image/video file."""


def parse_background(text: str) -> BackgroundSpec:
    """``blur``, ``blur:5``, ``0,255,0`` or an existing image/video file; BackgroundError otherwise."""
    raw = text.strip()
    if raw.lower() == "blur" or raw.lower().startswith("blur:"):
        strength = DEFAULT_BLUR
        if ":" in raw:
            try:
                strength = float(raw.split(":", 1)[1])
            except ValueError:
                strength = -1.0
            if not 0.0 < strength <= MAX_BLUR:
                raise BackgroundError(f"{text!r}: blur strength must be a number in (0, {MAX_BLUR:g}] "
                                                 f"(% of the frame's shorter side), e.g. blur:3")
        return BackgroundSpec("blur", strength=strength)
    if "," in raw and not Path(raw).exists():
        try:
            values = tuple(int(v) for v in raw.split(","))
        except ValueError:
            values = ()
        if len(values) != 3 or not all(0 <= v <= 255 for v in values):
            raise BackgroundError(f"{text!r}: expected R,G,B with values 0-255 (e.g. 0,255,0), "
                                             f"blur[:STRENGTH] or an image/video file")
        return BackgroundSpec("color", color=values)  # type: ignore[arg-type]
    path = Path(raw)
    if not path.is_file():
        raise BackgroundError(f"{text!r}: no such file; expected blur[:STRENGTH], R,G,B or an "
                                         f"image/video file")
    kind = "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"
    return BackgroundSpec(kind, path=path)


def cover(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale ``picture`` to cover height x width (aspect kept), centre-cropped."""
    h, w = picture.shape[:2]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    scaled = cv2.resize(picture, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y, x = (size[1] - height) // 2, (size[0] - width) // 2
    return np.ascontiguousarray(scaled[y:y + height, x:x + width])


def blurred(picture: np.ndarray, strength: float = DEFAULT_BLUR) -> np.ndarray:
    """Gaussian blur with sigma = strength % of the shorter side, done at 1/f size (f chosen so the
    reduced sigma is about 2 px) and scaled back: the cost does not grow with the strength."""
    h, w = picture.shape[:2]
    sigma = max(0.5, strength / 100.0 * min(h, w))
    factor = max(1, int(sigma / 2))
    if factor > 1:
        small = cv2.resize(picture, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(picture, (0, 0), sigma)


def blurred_behind(picture: np.ndarray, alpha: np.ndarray, strength: float = DEFAULT_BLUR) -> np.ndarray:
    """The blur of what is behind the subject: a normalized convolution that leaves the subject
    (weight ``1 - alpha``) out, so its colours do not bleed into the blurred background as a halo.
    Done at the reduced size of :func:`blurred`; where no background is near (deep inside the
    subject, hidden anyway), the plain blur."""
    h, w = picture.shape[:2]
    sigma = max(0.5, strength / 100.0 * min(h, w))
    factor = max(1, int(sigma / 2))
    size = (max(1, w // factor), max(1, h // factor))
    small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    weight = 1.0 - cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    s = sigma / factor
    num = cv2.GaussianBlur(small * weight[..., None], (0, 0), s)
    den = cv2.GaussianBlur(weight, (0, 0), s)
    plain = cv2.GaussianBlur(small, (0, 0), s)
    behind = num / np.maximum(den, 1e-3)[..., None]
    trust = np.clip(den * 20.0, 0.0, 1.0)[..., None]   # ~no background within reach: the plain blur
    out = behind * trust + plain * (1.0 - trust)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR) if factor > 1 else out


class Background:
    """Pictures to put behind the subject, one per frame: ``picture(frame) -> HxWx3 uint8`` in the
    frame's channel order (``order``: "BGR" for video frames, "RGB" for photos)."""

    def __init__(self, spec: BackgroundSpec, order: str = "BGR"):
        self.spec = spec
        self.order = order.upper()
        self._cache: np.ndarray | None = None     # colour / image at the last frame size
        self._capture = None                      # video backgrounds
        self._still: np.ndarray | None = None
        if spec.kind == "image":
            from ..io.images import read_image
            rgb = read_image(spec.path)
            if rgb.ndim == 2:
                rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
            rgb = rgb[..., :3]
            self._still = np.ascontiguousarray(rgb[..., ::-1] if self.order == "BGR" else rgb)
        elif spec.kind == "video":
            self._capture = _open_loop(spec.path)

    def picture(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        kind = self.spec.kind
        if kind == "blur":
            return blurred(np.ascontiguousarray(frame[..., :3]), self.spec.strength)
        if kind == "video":
            return cover(self._capture.next(self.order), height, width)
        if self._cache is None or self._cache.shape[:2] != (height, width):
            if kind == "color":
                color = self.spec.color[::-1] if self.order == "BGR" else self.spec.color
                self._cache = np.empty((height, width, 3), np.uint8)
                self._cache[:] = color
            else:
                self._cache = cover(self._still, height, width)
        return self._cache

    def composite(self, frame: np.ndarray, mask: np.ndarray, edge: str = "soft",
                  alpha: np.ndarray | None = None) -> np.ndarray:
        """The subject (``mask``, softened by ``edge``) on this background."""
        if alpha is None:
            alpha = alpha_for(edge, frame, mask)
        frame = np.ascontiguousarray(frame[..., :3])
        if self.spec.kind == "blur":
            return blend(frame, blurred_behind(frame, alpha, self.spec.strength), alpha)
        return blend(frame, self.picture(frame), alpha)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None


class _LoopingVideo:
    """A video read frame after frame, from the start again at its end (OpenCV; PyAV for what it cannot open)."""

    def __init__(self, path: Path):
        self.path = path
        self._cap = self._open()
        self._last: np.ndarray | None = None

    def _open(self):
        from ..io.sources import open_source
        return open_source(str(self.path))

    def next(self, order: str) -> np.ndarray:
        ok, frame = self._cap.read()
        if not ok:
            self._cap.release()
            self._cap = self._open()
            ok, frame = self._cap.read()
            if not ok:
                if self._last is None:
                    raise ValueError(f"{self.path}: no frame could be decoded for the background")
                frame = self._last
        self._last = frame
        return frame if order == "BGR" else np.ascontiguousarray(frame[..., ::-1])

    def close(self) -> None:
        self._cap.release()


def _open_loop(path: Path) -> _LoopingVideo:
    return _LoopingVideo(path)


def open_background(spec: BackgroundSpec | None, order: str = "BGR") -> Background | None:
    return None if spec is None else Background(spec, order)


# ---------------------------------------------------------------- photos: segment --background / --edge

PHOTO_FORMATS = ("cutout", "composite", "overlay")   # the formats --edge (and --background) change
EDGES = ("soft", "hard")
_STILLS: dict[tuple, np.ndarray] = {}                 # (path, kind, size, mtime_ns) -> RGB, read-only
_STILLS_LOCK = threading.Lock()
_MAX_STILLS = 4


def _load_still(spec: BackgroundSpec) -> np.ndarray:
    """An image background's pixels, or a video background's first frame: RGB uint8, read-only."""
    if spec.kind == "video":
        from ..io.sources import open_source
        capture = open_source(str(spec.path))
        try:
            ok, frame = capture.read()
        finally:
            capture.release()
        if not ok or frame is None:
            raise BackgroundError(f"{spec.path}: no frame could be decoded for the background")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        rgb = np.ascontiguousarray(frame[..., :3][..., ::-1])
    else:
        from ..io.images import read_image
        rgb = np.ascontiguousarray(read_image(spec.path)[..., :3])
    rgb.setflags(write=False)
    return rgb


def photo_still(spec: BackgroundSpec) -> np.ndarray:
    """The picture behind photos for an image or video ``spec`` (a video: its first frame), RGB
    uint8, decoded once per process (cached by path, size and mtime; safe from any thread).
    BackgroundError when it cannot be read."""
    try:
        st = spec.path.stat()
    except OSError as exc:
        raise BackgroundError(f"{spec.path}: cannot read the background ({exc.strerror or exc})") from None
    key = (str(spec.path), spec.kind, st.st_size, st.st_mtime_ns)
    with _STILLS_LOCK:                      # writer threads wait for the one decode
        still = _STILLS.get(key)
        if still is None:
            try:
                still = _load_still(spec)
            except BackgroundError:
                raise
            except Exception as exc:        # ImageReadError, SourceError, OSError: one line
                raise BackgroundError(f"{spec.path}: not a usable background image or video ({exc})") from None
            if len(_STILLS) >= _MAX_STILLS:
                _STILLS.pop(next(iter(_STILLS)))
            _STILLS[key] = still
    return still


def uses_photo_render(fmt: str, background: BackgroundSpec | None, edge: str) -> bool:
    """Whether a photo's output is :func:`render_photo`'s rather than the plain format's: with a
    background, or a soft edge on a format that shows one (mask, prob, side-by-side never change)."""
    return background is not None or (edge == "soft" and fmt in PHOTO_FORMATS)


def check_photo_settings(fmt: str, background: BackgroundSpec | None, edge: str) -> None:
    """Refuse a combination no photo can be rendered with (BackgroundError), and decode a PATH
    background now, once, so an unreadable one stops the run before any output is written."""
    if edge not in EDGES:
        raise BackgroundError(f"unknown edge {edge!r}; choose soft or hard")
    if background is None:
        return
    if fmt != "composite":
        raise BackgroundError(f"--background puts the subject on a background (--format composite), "
                              f"not --format {fmt}")
    if background.kind in ("image", "video"):
        photo_still(background)


def background_identity(spec: BackgroundSpec | None) -> str | None:
    """What the manifest records of a background: ``blur:3``, ``R,G,B``, or ``image:sha256:HEX`` /
    ``video:sha256:HEX`` (the file's content: another picture at the same path redoes the output)."""
    if spec is None:
        return None
    if spec.kind in ("blur", "color"):
        return spec.describe()
    digest = hashlib.sha256()
    with open(spec.path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return f"{spec.kind}:sha256:{digest.hexdigest()}"


def photo_config(fmt: str, background: BackgroundSpec | None, edge: str) -> dict:
    """The manifest's ``background`` and ``edge`` for these settings: None where they do not
    change the pixels (so outputs recorded before these options existed stay done)."""
    used = uses_photo_render(fmt, background, edge)
    return {"background": background_identity(background), "edge": edge if used else None}


def render_photo(fmt: str, rgb: np.ndarray, mask: np.ndarray, background: BackgroundSpec | None = None,
                 edge: str = "soft", style=None) -> np.ndarray:
    """A photo's ``--format fmt`` picture with ``--background`` / ``--edge`` (RGB in, RGB or RGBA out):
    cutout: RGBA with the (soft) alpha, colour zeroed where it is 0; overlay: the tint faded in
    with the alpha; composite: the subject on ``background`` (default: ``style.background``'s
    colour). An image background is scaled to cover the photo and centre-cropped, a video
    background gives its first frame."""
    from ..engine.alpha import premultiplied_cutout
    from ..io.formats import Style
    style = style or Style()
    rgb = np.ascontiguousarray(rgb[..., :3])
    alpha = alpha_for(edge, rgb, mask)
    if background is None and fmt == "cutout":
        return premultiplied_cutout(rgb, alpha)
    if background is None and fmt == "overlay":
        tint = np.empty_like(rgb)
        tint[:] = style.overlay
        return blend(cv2.addWeighted(rgb, 0.5, tint, 0.5, 0.0), rgb, alpha)
    if fmt != "composite":
        raise BackgroundError(f"--background puts the subject on a background (--format composite), "
                              f"not --format {fmt}")
    spec = background or BackgroundSpec("color", color=tuple(style.background))
    height, width = rgb.shape[:2]
    if spec.kind == "blur":
        behind = blurred_behind(rgb, alpha, spec.strength)
    elif spec.kind == "color":
        behind = np.empty_like(rgb)
        behind[:] = spec.color
    else:
        behind = cover(photo_still(spec), height, width)
    return blend(rgb, behind, alpha)


def composite_photo(rgb: np.ndarray, mask: np.ndarray, spec: BackgroundSpec, edge: str = "soft") -> np.ndarray:
    """``segment --background`` on a photo: the subject (RGB uint8) on ``spec`` (a video background
    gives its first frame), with a soft (guided-filter) or hard alpha. RGB uint8 out."""
    return render_photo("composite", rgb, mask, spec, edge)


def cutout_photo(rgb: np.ndarray, mask: np.ndarray, edge: str = "soft") -> np.ndarray:
    """``segment --format cutout`` with soft edges: RGBA, colour zeroed where alpha is 0."""
    return render_photo("cutout", rgb, mask, None, edge)

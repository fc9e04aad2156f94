"""The distillation teacher: DeepLabV3-MobileNetV2 (PASCAL VOC, uint8 TFLite), run with LiteRT.

Part of the ``[train]`` extra (``ai-edge-litert``, no TensorFlow needed to run it). The package never
ships or downloads the teacher: every caller passes the ``.tflite`` path (e.g.
``../shared/teacher/deeplabv3_mnv2_pascal_quant.tflite``).

The maths are those of ``../shared/teacher/make_soft_labels.py``, which made the shipped soft masks:
the RGB image (EXIF orientation applied by ``read_image``) is scaled so its longest side is 513, put
top-left on a 513x513 canvas of 128; the model's 33x33x21 logits (tensor ``logits/semantic/BiasAdd``,
read with ``experimental_preserve_all_tensors`` because the graph itself only outputs an ArgMax) are
dequantised, upsampled bilinearly to 513, cropped to the picture, resized to the image and soft-maxed.
With ``flip`` the logits are averaged with those of the mirrored picture first.

``make_soft_labels`` turns a folder of images into soft masks (NAME.png = round(255 * p), resumable,
atomic writes); given a video ``clip.mp4@START:STOP:STEP`` it writes a ``--soft`` root
(images/NAME.jpg + teacher_soft/NAME.png). ``make_soft_root`` builds one ``--soft`` root from any
mix of folders, image files and videos (``unetlite soft-labels``).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

CAT, DOG, PERSON = 8, 12, 15        # PASCAL VOC class ids (../shared/teacher/pascal_voc_labels.txt)
CANVAS_FILL = 128
LOGITS_PREFIX = "logits/semantic/BiasAdd"
INSTALL_HINT = "pip install '.[train]'"
SOFT_FOLDER = "teacher_soft"        # same name as train/distill.py's; kept here so this module imports nothing heavy
IMAGES_FOLDER = "images"
FRAME_JPEG_QUALITY = 95
# what unetlite.infer reads (its IMAGE_EXTENSIONS), repeated so importing this module loads nothing of infer
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".pam", ".jp2", ".j2k"})


class TeacherError(RuntimeError):
    """The teacher cannot run (runtime missing, model missing or not the expected one); str() is one line."""


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise TeacherError(f"the teacher needs the ai-edge-litert package, which is not installed: "
                           f"{INSTALL_HINT}") from None
    return Interpreter


def _resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize as make_soft_labels.py does it (Pillow's, which widens the filter when shrinking).
    Pillow comes with the [train] extra (matplotlib needs it); without it OpenCV's area filter is close."""
    try:
        from PIL import Image
    except ImportError:
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR), np.uint8)


class Teacher:
    """DeepLabV3 PASCAL VOC teacher. ``rgb`` arguments are HxWx3 uint8 RGB arrays (``read_image``).

    Not thread-safe (one LiteRT interpreter): use one Teacher per thread.
    """

    def __init__(self, model_path: str | os.PathLike, flip: bool = True, threads: int = 2):
        path = Path(model_path)
        if not path.is_file():
            raise TeacherError(f"{path}: teacher model not found")
        interpreter = _interpreter_class()
        try:
            with warnings.catch_warnings():   # "preserve_all_tensors is for debugging": it is how the logits are read
                warnings.simplefilter("ignore", UserWarning)
                self.it = interpreter(model_path=str(path), num_threads=threads,
                                      experimental_preserve_all_tensors=True)
            self.it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise TeacherError(f"{path}: not a loadable TFLite model ({str(exc).splitlines()[0] if str(exc) else exc})") \
                from None
        self.inp = self.it.get_input_details()[0]
        shape = tuple(int(s) for s in self.inp["shape"])
        logits = [d for d in self.it.get_tensor_details()
                  if d["name"].startswith(LOGITS_PREFIX) and len(d["shape"]) == 4]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or self.inp["dtype"] != np.uint8 or not logits:
            raise TeacherError(f"{path}: not the DeepLabV3 PASCAL VOC teacher (needs a [1,S,S,3] uint8 input and a "
                               f"'{LOGITS_PREFIX}' tensor)")
        self.size = shape[1]
        self.logits_index = logits[0]["index"]
        self.scale, self.zero = (float(v) for v in logits[0]["quantization"])
        self.classes = int(logits[0]["shape"][-1])
        self.flip = flip
        self.path = path

    def _logits(self, canvas: np.ndarray) -> np.ndarray:
        self.it.set_tensor(self.inp["index"], np.ascontiguousarray(canvas)[None])
        self.it.invoke()
        q = self.it.get_tensor(self.logits_index)[0].astype(np.float32)
        return cv2.resize((q - self.zero) * self.scale, (self.size, self.size), interpolation=cv2.INTER_LINEAR)

    def class_probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxWxC float32 soft-max over the 21 VOC classes, at the image's size."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        s = self.size / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        canvas = np.full((self.size, self.size, 3), CANVAS_FILL, np.uint8)
        canvas[:nh, :nw] = _resize_rgb(np.ascontiguousarray(rgb), nw, nh)
        logits = self._logits(canvas)
        if self.flip:
            mirrored = np.full_like(canvas, CANVAS_FILL)
            mirrored[:nh, :nw] = canvas[:nh, :nw][:, ::-1]
            logits[:nh, :nw] = (logits[:nh, :nw] + self._logits(mirrored)[:nh, :nw][:, ::-1]) / 2
        logits = cv2.resize(np.ascontiguousarray(logits[:nh, :nw]), (w, h), interpolation=cv2.INTER_LINEAR)
        if logits.ndim == 2:   # a 1-pixel-wide result loses its channel axis in cv2.resize
            logits = logits.reshape(h, w, -1)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def pet_probability(self, rgb: np.ndarray) -> np.ndarray:
        """HxW float32 P(cat) + P(dog)."""
        p = self.class_probabilities(rgb)
        return p[..., CAT] + p[..., DOG]

    def person_probability(self, rgb: np.ndarray) -> np.ndarray:
        """HxW float32 P(person) (VOC class 15)."""
        return self.class_probabilities(rgb)[..., PERSON]

    def pet_and_person(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both maps from one run."""
        p = self.class_probabilities(rgb)
        return p[..., CAT] + p[..., DOG], p[..., PERSON]


def to_png_levels(probability: np.ndarray) -> np.ndarray:
    """p in [0, 1] -> uint8 round(255 * p), the stored soft-mask format."""
    return np.clip(np.round(probability * 255), 0, 255).astype(np.uint8)


def write_atomic(path: Path, image: np.ndarray, rgb: bool = False, quality: int = FRAME_JPEG_QUALITY) -> None:
    """Encode by the file's extension, write to a temp file in the same folder, fsync, rename over ``path``:
    a crash leaves the old file or none, never half a PNG that a resumed run would skip."""
    if rgb and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ext = path.suffix.lower()
    ok, buf = cv2.imencode(ext, image, [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else [])
    if not ok:
        raise ValueError(f"cannot encode {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class SoftLabelReport:
    """What one call wrote: ``failed`` holds (input, one-line reason)."""

    written: int = 0
    skipped: int = 0                     # outputs that existed already (resume)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: SoftLabelReport) -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.failed += other.failed
        self.seconds += other.seconds


Progress = Callable[[str], None]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm"})   # as train/distill.py's


def parse_frames(spec: str) -> tuple[Path, slice]:
    """``clip.mp4@START:STOP:STEP`` -> (path, frame slice); a plain path takes every frame (the ``--negatives``
    syntax of train/distill.py)."""
    path, _, rng = spec.partition("@")
    try:
        parts = [int(p) if p else None for p in rng.split(":")] if rng else []
    except ValueError:
        parts = [None] * 4
    if len(parts) > 3:
        raise ValueError("frame range must be START:STOP[:STEP] (whole numbers)")
    return Path(path), slice(*(parts + [None] * (3 - len(parts)))) if parts else slice(None)


def _is_video(spec: str) -> bool:
    return not Path(spec).is_dir() and Path(spec.partition("@")[0]).suffix.lower() in VIDEO_EXTENSIONS


def iter_video_frames(spec: str) -> Iterator[tuple[str, np.ndarray]]:
    """(NAME, RGB frame) for ``clip.mp4[@START:STOP:STEP]``, streamed; NAME = ``<stem>_f<index:05d>``
    (the names ``--negatives`` gives the same frames). Raises ValueError/FileNotFoundError with a one-line
    reason that does not repeat ``spec``."""
    path, frames = parse_frames(spec)
    start, stop, step = frames.start or 0, frames.stop, frames.step or 1
    if start < 0 or (stop is not None and stop < 0) or step < 1:
        raise ValueError("frame range must be START:STOP[:STEP] with non-negative bounds and STEP >= 1")
    if not path.is_file():
        raise FileNotFoundError("video not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError("not a readable video")
    index = 0
    try:
        while stop is None or index < stop:
            wanted = index >= start and (index - start) % step == 0
            if not capture.grab():
                break
            if wanted:
                ok, frame = capture.retrieve()
                if not ok:
                    break
                yield f"{path.stem}_f{index:05d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ValueError("no frame could be decoded")
    if index <= start:
        raise ValueError(f"no frame in that range ({index} frames read)")


def _progress_line(done: int, total: int | None, started: float, what: str) -> str:
    rate = (time.monotonic() - started) / max(done, 1)
    return f"{what}: {done}{'' if total is None else f'/{total}'} ({rate:.2f} s each)"


def _soft_masks_for_images(files: Sequence[Path], masks_dir: Path, teacher: Teacher, progress: Progress | None,
                           every: int, image_copy_dir: Path | None = None) -> SoftLabelReport:
    from unetlite.infer import ImageReadError, read_image

    report, started = SoftLabelReport(), time.monotonic()
    for i, file in enumerate(files, 1):
        out = masks_dir / f"{file.stem}.png"
        try:
            if out.is_file():
                if image_copy_dir is not None:
                    _place_image(file, image_copy_dir)
                report.skipped += 1
            else:
                levels = to_png_levels(teacher.pet_probability(read_image(file)))
                if image_copy_dir is not None:   # only pictures that got a mask join the root
                    _place_image(file, image_copy_dir)
                write_atomic(out, levels)
                report.written += 1
        except ImageReadError as exc:
            report.failed.append((str(file), exc.reason))
        except (OSError, ValueError) as exc:
            report.failed.append((str(file), str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        if progress and (i % every == 0 or i == len(files)) and report.written:
            progress(_progress_line(i, len(files), started, str(masks_dir)))
    report.seconds = time.monotonic() - started
    return report


def _place_image(file: Path, images_dir: Path) -> None:
    """Make ``images_dir/<file.name>`` the same picture: a hard link where possible, else a copy."""
    target = images_dir / file.name
    if target.exists():
        if target.samefile(file) or target.stat().st_size == file.stat().st_size:
            return
        raise ValueError(f"{target} exists and is a different file (two sources share the name {file.name})")
    images_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.link(file, target)
    except OSError:
        tmp = images_dir / f".{file.name}.copy.tmp"
        shutil.copyfile(file, tmp)
        os.replace(tmp, target)


def _soft_root_for_video(spec: str, root: Path, teacher: Teacher, progress: Progress | None,
                         every: int) -> SoftLabelReport:
    report, started, done = SoftLabelReport(), time.monotonic(), 0
    images, masks = root / IMAGES_FOLDER, root / SOFT_FOLDER
    try:
        for name, rgb in iter_video_frames(spec):
            done += 1
            image, mask = images / f"{name}.jpg", masks / f"{name}.png"
            if image.is_file() and mask.is_file():
                report.skipped += 1
                continue
            try:
                if not image.is_file():
                    write_atomic(image, rgb, rgb=True)
                write_atomic(mask, to_png_levels(teacher.pet_probability(rgb)))
                report.written += 1
            except (OSError, ValueError) as exc:
                report.failed.append((f"{spec} frame {name}", str(exc).splitlines()[0]))
            if progress and done % every == 0:
                progress(_progress_line(done, None, started, spec))
    except (OSError, ValueError) as exc:
        report.failed.append((spec, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    report.seconds = time.monotonic() - started
    return report


def make_soft_labels(source: str | os.PathLike, out_dir: str | os.PathLike, teacher: Teacher,
                     progress: Progress | None = None, every: int = 50) -> SoftLabelReport:
    """Soft pet masks from the teacher; existing outputs are kept (it resumes), every file is written atomically.

    - ``source`` a folder of images: ``out_dir/NAME.png`` = round(255 * p) at each image's (EXIF-oriented) size,
      as ``../shared/data/*/teacher_soft`` holds them. Unreadable images are reported in ``failed``, the rest done.
    - ``source`` a video ``clip.mp4[@START:STOP:STEP]``: ``out_dir`` becomes a ``--soft`` root, frames in
      ``out_dir/images/NAME.jpg``, masks in ``out_dir/teacher_soft/NAME.png`` (NAME = ``clip_f00012``).
    ``progress`` gets a one-line status every ``every`` inputs.
    """
    spec, out = os.fspath(source), Path(out_dir)
    if _is_video(spec):
        return _soft_root_for_video(spec, out, teacher, progress, every)
    folder = Path(spec)
    if not folder.is_dir():
        return SoftLabelReport(failed=[(spec, "not a folder of images or a video (clip.mp4[@START:STOP:STEP])")])
    return _soft_masks_for_images(_image_files(folder), out, teacher, progress, every)


def make_soft_root(sources: Sequence[str | os.PathLike], root: str | os.PathLike, teacher: Teacher,
                   progress: Progress | None = None, every: int = 50) -> SoftLabelReport:
    """One ``--soft`` root (``root/images`` + ``root/teacher_soft``) from folders, image files and videos.

    Images that are not already in ``root/images`` are hard-linked (or copied) there, so the root is
    self-contained; a folder that IS ``root/images`` is labelled in place. Resumes like make_soft_labels.
    """
    root = Path(root)
    images, masks = root / IMAGES_FOLDER, root / SOFT_FOLDER
    total = SoftLabelReport()
    loose: list[Path] = []
    for source in sources:
        spec = os.fspath(source)
        if _is_video(spec):
            total.add(_soft_root_for_video(spec, root, teacher, progress, every))
        elif Path(spec).is_dir():
            folder = Path(spec)
            in_place = images.is_dir() and folder.resolve() == images.resolve()
            total.add(_soft_masks_for_images(_image_files(folder), masks, teacher, progress, every,
                                             None if in_place else images))
        elif Path(spec).is_file():
            loose.append(Path(spec))
        else:
            total.failed.append((spec, "not found" if not Path(spec.partition("@")[0]).exists()
                                 else "not a folder, an image or a video (clip.mp4[@START:STOP:STEP])"))
    if loose:
        total.add(_soft_masks_for_images(loose, masks, teacher, progress, every, images))
    return total

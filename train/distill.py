"""Distillation targets: a teacher's soft pet masks become confident targets, pet-free pictures empty ones.

A teacher (``train/teacher.py``) knows far more scenes than the few hundred hand-labelled Oxford
pets, but it is coarse at the edge and sometimes unsure. Its probability is kept where it is
confident (>= ``high`` -> pet, <= ``low`` -> background) and the band between is IGNORE, exactly
like the trimap border, so the student learns edges from human labels and scenes from the
teacher. Images the teacher finds (nearly) empty or is unsure about are left out. Pet-free
pictures (scene photos, frames of pet-free video) get an all-background target: without them a
student trained on photos that always hold a pet learns that every frame holds one.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from unetlite.infer.io.images import IMAGE_EXTENSIONS, ImageReadError, read_image, read_label
from unetlite.infer.engine.preprocess import resize_image

from .data import Arrays

log = logging.getLogger(__name__)

IGNORE = 2
SOFT_FOLDER = "teacher_soft"   # ROOT/images/NAME.jpg -> ROOT/teacher_soft/NAME.png (round(255 * p))
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm"}


@dataclass(frozen=True)
class SoftConfig:
    """How a soft mask becomes a target, and which images are worth keeping."""

    high: float = 0.8          # p >= high -> pet
    low: float = 0.2           # p <= low -> background; between: ignored
    min_pet: float = 0.01      # drop images whose p > 0.5 covers less of the frame (drawings, misses)
    max_unsure: float = 0.3    # drop images whose unsure band covers more of the frame
    unsure: tuple[float, float] = (0.2, 0.8)  # the teacher is unsure between these, whatever the targets use


def soft_target(probability: np.ndarray, cfg: SoftConfig = SoftConfig()) -> np.ndarray:
    """HxW float probability -> uint8 {0, 1, IGNORE} target."""
    target = np.full(probability.shape, IGNORE, np.uint8)
    target[probability >= cfg.high] = 1
    target[probability <= cfg.low] = 0
    return target


def soft_problem(probability: np.ndarray, cfg: SoftConfig = SoftConfig()) -> str | None:
    """Why an image's soft mask is not a usable target (None when it is)."""
    pet = float((probability > 0.5).mean())
    if pet < cfg.min_pet:
        return f"teacher finds no pet ({pet:.1%} of the frame)"
    low, high = cfg.unsure
    unsure = float(((probability > low) & (probability < high)).mean())
    if unsure > cfg.max_unsure:
        return f"teacher unsure on {unsure:.0%} of the frame"
    return None


def soft_pairs(root: str | Path) -> list[tuple[str, Path, Path]]:
    """(name, image, soft mask) for every image under ROOT/images that has ROOT/teacher_soft/NAME.png."""
    root = Path(root)
    images, soft = root / "images", root / SOFT_FOLDER
    if not images.is_dir() or not soft.is_dir():
        raise FileNotFoundError(f"{root}: needs images/ and {SOFT_FOLDER}/ (make them with `unetlite soft-labels`)")
    pairs = []
    for image in sorted(images.iterdir()):
        mask = soft / f"{image.stem}.png"
        if image.suffix.lower() in IMAGE_EXTENSIONS and mask.is_file():
            pairs.append((image.stem, image, mask))
    return pairs


def _load_soft(item: tuple[str, Path, Path], size: tuple[int, int], cfg: SoftConfig):
    name, image_path, mask_path = item
    try:
        image = read_image(image_path)   # the teacher saw the EXIF-oriented picture
        soft = read_label(mask_path)
    except ImageReadError as exc:
        return name, None, f"{exc.path}: {exc.reason}"
    if image.shape[:2] != soft.shape[:2]:
        return name, None, f"{mask_path}: size differs from its image"
    probability = soft.astype(np.float32) / 255.0
    problem = soft_problem(probability, cfg)
    if problem:
        return name, None, f"{image_path}: {problem}"
    small = cv2.resize(probability, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return name, (resize_image(image, size), soft_target(small, cfg)), None


def load_soft(root: str | Path, size: tuple[int, int], cfg: SoftConfig = SoftConfig(), workers: int = 8) -> Arrays:
    """Model-size images and {0, 1, IGNORE} targets from a folder of images and teacher soft masks."""
    names, images, masks, dropped = [], [], [], []
    with ThreadPoolExecutor(workers) as pool:
        for name, loaded, reason in pool.map(lambda item: _load_soft(item, size, cfg), soft_pairs(root)):
            if loaded is None:
                dropped.append((name, reason))
                continue
            names.append(name)
            images.append(loaded[0])
            masks.append(loaded[1])
    log.info("soft labels from %s: %d kept, %d dropped", root, len(names), len(dropped))
    for _, reason in dropped[:20]:
        log.debug("dropped %s", reason)
    return _arrays(names, images, masks, size, [])


def parse_frames(spec: str) -> tuple[Path, slice]:
    """``clip.mp4@START:STOP:STEP`` -> (path, frame slice); a plain path takes every frame."""
    path, _, rng = spec.partition("@")
    parts = [int(p) if p else None for p in rng.split(":")] if rng else []
    if len(parts) > 3:
        raise ValueError(f"{spec}: frame range must be START:STOP[:STEP]")
    return Path(path), slice(*(parts + [None] * (3 - len(parts)))) if parts else slice(None)


def video_frames(path: Path, frames: slice) -> list[tuple[str, np.ndarray]]:
    """(name, RGB frame) for the frames of ``path`` in the slice."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"{path}: not a readable video")
    start, stop, step = frames.start or 0, frames.stop, frames.step or 1
    out, index = [], 0
    try:
        while stop is None or index < stop:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= start and (index - start) % step == 0:
                out.append((f"{path.stem}_f{index:05d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            index += 1
    finally:
        capture.release()
    return out


def load_negatives(spec: str | Path, size: tuple[int, int]) -> Arrays:
    """Pet-free pictures with all-background targets: a folder of images, or ``clip.mp4[@START:STOP:STEP]``."""
    path, frames = parse_frames(str(spec))
    names, images, failed = [], [], []
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        for name, frame in video_frames(path, frames):
            names.append(name)
            images.append(resize_image(frame, size))
    elif path.is_dir():
        for file in sorted(path.iterdir()):
            if file.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                images.append(resize_image(read_image(file), size))
                names.append(file.stem)
            except ImageReadError as exc:
                failed.append((exc.path, exc.reason))
    else:
        raise FileNotFoundError(f"{spec}: not a folder of images or a video")
    masks = [np.zeros(size, np.uint8)] * len(images)
    log.info("pet-free pictures from %s: %d", spec, len(names))
    return _arrays(names, images, masks, size, failed)


def _arrays(names, images, masks, size, failed) -> Arrays:
    height, width = size
    return Arrays(names, np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8),
                  np.stack(masks) if masks else np.zeros((0, height, width), np.uint8), failed)

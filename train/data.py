"""Training data: Oxford-IIIT Pet pairs -> in-memory arrays -> tf.data pipelines.

Decoding happens once, in parallel, before training; a corrupt or missing pair is
reported by name and left out then, so it can never crash an epoch. Images go
through ``unetlite.infer.preprocess`` (the single source of truth for resizing and
scaling) so training and inference see identical pixels.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from unetlite.infer.engine.contract import ModelContract
from unetlite.infer.io.dataset import Pair, discover, find_layout, label_problem, read_list
from unetlite.infer.io.images import IMAGE_EXTENSIONS, ImageReadError, read_image, read_label
from unetlite.infer.engine.preprocess import label_to_mask, resize_image, resize_mask, to_float

from .augment import AugmentConfig, PasteConfig, augment_pair, paste_pet, random_crop

log = logging.getLogger(__name__)


@dataclass
class Arrays:
    """Decoded, model-size training examples."""

    names: list[str]
    images: np.ndarray   # N x S x S x 3 uint8 RGB
    masks: np.ndarray    # N x S x S uint8 {0, 1}
    failed: list[tuple[str, str]]  # (file, reason)

    def __len__(self) -> int:
        return len(self.names)


def _names_in(path: Path) -> set[str]:
    return set(read_list(path)) if path.is_file() else set()


def held_out_names(root: str | Path) -> set[str]:
    """Names that must never be trained on: the root's test list and any official test list beside it."""
    layout = find_layout(root)
    return _names_in(layout.lists / "test.txt") | _names_in(Path(root) / "official" / "test.txt")


def _trainval(root: str | Path, held_out: set[str]) -> list[Pair]:
    layout = find_layout(root)
    has_list = (layout.lists / "trainval.txt").is_file()
    return [p for p in discover(root, "trainval" if has_list else None) if p.name not in held_out]


def split_pairs(roots: Sequence[str | Path], val_fraction: float = 0.12, seed: int = 0,
                val_root: str | Path | Sequence[str | Path] | None = None,
                val_names: set[str] | None = None) -> tuple[list[Pair], list[Pair], str]:
    """(train, val, description) over one or more dataset roots.

    Validation is carved out of trainval (fixed, seeded), never taken from the test split:
    checkpoints and settings are chosen on it, and the test split is scored once per final
    model with `unetlite eval`. Without a trainval list, every pair not in a test list is trainval.
    Names in any test list (the root's or the official one) are never trained on.
    With ``val_root`` (one or several roots), validation is those roots' trainval instead (e.g.
    images a model being fine-tuned has never seen); ``val_names`` narrows a val root without lists
    to those names (a fixed part of a set, the rest of which may be trained on). Nothing validated on
    is trained on.
    """
    if isinstance(roots, (str, Path)):
        roots = [roots]
    held_out: set[str] = set()
    for root in roots:
        held_out |= held_out_names(root)
    trainval = sorted((p for root in roots for p in _trainval(root, held_out)), key=lambda p: p.name)
    if val_root is not None:
        val_roots = [val_root] if isinstance(val_root, (str, Path)) else list(val_root)
        val: list[Pair] = []
        for root in val_roots:
            pairs = _trainval(root, held_out | held_out_names(root))
            val += [p for p in pairs if val_names is None or p.name in val_names
                    or (find_layout(root).lists / "trainval.txt").is_file()]
        chosen = {p.name for p in val}
        val.sort(key=lambda p: p.name)
        train = [p for p in trainval if p.name not in chosen]
        return train, val, (f"{len(roots)} root(s), trainval minus test lists; validation = "
                            f"{', '.join(map(str, val_roots))} ({len(val)} pairs, not trained on); "
                            f"{len(held_out)} test names held out")
    order = np.random.default_rng(seed).permutation(len(trainval))
    n_val = max(1, round(len(trainval) * val_fraction))
    val = [trainval[i] for i in sorted(order[:n_val])]
    train = [trainval[i] for i in sorted(order[n_val:])]
    return train, val, (f"{len(roots)} root(s), trainval minus test lists, seeded {1 - val_fraction:.0%}/"
                        f"{val_fraction:.0%} train/val split (seed {seed}); {len(held_out)} test names held out")


def load_pair(pair: Pair, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair at model size. Raises ImageReadError naming the bad file."""
    # Trimaps are aligned with the stored pixels, so EXIF orientation must not be applied.
    image = read_image(pair.image, apply_orientation=False)
    trimap = read_label(pair.trimap)
    if image.shape[:2] != trimap.shape[:2]:
        raise ImageReadError(pair.trimap, f"size {trimap.shape[1]}x{trimap.shape[0]} differs from its image "
                                          f"{image.shape[1]}x{image.shape[0]}")
    problem = label_problem(trimap, pair.kind)
    if problem:
        raise ImageReadError(pair.trimap, problem)
    return resize_image(image, size), label_to_mask(resize_mask(trimap, size), pair.kind)


def load_arrays(pairs: list[Pair], size: tuple[int, int], workers: int = 8) -> Arrays:
    """Decode all pairs in parallel (OpenCV releases the GIL); skip and report bad ones."""
    def _load(pair):
        try:
            return pair.name, load_pair(pair, size), None
        except ImageReadError as exc:
            return pair.name, None, (exc.path, exc.reason)

    names, images, masks, failed = [], [], [], []
    with ThreadPoolExecutor(workers) as pool:
        for name, loaded, error in pool.map(_load, pairs):
            if error:
                log.warning("skipping %s: %s", error[0], error[1])
                failed.append(error)
                continue
            names.append(name)
            images.append(loaded[0])
            masks.append(loaded[1])
    height, width = size
    return Arrays(names,
                  np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8),
                  np.stack(masks) if masks else np.zeros((0, height, width), np.uint8),
                  failed)


def concat_arrays(first: Arrays, second: Arrays) -> Arrays:
    return Arrays(first.names + second.names, np.concatenate([first.images, second.images]),
                  np.concatenate([first.masks, second.masks]), first.failed + second.failed)


def load_backgrounds(folder: str | Path, size: tuple[int, int], workers: int = 8) -> list[np.ndarray]:
    """Pet-free scenes, each scaled so it covers ``size`` (random crops are taken per example)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)

    def _load(path: Path) -> np.ndarray | None:
        try:
            image = read_image(path)
        except ImageReadError as exc:
            log.warning("skipping background %s: %s", exc.path, exc.reason)
            return None
        scale = max(size[0] / image.shape[0], size[1] / image.shape[1])
        target = (max(size[0], round(image.shape[0] * scale)), max(size[1], round(image.shape[1] * scale)))
        return resize_image(image, target)

    with ThreadPoolExecutor(workers) as pool:
        return [b for b in pool.map(_load, files) if b is not None]


def make_dataset(arrays: Arrays, batch_size: int, training: bool, seed: int = 0,
                 augment: AugmentConfig | None = AugmentConfig(), contract: ModelContract = ModelContract(),
                 backgrounds: Sequence[np.ndarray] = (), paste: PasteConfig | None = None,
                 pasteable: int | None = None):
    """tf.data pipeline: shuffled, augmented (training only), parallel map, prefetch.

    Each example's augmentation RNG is seeded from (seed, running example counter),
    so a run is reproducible with the same ``seed``. With ``paste`` and ``backgrounds``,
    the first ``pasteable`` examples (the hand-labelled ones) are sometimes pasted onto a
    background before the geometric and photometric augmentation.
    """
    import tensorflow as tf

    n = len(arrays)
    height, width = arrays.images.shape[1:3]

    def _example(counter, index):
        image, mask = arrays.images[index], arrays.masks[index]
        rng = np.random.default_rng([seed, int(counter)])
        if (training and paste is not None and backgrounds and index < (n if pasteable is None else pasteable)
                and rng.random() < paste.probability):
            scene = random_crop(backgrounds[int(rng.integers(len(backgrounds)))], (height, width), rng)
            image, mask = paste_pet(image, mask, scene, rng, paste)
        if training and augment is not None:
            image, mask = augment_pair(image, mask, rng, augment)
        return to_float(image, contract), mask[..., None].astype(np.float32)

    def _map(counter, index):
        image, mask = tf.numpy_function(_example, [counter, index], [tf.float32, tf.float32], stateful=False)
        image.set_shape((height, width, 3))
        mask.set_shape((height, width, 1))
        return image, mask

    ds = tf.data.Dataset.range(n)
    if training:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

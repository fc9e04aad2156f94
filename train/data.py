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

import numpy as np

from unetlite.infer.contract import ModelContract
from unetlite.infer.dataset import Pair, discover, find_layout
from unetlite.infer.imageio import ImageReadError, read_image, read_label
from unetlite.infer.preprocess import resize_image, resize_mask, to_float, trimap_to_mask

from .augment import AugmentConfig, augment_pair

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


def split_pairs(root: str | Path, val_fraction: float = 0.05, seed: int = 0) -> tuple[list[Pair], list[Pair], str]:
    """(train, val, description): the official trainval/test split when its lists exist,
    otherwise the reference paper's random 95/5 split with ``seed``."""
    layout = find_layout(root)
    if (layout.lists / "trainval.txt").is_file() and (layout.lists / "test.txt").is_file():
        return discover(root, "trainval"), discover(root, "test"), "official trainval/test split"
    pairs = discover(root, None)
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, round(len(pairs) * val_fraction))
    val = [pairs[i] for i in sorted(order[:n_val])]
    train = [pairs[i] for i in sorted(order[n_val:])]
    return train, val, f"random {1 - val_fraction:.0%}/{val_fraction:.0%} split (seed {seed})"


def load_pair(pair: Pair, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair at model size. Raises ImageReadError naming the bad file."""
    # Trimaps are aligned with the stored pixels, so EXIF orientation must not be applied.
    image = read_image(pair.image, apply_orientation=False)
    trimap = read_label(pair.trimap)
    if image.shape[:2] != trimap.shape[:2]:
        raise ImageReadError(pair.trimap, f"size {trimap.shape[1]}x{trimap.shape[0]} differs from its image "
                                          f"{image.shape[1]}x{image.shape[0]}")
    if not np.isin(trimap, (1, 2, 3)).all():
        raise ImageReadError(pair.trimap, "values outside {1, 2, 3}: not an Oxford-IIIT Pet trimap")
    return resize_image(image, size), trimap_to_mask(resize_mask(trimap, size))


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


def make_dataset(arrays: Arrays, batch_size: int, training: bool, seed: int = 0,
                 augment: AugmentConfig | None = AugmentConfig(), contract: ModelContract = ModelContract()):
    """tf.data pipeline: shuffled, augmented (training only), parallel map, prefetch.

    Each example's augmentation RNG is seeded from (seed, running example counter),
    so a run is reproducible with the same ``seed``.
    """
    import tensorflow as tf

    n = len(arrays)
    height, width = arrays.images.shape[1:3]

    def _example(counter, index):
        image, mask = arrays.images[index], arrays.masks[index]
        if training and augment is not None:
            image, mask = augment_pair(image, mask, np.random.default_rng([seed, int(counter)]), augment)
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

"""Losses that understand an 'ignore' label (2), used for unconfident pseudo-label pixels.

Binary cross-entropy is the paper's loss; soft Dice adds a term that trains the
overlap we score (IoU), which plain BCE under-weights for small pets.
"""
from __future__ import annotations

import keras
from keras import ops

IGNORE = 2.0  # mask value of pixels that carry no label (pseudo-labels the teacher was unsure of)


def _valid(y_true):
    valid = ops.cast(y_true < 1.5, "float32")
    return ops.minimum(y_true, 1.0) * valid, valid


@keras.saving.register_keras_serializable(package="unetlite")
def masked_bce(y_true, y_pred):
    """Binary cross-entropy averaged over labelled pixels only."""
    target, valid = _valid(y_true)
    p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
    bce = -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))
    axes = tuple(range(1, len(y_true.shape)))
    return ops.sum(bce * valid, axis=axes) / ops.maximum(ops.sum(valid, axis=axes), 1.0)


@keras.saving.register_keras_serializable(package="unetlite")
def soft_dice(y_true, y_pred):
    """1 - soft Dice per image over labelled pixels (smoothed so empty masks score 0 loss)."""
    target, valid = _valid(y_true)
    p = y_pred * valid
    axes = tuple(range(1, len(y_true.shape)))
    inter = ops.sum(p * target, axis=axes)
    total = ops.sum(p, axis=axes) + ops.sum(target, axis=axes)
    return 1.0 - (2.0 * inter + 1.0) / (total + 1.0)


@keras.saving.register_keras_serializable(package="unetlite")
def bce_dice(y_true, y_pred):
    """BCE + soft Dice, each per image."""
    return masked_bce(y_true, y_pred) + soft_dice(y_true, y_pred)


LOSSES = {"bce": masked_bce, "bce+dice": bce_dice}

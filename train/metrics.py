"""Training metrics (Keras). Numpy versions for evaluation live in unetlite.infer.pipeline.metrics."""
from __future__ import annotations

import keras
from keras import ops


class _MeanMetric(keras.metrics.Metric):
    """A running mean of per-image values (``total`` / ``count``) with a threshold in its config."""

    def __init__(self, threshold: float = 0.5, name: str = "mean", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def result(self):
        return ops.where(self.count > 0, self.total / ops.maximum(self.count, 1.0), 0.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="unetlite")
class ForegroundIoU(_MeanMetric):
    """Mean per-image foreground IoU of the thresholded prediction.

    Semantics of the reference seed: threshold 0.5, and an image whose union is
    empty (no foreground predicted nor present) scores 1.0.
    """

    def __init__(self, threshold: float = 0.5, name: str = "iou", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        valid = ops.cast(y_true < 1.5, "float32")   # 2 = unlabelled pixel (pseudo-labels)
        true = ops.cast(y_true >= 0.5, "float32") * valid
        pred = ops.cast(y_pred >= self.threshold, "float32") * valid
        axes = tuple(range(1, len(true.shape)))
        intersection = ops.sum(true * pred, axis=axes)
        union = ops.sum(ops.maximum(true, pred), axis=axes)
        iou = ops.where(union > 0, intersection / ops.maximum(union, 1.0), ops.ones_like(union))
        self.total.assign_add(ops.sum(iou))
        self.count.assign_add(ops.cast(ops.shape(iou)[0], "float32"))



@keras.saving.register_keras_serializable(package="unetlite")
class EmptyForeground(_MeanMetric):
    """Mean predicted foreground fraction over images whose target holds no pet.

    IoU scores every such image 1.0 or 0.0, so it hides how much of a pet-free frame gets
    painted; this is the number a pet-free video shows (and the one that rose when a student
    was trained only on photos that always hold a pet).
    """

    def __init__(self, threshold: float = 0.5, name: str = "empty_fg", **kwargs):
        super().__init__(threshold=threshold, name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        axes = tuple(range(1, len(y_true.shape)))
        labelled = ops.cast(y_true < 1.5, "float32")
        pets = ops.sum(ops.cast(ops.abs(y_true - 1.0) < 0.5, "float32"), axis=axes)
        empty = ops.cast(pets == 0, "float32") * ops.cast(ops.sum(labelled, axis=axes) > 0, "float32")
        painted = ops.mean(ops.cast(y_pred >= self.threshold, "float32"), axis=axes)
        self.total.assign_add(ops.sum(painted * empty))
        self.count.assign_add(ops.sum(empty))



def training_metrics() -> list[keras.metrics.Metric]:
    return [ForegroundIoU(name="iou"), keras.metrics.BinaryAccuracy(name="pixel_accuracy"),
            EmptyForeground(name="empty_fg")]

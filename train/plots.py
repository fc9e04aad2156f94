"""Pictures of a run: learning curves and sample predictions (written every epoch)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from unetlite.infer.io.images import write_atomic, write_image
from unetlite.infer.io.formats import side_by_side


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of the Keras CSVLogger file as floats."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def plot_curves(rows: list[dict[str, float]], png: str | Path) -> None:
    """Loss and IoU/accuracy per epoch, training vs validation."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(axes, ("loss", "iou", "pixel_accuracy"),
                              ("binary cross-entropy", "foreground IoU", "pixel accuracy")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, markersize=3, label=(prefix or "train_").rstrip("_"))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_atomic(png, buf.getvalue())


def prediction_grid(images: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """One row per example: image | predicted mask | image*mask (the paper's callback)."""
    rows = [side_by_side(img, (p >= threshold).astype(np.uint8)) for img, p in zip(images, probabilities)]
    return np.vstack(rows)


def save_prediction_grid(path: str | Path, images: np.ndarray, probabilities: np.ndarray,
                         threshold: float = 0.5) -> None:
    write_image(path, prediction_grid(images, probabilities, threshold))

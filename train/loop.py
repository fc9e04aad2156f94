"""The training run: data, model, RMSprop + binary cross-entropy, checkpoints, artefacts."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from unetlite.infer.contract import ModelContract
from unetlite.infer.preprocess import to_float

from .augment import PRESETS
from .data import Arrays, load_arrays, make_dataset, split_pairs
from .metrics import training_metrics
from .model import UNetConfig, build_unet
from .plots import plot_curves, read_log, save_prediction_grid

log = logging.getLogger(__name__)

BEST, LAST, LOG, CURVES, RUN = "best.keras", "last.keras", "log.csv", "curves.png", "run.json"


@dataclass
class TrainConfig:
    data: Path
    run_dir: Path = Path("runs/unet")
    model: UNetConfig = field(default_factory=UNetConfig)
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3          # RMSprop's default, as in the paper
    seed: int = 0
    val_fraction: float = 0.05           # used only when the data has no official split
    augment: str = "standard"            # a preset of augment.PRESETS: standard, strong or none
    init_from: Path | None = None        # start from these weights (fine-tuning), with a fresh optimizer
    resume: bool = False
    max_train: int | None = None         # cap the number of training images (quick runs, tests)
    max_val: int | None = None
    steps_per_epoch: int | None = None   # default: one pass over the training images
    preview: int = 4                     # validation images in the prediction grid
    reduce_lr_patience: int = 10         # halve the LR after this many epochs without val_loss progress (0: off)
    verbose: int = field(default_factory=lambda: 1 if sys.stdout.isatty() else 2)


class RunArtifacts(keras.callbacks.Callback):
    """After each epoch: learning-curve PNG, prediction grid PNG, run.json."""

    def __init__(self, cfg: TrainConfig, preview: Arrays, summary: dict):
        super().__init__()
        self.cfg, self.preview, self.summary = cfg, preview, summary
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        run_dir = self.cfg.run_dir
        self.summary.setdefault("epoch_seconds", []).append(round(time.perf_counter() - self.started, 2))
        rows = read_log(run_dir / LOG)
        if rows:
            plot_curves(rows, run_dir / CURVES)
            best = min((r for r in rows if "val_loss" in r), key=lambda r: r["val_loss"], default=None)
            if best:
                self.summary["best"] = {k: round(v, 5) for k, v in best.items()}
                self.summary["best"]["epoch"] = int(best["epoch"]) + 1
        self.summary["epochs_done"] = epoch + 1
        if len(self.preview):
            x = np.stack([to_float(img) for img in self.preview.images])
            probs = self.model.predict_on_batch(x)[..., 0]
            save_prediction_grid(run_dir / "predictions" / f"epoch_{epoch + 1:03d}.png", self.preview.images, probs)
        (run_dir / RUN).write_text(json.dumps(self.summary, indent=2, default=str))


def _summary(cfg: TrainConfig, description: str, train: Arrays, val: Arrays) -> dict:
    return {"data": f"{cfg.data} ({description}: {len(train)} train / {len(val)} val images)",
            "config": {**asdict(cfg), "data": str(cfg.data), "run_dir": str(cfg.run_dir)},
            "skipped_files": [f"{p}: {r}" for p, r in train.failed + val.failed]}


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) a run in ``cfg.run_dir``; returns the run summary (also in run.json)."""
    keras.utils.set_random_seed(cfg.seed)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    size = (cfg.model.input_size, cfg.model.input_size)
    contract = ModelContract(input_height=size[0], input_width=size[1])

    train_pairs, val_pairs, description = split_pairs(cfg.data, cfg.val_fraction, cfg.seed)
    train_arrays = load_arrays(train_pairs[:cfg.max_train], size)
    val_arrays = load_arrays(val_pairs[:cfg.max_val], size)
    if not len(train_arrays) or not len(val_arrays):
        raise ValueError(f"{cfg.data}: no usable training/validation pairs "
                         f"({len(train_arrays)} train, {len(val_arrays)} val)")
    log.info("data: %s, %d train / %d val images, %d skipped", description, len(train_arrays),
             len(val_arrays), len(train_arrays.failed) + len(val_arrays.failed))

    train_ds = make_dataset(train_arrays, cfg.batch_size, training=True, seed=cfg.seed,
                            augment=PRESETS[cfg.augment], contract=contract)
    val_ds = make_dataset(val_arrays, cfg.batch_size, training=False, contract=contract)
    steps = cfg.steps_per_epoch or math.ceil(len(train_arrays) / cfg.batch_size)

    rows = read_log(cfg.run_dir / LOG) if cfg.resume else []
    last = cfg.run_dir / LAST
    summary = _summary(cfg, description, train_arrays, val_arrays)
    if cfg.resume and last.is_file() and rows:
        model = keras.models.load_model(last)
        initial_epoch = len(rows)
        previous = json.loads((cfg.run_dir / RUN).read_text()) if (cfg.run_dir / RUN).is_file() else {}
        summary["epoch_seconds"] = previous.get("epoch_seconds", [])
        log.info("resuming from %s at epoch %d", last, initial_epoch + 1)
    else:
        if cfg.resume:
            log.warning("nothing to resume in %s: starting a new run", cfg.run_dir)
        rows, initial_epoch = [], 0
        if cfg.init_from:
            model = keras.models.load_model(cfg.init_from, compile=False)
            if tuple(model.input_shape[1:3]) != size:
                raise ValueError(f"{cfg.init_from}: input size {model.input_shape[1:3]} differs from --input-size {size}")
            summary["init_from"] = str(cfg.init_from)
            log.info("starting from the weights of %s", cfg.init_from)
        else:
            model = build_unet(cfg.model)
        model.compile(optimizer=keras.optimizers.RMSprop(cfg.learning_rate), loss="binary_crossentropy",
                      metrics=training_metrics())
    summary["parameters"] = model.count_params()

    best_ckpt = keras.callbacks.ModelCheckpoint(cfg.run_dir / BEST, monitor="val_loss", save_best_only=True)
    val_losses = [r["val_loss"] for r in rows if "val_loss" in r]
    if val_losses:  # keep "best-only" true across a resume
        best_ckpt.best = min(val_losses)
    callbacks = [
        best_ckpt,
        keras.callbacks.ModelCheckpoint(last),
        keras.callbacks.CSVLogger(cfg.run_dir / LOG, append=bool(rows)),
        RunArtifacts(cfg, Arrays(val_arrays.names[:cfg.preview], val_arrays.images[:cfg.preview],
                                 val_arrays.masks[:cfg.preview], []), summary),
    ]
    if cfg.reduce_lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                           patience=cfg.reduce_lr_patience, min_lr=1e-5))
    if initial_epoch >= cfg.epochs:
        log.info("run already has %d epochs (asked for %d): nothing to do", initial_epoch, cfg.epochs)
        return summary
    model.fit(train_ds, epochs=cfg.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
              validation_data=val_ds, callbacks=callbacks, verbose=cfg.verbose, shuffle=False)
    return summary

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

from unetlite.infer.engine.contract import ModelContract
from unetlite.infer.engine.preprocess import to_float

from .augment import PRESETS, PasteConfig
from unetlite.infer.io.dataset import read_list

from .data import Arrays, concat_arrays, load_arrays, load_backgrounds, make_dataset, split_pairs
from .losses import LOSSES
from .metrics import training_metrics
from .model import UNetConfig, build_unet
from .plots import plot_curves, read_log, save_prediction_grid

log = logging.getLogger(__name__)

BEST, LAST, LOG, CURVES, RUN = "best.keras", "last.keras", "log.csv", "curves.png", "run.json"


@dataclass
class TrainConfig:
    data: Path | list[Path]              # one or more dataset roots
    run_dir: Path = Path("runs/unet")
    model: UNetConfig = field(default_factory=UNetConfig)
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3          # RMSprop's default, as in the paper
    seed: int = 0
    val_fraction: float = 0.12           # validation carved out of trainval (seeded); test lists never used
    val_data: Path | list[Path] | None = None  # instead: validate on these roots' trainval (never trained on)
    val_names: Path | None = None        # names file narrowing list-less val roots to a fixed part
    soft: list[Path] = field(default_factory=list)       # roots with images/ + teacher_soft/ (distillation)
    soft_high: float = 0.8               # teacher p >= this -> pet
    soft_low: float = 0.2                # teacher p <= this -> background; between: ignored
    negatives: list[str] = field(default_factory=list)   # pet-free folders or clip.mp4@START:STOP:STEP
    val_negatives: list[str] = field(default_factory=list)
    labelled_repeat: int = 1             # show each hand-labelled image this many times per pass
    augment: str = "standard"            # a preset of augment.PRESETS: standard, strong or none
    init_from: Path | None = None        # start from these weights (fine-tuning), with a fresh optimizer
    resume: bool = False
    stop_after: int | None = None        # end this invocation after N more epochs; the schedule still spans ``epochs``
    max_train: int | None = None         # cap the number of training images (quick runs, tests)
    max_val: int | None = None
    steps_per_epoch: int | None = None   # default: one pass over the training images
    preview: int = 4                     # validation images in the prediction grid
    reduce_lr_patience: int = 10         # halve the LR after this many epochs without val_loss progress (0: off)
    loss: str = "bce"                    # bce (the paper's) or bce+dice
    backgrounds: Path | None = None      # pet-free scenes for copy-paste
    copy_paste: float = 0.0              # probability of pasting a labelled pet onto a background
    unlabeled: Path | None = None        # images without trimaps, pseudo-labelled by ``teacher``
    teacher: Path | None = None          # ONNX model for pseudo-labels
    schedule: str = "plateau"            # plateau (halve on val_loss plateaus) or cosine (decay to 5% over the run)
    ema: float = 0.0                     # weight averaging: EMA momentum per step (0: off); used for val + checkpoints
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


def _roots(cfg: TrainConfig) -> list[Path]:
    return list(cfg.data) if isinstance(cfg.data, (list, tuple)) else [cfg.data]


def _summary(cfg: TrainConfig, description: str, train: Arrays, val: Arrays) -> dict:
    roots = ", ".join(map(str, _roots(cfg)))
    return {"data": f"{roots} ({description}: {len(train)} train / {len(val)} val images)",
            "config": {**asdict(cfg), "data": [str(r) for r in _roots(cfg)], "run_dir": str(cfg.run_dir)},
            "val_names": val.names,
            "skipped_files": [f"{p}: {r}" for p, r in train.failed + val.failed]}


def _distillation(cfg: TrainConfig, size: tuple[int, int], train: Arrays, val: Arrays) -> tuple[Arrays, Arrays, str]:
    """Append teacher soft-labelled images and pet-free pictures (training) and held-out pet-free ones (validation)."""
    from .distill import SoftConfig, load_negatives, load_soft
    extra = ""
    soft_cfg = SoftConfig(high=cfg.soft_high, low=cfg.soft_low)
    for root in cfg.soft:
        arrays = load_soft(root, size, soft_cfg)
        extra += f"; +{len(arrays)} teacher-labelled images from {root}"
        train = concat_arrays(train, arrays)
    for spec in cfg.negatives:
        arrays = load_negatives(spec, size)
        extra += f"; +{len(arrays)} pet-free from {spec}"
        train = concat_arrays(train, arrays)
    for spec in cfg.val_negatives:
        arrays = load_negatives(spec, size)
        extra += f"; validation +{len(arrays)} pet-free from {spec}"
        val = concat_arrays(val, arrays)
    return train, val, extra


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) a run in ``cfg.run_dir``; returns the run summary (also in run.json)."""
    keras.utils.set_random_seed(cfg.seed)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    size = (cfg.model.input_size, cfg.model.input_size)
    contract = ModelContract(input_height=size[0], input_width=size[1])

    val_names = set(read_list(cfg.val_names)) if cfg.val_names else None
    train_pairs, val_pairs, description = split_pairs(_roots(cfg), cfg.val_fraction, cfg.seed, cfg.val_data,
                                                      val_names)
    train_arrays = load_arrays(train_pairs[:cfg.max_train], size)
    val_arrays = load_arrays(val_pairs[:cfg.max_val], size)
    once = Arrays(train_arrays.names, train_arrays.images, train_arrays.masks, [])
    for _ in range(cfg.labelled_repeat - 1):
        train_arrays = concat_arrays(train_arrays, once)
    labelled = len(train_arrays)
    train_arrays, val_arrays, extra = _distillation(cfg, size, train_arrays, val_arrays)
    description += extra
    if cfg.unlabeled:
        if not cfg.teacher:
            raise ValueError("--unlabeled needs --teacher (the ONNX model that makes the pseudo-labels)")
        from .pseudo import pseudo_label
        pseudo = pseudo_label(cfg.unlabeled, cfg.teacher, size)
        description += f"; +{len(pseudo)} pseudo-labelled images from {cfg.unlabeled}"
        train_arrays = concat_arrays(train_arrays, pseudo)
    backgrounds = load_backgrounds(cfg.backgrounds, size) if cfg.backgrounds and cfg.copy_paste > 0 else []
    if cfg.copy_paste > 0 and not backgrounds:
        raise ValueError("--copy-paste needs --backgrounds DIR with pet-free images")
    if not len(train_arrays) or not len(val_arrays):
        raise ValueError(f"{cfg.data}: no usable training/validation pairs "
                         f"({len(train_arrays)} train, {len(val_arrays)} val)")
    log.info("data: %s, %d train / %d val images, %d skipped", description, len(train_arrays),
             len(val_arrays), len(train_arrays.failed) + len(val_arrays.failed))

    train_ds = make_dataset(train_arrays, cfg.batch_size, training=True, seed=cfg.seed,
                            augment=PRESETS[cfg.augment], contract=contract, backgrounds=backgrounds,
                            paste=PasteConfig(probability=cfg.copy_paste) if backgrounds else None,
                            pasteable=labelled)
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
        lr = cfg.learning_rate
        if cfg.schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=cfg.epochs * steps, alpha=0.05)
        optimizer = keras.optimizers.RMSprop(lr, use_ema=cfg.ema > 0, ema_momentum=cfg.ema or 0.99)
        model.compile(optimizer=optimizer, loss=LOSSES[cfg.loss], metrics=training_metrics())
    summary["parameters"] = model.count_params()

    best_ckpt = keras.callbacks.ModelCheckpoint(cfg.run_dir / BEST, monitor="val_loss", save_best_only=True)
    val_losses = [r["val_loss"] for r in rows if "val_loss" in r]
    if val_losses:  # keep "best-only" true across a resume
        best_ckpt.best = min(val_losses)
    # EMA weights are swapped in for validation and checkpoints (so best.keras holds the average).
    callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if cfg.ema > 0 else []
    callbacks += [
        best_ckpt,
        keras.callbacks.ModelCheckpoint(last),
        keras.callbacks.CSVLogger(cfg.run_dir / LOG, append=bool(rows)),
        RunArtifacts(cfg, Arrays(val_arrays.names[:cfg.preview], val_arrays.images[:cfg.preview],
                                 val_arrays.masks[:cfg.preview], []), summary),
    ]
    if cfg.reduce_lr_patience and cfg.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                           patience=cfg.reduce_lr_patience, min_lr=1e-5))
    if initial_epoch >= cfg.epochs:
        log.info("run already has %d epochs (asked for %d): nothing to do", initial_epoch, cfg.epochs)
        return summary
    # A session-sized slice of a longer run: the cosine schedule and the log keep counting toward cfg.epochs.
    end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, initial_epoch + cfg.stop_after)
    model.fit(train_ds, epochs=end, initial_epoch=initial_epoch, steps_per_epoch=steps,
              validation_data=val_ds, callbacks=callbacks, verbose=cfg.verbose, shuffle=False)
    return summary

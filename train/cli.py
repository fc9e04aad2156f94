"""`unetlite train`: train the paper's U-Net on Oxford-IIIT Pet."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the U-Net on Oxford-IIIT Pet (needs the [train] extra)",
                       description="Train the reference U-Net (RMSprop + binary cross-entropy, strong "
                                   "augmentation, best-only checkpoints) into a run folder.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, nargs="+", action="extend", metavar="DIR",
                     help="dataset root(s), several or repeated: Oxford layout (images/, annotations/trimaps/) "
                          "or flat layout (images/, trimaps/, trainval.txt, test.txt)")
    src.add_argument("--download", type=Path, metavar="DIR",
                     help="download and verify the official archives into DIR, then train on them")
    p.add_argument("--run-dir", type=Path, default=Path("runs/unet"), help="output folder (default: runs/unet)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="RMSprop learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-filters", type=int, default=8)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--reduce-lr-patience", type=int, default=10,
                   help="halve the learning rate after N epochs without val_loss progress (0: constant LR)")
    p.add_argument("--augment", choices=("standard", "strong", "none"), default="standard",
                   help="augmentation preset (default: standard; strong: wider ranges, for fine-tuning)")
    p.add_argument("--init-from", type=Path, metavar="CKPT",
                   help="start from a trained .keras model (fine-tuning; fresh optimizer, new run folder)")
    p.add_argument("--val-fraction", type=float, default=0.12,
                   help="validation share carved out of trainval, seeded (default: 0.12); test lists are never used")
    p.add_argument("--val-data", type=Path, nargs="+", action="extend", metavar="DIR",
                   help="validate on these roots' trainval instead (e.g. images an --init-from model never saw); "
                        "none of it is trained on")
    p.add_argument("--val-names", type=Path, metavar="FILE",
                   help="with --val-data: take only these names from val roots that have no trainval list (a fixed "
                        "part of a set; the rest may be trained on)")
    p.add_argument("--soft", type=Path, nargs="+", action="extend", default=[], metavar="DIR",
                   help="distillation: roots holding images/ and teacher_soft/NAME.png (round(255 * p) from a "
                        "teacher); confident pixels become targets, the band between --soft-low and --soft-high "
                        "is ignored, empty or unsure images are dropped")
    p.add_argument("--soft-high", type=float, default=0.8, help="teacher p at or above this is pet (default 0.8)")
    p.add_argument("--soft-low", type=float, default=0.2, help="teacher p at or below this is background (0.2)")
    p.add_argument("--negatives", nargs="+", action="extend", default=[], metavar="SRC",
                   help="pet-free pictures trained with an all-background target: image folders or "
                        "clip.mp4@START:STOP:STEP frame ranges")
    p.add_argument("--val-negatives", nargs="+", action="extend", default=[], metavar="SRC",
                   help="pet-free pictures added to validation (val_empty_fg reports how much of them is painted)")
    p.add_argument("--labelled-repeat", type=int, default=1, metavar="N",
                   help="show each hand-labelled training image N times per pass (default 1)")
    p.add_argument("--loss", choices=("bce", "bce+dice"), default="bce",
                   help="bce: the paper's binary cross-entropy (default); bce+dice adds soft Dice")
    p.add_argument("--backgrounds", type=Path, metavar="DIR", help="pet-free scenes for --copy-paste")
    p.add_argument("--copy-paste", type=float, default=0.0, metavar="P",
                   help="probability of pasting a labelled pet, rescaled (3-60%% of the frame) and moved, onto a "
                        "background from --backgrounds, with random border cuts and occluders (default: 0)")
    p.add_argument("--unlabeled", type=Path, metavar="DIR", help="images without trimaps, pseudo-labelled by --teacher")
    p.add_argument("--teacher", type=Path, metavar="MODEL.onnx", help="model whose confident, flip-averaged "
                                                                      "predictions become pseudo-labels")
    p.add_argument("--schedule", choices=("plateau", "cosine"), default="plateau",
                   help="plateau: halve the LR on val_loss plateaus (default); cosine: decay to 5%% over the run")
    p.add_argument("--ema", type=float, default=0.0, metavar="MOMENTUM",
                   help="average the weights (EMA, e.g. 0.995 per step); validation and checkpoints use the average")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.keras")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N more epochs (the learning-rate "
                   "schedule still spans --epochs); continue later with --resume")
    p.add_argument("--max-train", type=int, help="use at most N training images")
    p.add_argument("--max-val", type=int, help="use at most N validation images")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--download-only", action="store_true", help="with --download: fetch and stop")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unetlite.infer.extras import require_tensorflow
    if not args.download_only:
        require_tensorflow("train")
    data = list(args.data) if args.data else None
    if args.download:
        from .download import DownloadError, download
        try:
            data = download(args.download)
        except DownloadError as exc:
            print(f"unetlite train: {exc}", file=sys.stderr)
            return 1
        if args.download_only:
            print(f"dataset ready in {data}")
            return 0

    from .loop import TrainConfig, train
    from .model import UNetConfig
    try:
        model = UNetConfig(args.base_filters, args.depth, args.input_size)
        cfg = TrainConfig(data=data, run_dir=args.run_dir, model=model, epochs=args.epochs,
                          batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                          augment=args.augment, init_from=args.init_from, resume=args.resume,
                          stop_after=args.stop_after, max_train=args.max_train,
                          max_val=args.max_val, steps_per_epoch=args.steps_per_epoch,
                          reduce_lr_patience=args.reduce_lr_patience, val_fraction=args.val_fraction,
                          val_data=args.val_data, val_names=args.val_names, soft=args.soft,
                          soft_high=args.soft_high, soft_low=args.soft_low, negatives=args.negatives,
                          val_negatives=args.val_negatives, labelled_repeat=args.labelled_repeat,
                          loss=args.loss, backgrounds=args.backgrounds, copy_paste=args.copy_paste,
                          unlabeled=args.unlabeled, teacher=args.teacher, schedule=args.schedule, ema=args.ema)
        summary = train(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"unetlite train: {exc}", file=sys.stderr)
        return 2
    best = summary.get("best", {})
    print(f"run folder {args.run_dir}: {summary.get('epochs_done', 0)} epochs, best epoch {best.get('epoch')} "
          f"val_loss {best.get('val_loss')} val_iou {best.get('val_iou')} "
          f"val_pixel_accuracy {best.get('val_pixel_accuracy')}")
    return 0

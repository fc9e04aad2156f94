#!/usr/bin/env bash
# Reproduces the bundled model (infer/models/unet_pets*.onnx) and the ablation in the README.
# Run from the repository root after `pip install -c constraints.txt -e '.[train,dev,openvino]'`, with the shared
# data beside the repository. About 45 min on the 2-core CPU when nothing else runs.
# TensorFlow on CPU is not bit-deterministic: expect numbers within noise of the committed logs.
set -euo pipefail
D=${DATA:-../shared/data}
PETS=$D/oxford_pets EXTRA=$D/oxford_pets_extra

# Starting point: the previous release v1 (phase 1 + 2 of the paper's recipe on oxford_pets/trainval; its
# logs are phase1_* and phase2_* here), from git history: its Keras checkpoint to fine-tune, and its ONNX
# export as the teacher for pseudo-labels. The Keras model is rebuilt from that ONNX file (weights copied
# bit for bit; the repository keeps one copy of the weights).
mkdir -p runs
[ -f runs/old_unet_pets.onnx ] || git show cf85db4:infer/models/unet_pets.onnx > runs/old_unet_pets.onnx
[ -f runs/v1.keras ] || python -m unetlite.export.keras_from_onnx runs/old_unet_pets.onnx -o runs/v1.keras

# Validation = the trainval of oxford_pets_extra (63 images the starting model never saw, four new breeds);
# it is not trained on. Test lists (and oxford_pets_extra/official/test.txt) are never used in training.
COMMON="--data $PETS $EXTRA --val-data $EXTRA --epochs 20 --lr 3e-4 --init-from runs/v1.keras
        --loss bce+dice --schedule cosine --ema 0.995 --augment strong"

# Ablation arm B: fine-tuning alone (BCE+Dice, strong augmentation, cosine, EMA).
unetlite -v train $COMMON --run-dir runs/b_base
# Arm A (shipped): + copy-paste onto pet-free scenes + pseudo-labels on the unlabelled images.
unetlite -v train $COMMON --run-dir runs/a_full \
    --backgrounds $D/backgrounds/images --copy-paste 0.5 \
    --unlabeled $D/oxford_pets_unlabeled/images --teacher runs/old_unet_pets.onnx

# Export fp32 (parity on validation images) and int8 (calibrated on 64 training images, scored on validation).
mkdir -p runs/calib runs/val-images
for n in $(head -64 "$PETS/trainval.txt"); do ln -sf "$(realpath "$PETS/images/$n.jpg")" runs/calib/; done
for n in $(cat "$EXTRA/trainval.txt"); do ln -sf "$(realpath "$EXTRA/images/$n.jpg")" runs/val-images/; done
unetlite export runs/a_full/best.keras -o infer/models/unet_pets.onnx \
    --parity-images runs/val-images --parity-count 32 \
    --int8 --calibration runs/calib --calibration-count 64 \
    --eval-images runs/val-images --eval-count 63 --int8-output infer/models/unet_pets.int8.onnx

# Validation (choose here), then the test split once for the final model.
unetlite eval --data "$EXTRA" --split trainval --json
unetlite eval --data "$PETS" --data "$EXTRA" --split test --by-breed --json
unetlite eval --data "$PETS" --data "$EXTRA" --split test --int8 --by-breed --json
# The TensorFlow benchmark (unetlite bench, benchmarks/run.py) rebuilds the Keras model from the ONNX file:
# python -m unetlite.export.keras_from_onnx infer/models/unet_pets.onnx -o runs/unet_pets.keras --check-images runs/val-images

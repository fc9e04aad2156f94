#!/usr/bin/env bash
# Reproduces the bundled model (infer/models/unet_pets*.onnx) from the shared Oxford-IIIT Pet subset.
# Run from the repository root after `pip install -e '.[train,dev]'`. About 70 min on the 2-core CPU.
# TensorFlow on CPU is not bit-deterministic, so expect numbers within noise of the committed logs.
set -euo pipefail
DATA=${DATA:-../shared/data/oxford_pets}

# Phase 1: the paper's recipe (RMSprop 1e-3, standard augmentation), LR halved on val-loss plateaus.
# The committed run was stopped after 157 epochs (best val_loss at epoch 154).
unetlite -v train --data "$DATA" --run-dir runs/pets --epochs 157

# Phase 2: fine-tune the phase-1 best with stronger augmentation and a lower LR, because phase 1
# had started to memorise its 356 images (train loss 0.14 vs val 0.29). Stopped after 113 epochs;
# best val_loss at epoch 70.
unetlite -v train --data "$DATA" --run-dir runs/pets-ft --epochs 113 --init-from runs/pets/best.keras \
    --lr 2.5e-4 --augment strong --reduce-lr-patience 15

# Export fp32 (+ parity on test images) and int8 (calibrated on 64 trainval images, scored on the test split).
mkdir -p runs/calib runs/test-images
for n in $(head -64 "$DATA/trainval.txt"); do ln -sf "$(realpath "$DATA/images/$n.jpg")" runs/calib/; done
for n in $(cat "$DATA/test.txt"); do ln -sf "$(realpath "$DATA/images/$n.jpg")" runs/test-images/; done
unetlite export runs/pets-ft/best.keras -o infer/models/unet_pets.onnx \
    --parity-images runs/test-images --parity-count 32 \
    --int8 --calibration runs/calib --calibration-count 64 \
    --eval-images runs/test-images --eval-count 135 --int8-output infer/models/unet_pets.int8.onnx
python -c "import keras; keras.models.load_model('runs/pets-ft/best.keras', compile=False).save('benchmarks/model/unet_pets.keras')"

unetlite eval --data "$DATA" --split test --model infer/models/unet_pets.onnx --json
unetlite eval --data "$DATA" --split test --model infer/models/unet_pets.int8.onnx --json

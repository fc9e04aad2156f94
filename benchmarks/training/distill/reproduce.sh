#!/usr/bin/env bash
# Reproduces the bundled model v3 (infer/models/unet_pets*.onnx): the paper's U-Net distilled from a pretrained
# DeepLabV3 teacher next to the human labels. Run from the repository root after
# `pip install -c constraints.txt -e '.[train,dev]'`, with the shared data and teacher beside the repository.
# The training run took ~2 h on the 2-core CPU (250 steps of 8 images per "epoch", ~9-17 min each depending on
# what else ran); it checkpoints every epoch: rerun the same train command with --resume to continue.
# TensorFlow on CPU is not bit-deterministic: expect numbers within noise of the committed logs.
set -euo pipefail
D=${DATA:-../shared/data}
TEACHER=${TEACHER:-../shared/teacher/deeplabv3_mnv2_pascal_quant.tflite}
V2_COMMIT=${V2_COMMIT:-d750574}   # the last commit that ships v2
mkdir -p runs

# 1. Starting point: v2 (the previous release), rebuilt as Keras from its ONNX weights.
[ -f runs/v2.onnx ] || git show "$V2_COMMIT:infer/models/unet_pets.onnx" > runs/v2.onnx
[ -f runs/v2.keras ] || python -m unetlite.export.keras_from_onnx runs/v2.onnx -o runs/v2.keras

# 2. Teacher soft masks. The shared data already holds them (made by ../shared/teacher/make_soft_labels.py:
#    pets_unlabeled without flip averaging, oxford_pets_unlabeled with it). The same masks, bit for bit, from
#    this repository (set REMAKE_SOFT=1; ~0.35 s/image without flip, ~0.6 s with):
SOFT_KAGGLE=$D/pets_unlabeled SOFT_OXFORD=$D/oxford_pets_unlabeled
if [ "${REMAKE_SOFT:-0}" = 1 ]; then
    unetlite soft-labels "$D/pets_unlabeled/images" -o runs/soft_kaggle --teacher "$TEACHER" --no-flip
    unetlite soft-labels "$D/oxford_pets_unlabeled/images" -o runs/soft_oxford --teacher "$TEACHER"
    SOFT_KAGGLE=runs/soft_kaggle SOFT_OXFORD=runs/soft_oxford
fi

# 3. Distillation. Human labels: oxford_pets trainval + kaggle_cats_masks cat.0-59 (each shown twice per pass,
#    half of them copy-pasted onto pet-free scenes); teacher soft labels: 2,923 Kaggle + 384 Oxford photos kept
#    (pet p >= 0.8, background p <= 0.2, the band between ignored; nearly empty or unsure images dropped);
#    pet-free pictures with empty targets: the 915 backgrounds and frames 400-795 (every 4th) of the pedestrian clip.
#    Validation, never trained on: oxford_pets_extra trainval (63), kaggle_cats_masks cat.60-80 (21), all 25
#    davis_dog_agility frames, and pedestrian frames 0-399 (every 8th) as pet-free images.
unetlite -v train --data "$D/oxford_pets" "$D/oxford_pets_extra" "$D/kaggle_cats_masks" \
    --val-data "$D/oxford_pets_extra" "$D/kaggle_cats_masks" "$D/davis_dog_agility" \
    --val-names benchmarks/training/distill/val_names.txt \
    --soft "$SOFT_KAGGLE" "$SOFT_OXFORD" \
    --negatives "$D/backgrounds/images" "$D/video/vtest_people_768x576.mp4@400:795:4" \
    --val-negatives "$D/video/vtest_people_768x576.mp4@0:400:8" \
    --backgrounds "$D/backgrounds/images" --copy-paste 0.5 --labelled-repeat 2 \
    --init-from runs/v2.keras --loss bce+dice --schedule cosine --ema 0.995 --augment strong \
    --lr 3e-4 --epochs 12 --steps-per-epoch 250 --run-dir runs/d_full ${TRAIN_ARGS:-}

# 4. Export fp32 (parity on validation images) and int8 (calibrated on 64 training images, scored on validation).
mkdir -p runs/calib runs/val-images
for n in $(head -64 "$D/oxford_pets/trainval.txt"); do ln -sf "$(realpath "$D/oxford_pets/images/$n.jpg")" runs/calib/; done
for n in $(cat "$D/oxford_pets_extra/trainval.txt"); do ln -sf "$(realpath "$D/oxford_pets_extra/images/$n.jpg")" runs/val-images/; done
unetlite export runs/d_full/best.keras -o infer/models/unet_pets.onnx ${EXPORT_ARGS:-} \
    --parity-images runs/val-images --parity-count 32 \
    --int8 --calibration runs/calib --calibration-count 64 \
    --eval-images runs/val-images --eval-count 63 --int8-output infer/models/unet_pets.int8.onnx

# 5. Validation (choose here), then the test split once for the final model; video checks against the teacher.
(cd benchmarks && python distill_val.py --model ../runs/v2.onnx --model ../infer/models/unet_pets.onnx --out distill_val.json)
(cd benchmarks && python distill_val.py --model ../infer/models/unet_pets.onnx --int8 --out distill_val_int8.json)
unetlite eval --data "$D/oxford_pets" --data "$D/oxford_pets_extra" --split test --by-breed --json > benchmarks/model_test.json
unetlite eval --data "$D/oxford_pets" --data "$D/oxford_pets_extra" --split test --int8 --by-breed --json > benchmarks/model_test_int8.json
python benchmarks/teacher_check.py --teacher "$TEACHER" --out benchmarks/teacher_check.json
python benchmarks/stills.py --out docs/stills_distilled.jpg --compare runs/v2.onnx --label v3 --compare-label v2

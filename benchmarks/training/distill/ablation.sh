#!/usr/bin/env bash
# The ablation arms of README's table: each starts from v2 with the shipped run's settings (RMSprop 3e-4, cosine
# planned over 12 epochs of 250 steps, EMA 0.995, strong augmentation, BCE + Dice, --labelled-repeat 2) and stops
# after 3 epochs (--stop-after 3), to compare with the full mix after its first 3 epochs (reproduce.sh's run,
# the "v3 after 3 epochs" row). One ingredient is added per arm:
#   a_human: human labels only (Oxford trainval + kaggle cat.0-59), no copy-paste
#   a_soft:  + teacher soft labels (Kaggle + unlabelled Oxford)
#   a_neg:   + pet-free pictures with empty targets (backgrounds + pedestrian frames 400-795)
#   full:    + copy-paste of labelled pets onto backgrounds (= reproduce.sh)
# Then each arm's checkpoint is exported and all are scored on validation only (benchmarks/distill_val.py).
# Each arm took 10-19 min on the 2-core AMD EPYC (AVX2). Run from the repository root, after reproduce.sh's step 1 (runs/v2.keras).
set -euo pipefail
D=${DATA:-../shared/data}
COMMON=(--data "$D/oxford_pets" "$D/oxford_pets_extra" "$D/kaggle_cats_masks"
        --val-data "$D/oxford_pets_extra" "$D/kaggle_cats_masks" "$D/davis_dog_agility"
        --val-names benchmarks/training/distill/val_names.txt
        --val-negatives "$D/video/vtest_people_768x576.mp4@0:400:8"
        --labelled-repeat 2 --init-from runs/v2.keras --loss bce+dice --schedule cosine --ema 0.995
        --augment strong --lr 3e-4 --epochs 12 --stop-after 3 --steps-per-epoch 250)
SOFT=(--soft "$D/pets_unlabeled" "$D/oxford_pets_unlabeled")
NEG=(--negatives "$D/backgrounds/images" "$D/video/vtest_people_768x576.mp4@400:795:4")
unetlite train "${COMMON[@]}" --run-dir runs/a_human
unetlite train "${COMMON[@]}" "${SOFT[@]}" --run-dir runs/a_soft
unetlite train "${COMMON[@]}" "${SOFT[@]}" "${NEG[@]}" --run-dir runs/a_neg
# The full arm is reproduce.sh's run after 3 epochs (the committed numbers come from that run's epoch-3 checkpoint).
unetlite train "${COMMON[@]}" "${SOFT[@]}" "${NEG[@]}" --backgrounds "$D/backgrounds/images" --copy-paste 0.5 \
    --run-dir runs/a_full
mkdir -p runs/val-images
for n in $(cat "$D/oxford_pets_extra/trainval.txt"); do ln -sf "$(realpath "$D/oxford_pets_extra/images/$n.jpg")" runs/val-images/; done
for arm in a_human a_soft a_neg a_full; do
    unetlite export "runs/$arm/last.keras" -o "runs/$arm.onnx" --parity-images runs/val-images --parity-count 8
done

# The follow-up row: v3 (rebuilt as Keras from the shipped ONNX) + 3 epochs with hard teacher targets at 0.5
# (no ignored band), human labels shown 3x per pass, lr 1e-4 (logs: hard_targets_*).
python -m unetlite.export.keras_from_onnx infer/models/unet_pets.onnx -o runs/v3.keras
unetlite train --data "$D/oxford_pets" "$D/oxford_pets_extra" "$D/kaggle_cats_masks" \
    --val-data "$D/oxford_pets_extra" "$D/kaggle_cats_masks" "$D/davis_dog_agility" \
    --val-names benchmarks/training/distill/val_names.txt \
    --val-negatives "$D/video/vtest_people_768x576.mp4@0:400:8" "${SOFT[@]}" "${NEG[@]}" \
    --soft-low 0.5 --soft-high 0.5 --backgrounds "$D/backgrounds/images" --copy-paste 0.5 --labelled-repeat 3 \
    --init-from runs/v3.keras --loss bce+dice --schedule cosine --ema 0.995 --augment strong --lr 1e-4 --epochs 3 \
    --steps-per-epoch 250 --run-dir runs/hard_targets
unetlite export runs/hard_targets/best.keras -o runs/hard_targets.onnx --parity-images runs/val-images --parity-count 8
# The full schedule: reproduce.sh's run carried on to epoch 12 (its last checkpoint; best.keras stayed epoch 7).
unetlite export runs/d_full/last.keras -o runs/d_full_last.onnx --parity-images runs/val-images --parity-count 8
# One scoring run over every row of the table (v2 and v3 are runs/v2.onnx and the shipped model).
(cd benchmarks && python distill_val.py --model ../runs/v2.onnx --model ../runs/a_human.onnx --model ../runs/a_soft.onnx \
    --model ../runs/a_neg.onnx --model ../runs/a_full.onnx --model ../infer/models/unet_pets.onnx --model ../runs/d_full_last.onnx \
    --model ../runs/hard_targets.onnx --out training/distill/ablation_val.json)

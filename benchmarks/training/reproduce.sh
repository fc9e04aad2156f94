#!/usr/bin/env bash
# Reproduces the bundled model: train on the shared Oxford-IIIT Pet subset, export fp32 + int8,
# evaluate on the test split, and copy the artefacts next to this script.
# Takes ~1-2 h on a 2-core CPU. Run from the repository root with `pip install -e '.[train,dev]'` done.
set -euo pipefail
DATA=${DATA:-../shared/data/oxford_pets}
RUN=${RUN:-runs/pets}
EPOCHS=${EPOCHS:-400}
unetlite -v train --data "$DATA" --epochs "$EPOCHS" --run-dir "$RUN" ${RESUME:+--resume}
unetlite export "$RUN/best.keras" -o infer/models/unet_pets.onnx --parity-images "$DATA/images" \
    --int8 --calibration "$DATA/images" --int8-output infer/models/unet_pets.int8.onnx
unetlite eval --data "$DATA" --split test --model infer/models/unet_pets.onnx --json
cp "$RUN/log.csv" "$RUN/curves.png" "$RUN/run.json" benchmarks/training/

"""Loading what `unetlite export` converts: a Keras checkpoint, a TF SavedModel, or a fresh model.

Every failure becomes a CheckpointError whose message is one line naming the file and
the reason, so the CLI never shows a TensorFlow traceback for a bad path.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from unetlite.infer.errors import first_line

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
RUN_FILE = "run.json"                 # written by `unetlite train` next to its checkpoints
SAVED_MODEL_ENDPOINTS = ("serve", "serving_default")  # Keras 3 model.export(), then tf.keras 2


class CheckpointError(Exception):
    """A checkpoint that cannot be exported; str() is "path: reason" on one line."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_saved_model(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / "saved_model.pb").is_file()


def _load_saved_model(path: Path):
    """Keras 3 cannot load_model a SavedModel: wrap its serving endpoint in a TFSMLayer."""
    import keras
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many types for a damaged SavedModel
        raise CheckpointError(path, f"not a loadable SavedModel ({first_line(exc)})") from None
    endpoint = next((name for name in SAVED_MODEL_ENDPOINTS if name in loaded.signatures), None)
    if endpoint is None:
        found = sorted(loaded.signatures) or "none"
        raise CheckpointError(path, f"SavedModel has no serving signature (found: {found})")
    specs = loaded.signatures[endpoint].structured_input_signature[1]
    if len(specs) != 1:
        raise CheckpointError(path, f"SavedModel signature {endpoint!r} takes {len(specs)} inputs, expected 1 image")
    spec = next(iter(specs.values()))
    layer = keras.layers.TFSMLayer(str(path), call_endpoint=endpoint)
    inputs = keras.Input(tuple(spec.shape[1:]), name="image")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise CheckpointError(path, f"SavedModel signature {endpoint!r} has {len(outputs)} outputs, expected 1")
        outputs = next(iter(outputs.values()))
    log.info("loaded SavedModel %s through its %r endpoint", path, endpoint)
    return keras.Model(inputs, outputs, name="saved_model")


def _check_unet(path: Path, model) -> None:
    """Only NHWC RGB in, one probability channel out: what the contract and the engine assume."""
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise CheckpointError(path, f"model has {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1")
    in_shape, out_shape = tuple(model.input_shape), tuple(model.output_shape)
    if len(in_shape) != 4 or in_shape[-1] != 3:
        raise CheckpointError(path, f"model input shape {in_shape} is not (batch, height, width, 3)")
    if len(out_shape) != 4 or out_shape[-1] != 1:
        raise CheckpointError(path, f"model output shape {out_shape} is not (batch, height, width, 1)")


def load_keras(path: str | os.PathLike):
    """A ``.keras``/``.h5`` file or a SavedModel directory -> keras.Model (not compiled)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        if not is_saved_model(path):
            raise CheckpointError(path, "directory is not a TF SavedModel (no saved_model.pb)")
        model = _load_saved_model(path)
    elif path.suffix.lower() in KERAS_SUFFIXES:
        if path.stat().st_size == 0:
            raise CheckpointError(path, "file is empty (0 bytes)")
        import keras

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
            raise CheckpointError(path, f"not a loadable Keras model ({first_line(exc)})") from None
    else:
        raise CheckpointError(path, f"unsupported checkpoint type {path.suffix or '(no extension)'!r}: "
                                    f"expected {', '.join(KERAS_SUFFIXES)} or a SavedModel directory")
    _check_unet(path, model)
    return model


def untrained(base_filters: int, depth: int, input_size: int, seed: int = 0):
    """A randomly initialised U-Net from a config (benchmarks, size checks)."""
    import keras

    from unetlite.train.model import UNetConfig, build_unet

    keras.utils.set_random_seed(seed)
    return build_unet(UNetConfig(base_filters=base_filters, depth=depth, input_size=input_size))


def run_provenance(checkpoint: str | os.PathLike) -> dict:
    """Contract fields from the ``run.json`` that `unetlite train` writes beside its checkpoints.

    Returns {} when there is none; a damaged run.json is logged and ignored (it is
    informational only and must not block an export).
    """
    checkpoint = Path(checkpoint)
    candidates = ([checkpoint / RUN_FILE] if checkpoint.is_dir() else []) + [checkpoint.parent / RUN_FILE]
    run_file = next((c for c in candidates if c.is_file()), None)
    if run_file is None:
        return {}
    try:
        run = json.loads(run_file.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: ignored (%s)", run_file, first_line(exc))
        return {}
    found = {}
    if isinstance(run, dict) and run.get("data"):
        found["training_data"] = str(run["data"])
    if isinstance(run, dict) and isinstance(run.get("best"), dict):
        found["metrics"] = {k: v for k, v in run["best"].items() if isinstance(v, (int, float))}
    log.info("provenance from %s: %s", run_file, sorted(found))
    return found

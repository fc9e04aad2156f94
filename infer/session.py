"""The onnxruntime engine: one session per model, as in rembg."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import onnxruntime as ort

from .contract import ModelContract
from .postprocess import Segmentation, postprocess, resize_probability  # noqa: F401 (re-exported)
from .preprocess import prepare

log = logging.getLogger(__name__)

DEFAULT_MODEL = "unet_pets.onnx"
_PROVIDER_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


class ModelLoadError(Exception):
    """The model file is missing or is not a loadable ONNX model (one-line message)."""


def default_model_path() -> Path:
    """The bundled model, shipped as package data."""
    ref = resources.files("unetlite.infer.models") / DEFAULT_MODEL
    if not ref.is_file():
        raise ModelLoadError(f"bundled model {DEFAULT_MODEL} is missing from unetlite.infer.models; pass --model")
    return Path(str(ref))


def resolve_providers(providers: str | Sequence[str]) -> list[str]:
    """'auto' -> CUDA then CPU; 'cpu'/'cuda' short names; or explicit onnxruntime provider names."""
    if isinstance(providers, str):
        if providers == "auto":
            wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            wanted = [_PROVIDER_NAMES.get(p.strip().lower(), p.strip()) for p in providers.split(",")]
    else:
        wanted = list(providers)
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available]
    for p in wanted:
        if p not in available:
            log.info("provider %s is not in this onnxruntime build", p)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class Segmenter:
    """Loads an ONNX U-Net and segments images of any size.

    ``provider`` tells what really runs: onnxruntime falls back to the CPU silently
    when CUDA cannot load, so we read it back from the session.
    """

    def __init__(self, model: str | os.PathLike | None = None, providers: str | Sequence[str] = "auto",
                 threads: int | None = None, spin: bool = True):
        path = Path(model) if model is not None else default_model_path()
        if not path.is_file():
            raise ModelLoadError(f"{path}: model file not found")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # keep onnxruntime's own warnings (CUDA fallback) off stderr
        if not spin:  # another thread (decoder, writer) shares the cores: don't busy-wait
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = resolve_providers(providers)
        ort.set_default_logger_severity(4)  # CUDA load failures are logged as errors, then ignored
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        self.path = path
        self.provider = self.session.get_providers()[0]
        if "CUDAExecutionProvider" in wanted and self.provider != "CUDAExecutionProvider":
            log.warning("CUDA provider could not be loaded; running on %s", self.provider)
        else:
            log.info("running on %s", self.provider)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.contract = ModelContract.from_metadata(meta)
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.batch_fixed = isinstance(shape[0], int)

    @property
    def on_cpu(self) -> bool:
        return self.provider == "CPUExecutionProvider"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Prepared NHWC float32 batch -> NxHxW float32 probabilities (model resolution)."""
        if self.batch_fixed and len(batch) > 1:
            return np.concatenate([self.run(b[None]) for b in batch])
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return out[..., 0] if out.ndim == 4 else out

    def predict(self, images: Sequence[np.ndarray], tile: bool = False,
                threshold: float | None = None, clean: bool = False) -> list[Segmentation]:
        """RGB uint8 images (any sizes) -> results at each image's original size.

        ``tile`` segments at native resolution with overlapping tiles (see tile.py);
        otherwise each image is resized to the model's input size, batched.
        """
        thr = self.contract.threshold if threshold is None else threshold
        if tile:
            from .tile import predict_tiled
            return [postprocess(predict_tiled(self, img), img.shape[:2], thr, clean) for img in images]
        if not images:
            return []
        batch = np.stack([prepare(img, self.contract) for img in images])
        probs = self.run(batch)
        return [postprocess(p, img.shape[:2], thr, clean) for p, img in zip(probs, images)]

    def __call__(self, image: np.ndarray, tile: bool = False, threshold: float | None = None,
                 clean: bool = False) -> Segmentation:
        return self.predict([image], tile=tile, threshold=threshold, clean=clean)[0]


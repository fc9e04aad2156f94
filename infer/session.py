"""The engine: one model, one runtime (onnxruntime CPU/CUDA or OpenVINO), any image size."""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from .backends import (BackendError, ModelLoadError, available_cpus, check_io, choose_backend,  # noqa: F401
                       gpu_present, open_chosen, openvino_installed, parse_backend)
from .contract import ModelContract
from .postprocess import Segmentation, postprocess, resize_probability  # noqa: F401 (re-exported)
from .preprocess import prepare, resize_image

log = logging.getLogger(__name__)

DEFAULT_MODEL = "unet_pets.onnx"
ImageLike = Union[np.ndarray, str, os.PathLike]


def default_model_path() -> Path:
    """The bundled model, shipped as package data."""
    ref = resources.files("unetlite.infer.models") / DEFAULT_MODEL
    if not ref.is_file():
        raise ModelLoadError(f"bundled model {DEFAULT_MODEL} is missing from unetlite.infer.models; pass --model")
    return Path(str(ref))


def int8_twin(path: Path) -> Path:
    """``<stem>.int8.onnx`` next to an fp32 model: what --int8 runs."""
    return path if path.name.endswith(".int8.onnx") else path.with_name(f"{path.stem}.int8.onnx")


def prepare_input(rgb: np.ndarray, contract: ModelContract, size: tuple[int, int] | None = None,
                  dtype: str = "float32") -> np.ndarray:
    """One RGB uint8 image -> HxWx3 model input: float32 scaled, or uint8 pixels for a model
    that scales inside its graph (4x fewer bytes to copy)."""
    if dtype != "uint8":
        return prepare(rgb, contract, size)
    pixels = resize_image(rgb, size or contract.input_size, contract.resize)
    return pixels[..., ::-1] if contract.channel_order.upper() == "BGR" else pixels


def _read_metadata(path: Path) -> dict[str, str]:
    from .onnx_wire import WireError, read
    try:
        return read(path, graph=False).metadata
    except (WireError, OSError):  # the runtime already parsed it; a contract-less model runs with defaults
        return {}


def _contract(path: Path, shape: tuple, layout: str) -> ModelContract:
    """The contract in the file's metadata; a model without one is fed at its graph's fixed size
    (when it has one). A contract that contradicts the graph is refused."""
    meta = _read_metadata(path)
    contract = ModelContract.from_metadata(meta)
    height, width = shape[1:3] if layout == "NHWC" else shape[2:4]
    if height is None or width is None or (height, width) == contract.input_size:
        return contract
    if "unetlite.input_height" in meta:
        raise ModelLoadError(f"{path}: its contract says {contract.input_height}x{contract.input_width} input, "
                             f"the graph takes {height}x{width}")
    return replace(contract, input_height=height, input_width=width)


class Segmenter:
    """Loads an ONNX U-Net and segments images of any size.

    Images are RGB uint8 arrays (HxWx3) or file paths. A BGR array from ``cv2.imread``
    gives different (wrong) masks: convert it with ``cv2.cvtColor(img, cv2.COLOR_BGR2RGB)``
    or pass the path.

    ``providers``: "auto" (CUDA when a GPU is present, then OpenVINO when installed, then
    onnxruntime CPU), "cpu", "cuda" or "openvino"; an explicit choice that cannot run raises
    BackendError. ``precision`` "bf16" is OpenVINO-only. ``int8`` runs ``<stem>.int8.onnx``.
    ``provider`` and ``precision`` say what really runs; ``describe()`` says it in one line.
    """

    def __init__(self, model: str | os.PathLike | None = None, providers: str | Sequence[str] = "auto",
                 threads: int | None = None, spin: bool = True, precision: str = "fp32", int8: bool = False):
        path = Path(model) if model is not None else default_model_path()
        if int8:
            path = int8_twin(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: {'int8 model' if int8 else 'model file'} not found")
        try:
            requested = parse_backend(providers)
        except ValueError as exc:
            raise BackendError(f"--providers {exc}") from None
        if precision == "bf16" and requested == "auto":
            requested = "openvino"  # only OpenVINO offers it
        import onnxruntime as ort
        choice = choose_backend(requested, ort.get_available_providers(), openvino_installed(), gpu_present())
        self.runner = open_chosen(choice, path, threads or available_cpus(), spin, precision)
        self.path = path
        self.provider: str = self.runner.provider
        self.precision: str = self.runner.precision
        self.layout = check_io(path, self.runner.n_inputs, self.runner.input, self.runner.output)
        self.input_dtype = self.runner.input.dtype
        self.batch_fixed = self.runner.input.shape[0] is not None
        self.contract = _contract(path, self.runner.input.shape, self.layout)
        log.log(logging.WARNING if choice.warn else logging.INFO, "%s (%s)", self.describe(), choice.reason)

    def describe(self) -> str:
        """What runs, in one line: runtime, device, precision, threads, model."""
        quant = f", {self.contract.quantization}" if self.contract.quantization != "none" else ""
        return (f"{self.provider} ({self.runner.version}), {self.precision} precision, {self.runner.threads} threads, "
                f"{self.input_dtype} input, model {self.path.name}{quant}")

    @property
    def on_cpu(self) -> bool:
        return self.provider != "CUDAExecutionProvider"

    def prepare(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8 image -> this model's input (its dtype, size and channel order)."""
        return prepare_input(rgb, self.contract, size, self.input_dtype)

    def _as_input(self, batch: np.ndarray) -> np.ndarray:
        """Accept either prepared float32 batches or uint8 pixel batches, whatever the model takes."""
        batch = np.asarray(batch)
        if self.input_dtype == "uint8" and batch.dtype != np.uint8:
            batch = np.clip(np.rint(batch / np.float32(self.contract.scale)), 0, 255).astype(np.uint8)
        elif self.input_dtype == "float32" and batch.dtype != np.float32:
            batch = batch.astype(np.float32) * np.float32(self.contract.scale) if batch.dtype == np.uint8 \
                else batch.astype(np.float32)
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch)

    def run(self, batch: np.ndarray, tta: bool = False) -> np.ndarray:
        """NHWC batch (prepared float32, or uint8 pixels) -> NxHxW float32 probabilities at model resolution.

        ``tta``: averaged with the run on the mirrored batch, flipped back (2x the work). This flips
        the prepared input, so it needs no original pixels (segment's reduced decode drops them).
        """
        if tta:
            return (self.run(batch) + self.run(np.ascontiguousarray(batch[:, :, ::-1]))[:, :, ::-1]) * np.float32(0.5)
        if self.batch_fixed and len(batch) > 1:
            return np.concatenate([self.run(b[None]) for b in batch])
        out = np.asarray(self.runner(self._as_input(batch)))
        if out.ndim == 4:
            out = out[:, 0] if self.layout == "NCHW" else out[..., 0]
        return out

    def _probabilities(self, images: Sequence[np.ndarray], tile: bool) -> list[np.ndarray]:
        if tile:
            from .tile import predict_tiled
            return [predict_tiled(self, img) for img in images]
        return list(self.run(np.stack([self.prepare(img) for img in images])))

    def probabilities(self, images: Sequence[np.ndarray], tile: bool = False, tta: bool = False) -> list[np.ndarray]:
        """RGB images -> probability maps: at model resolution, or at full size with ``tile``.
        ``tta`` averages with the maps of the mirrored images, flipped back (2x the work)."""
        probs = self._probabilities(images, tile)
        if tta:
            flipped = self._probabilities([img[:, ::-1] for img in images], tile)
            probs = [(p + f[:, ::-1]) * np.float32(0.5) for p, f in zip(probs, flipped)]
        return probs

    def predict(self, images: Sequence[ImageLike], tile: bool = False, threshold: float | None = None,
                clean: bool = False, tta: bool = False) -> list[Segmentation]:
        """RGB uint8 images or paths (any sizes) -> results at each image's original size.

        ``tile`` segments at native resolution with overlapping tiles (see tile.py);
        otherwise each image is resized to the model's input size, batched. ``tta``
        averages with the prediction on the horizontally flipped image (2x the work).
        """
        from .imageio import read_image

        images = [read_image(img) if isinstance(img, (str, os.PathLike)) else img for img in images]
        if not images:
            return []
        thr = self.contract.resolve_threshold(threshold)
        probs = self.probabilities(images, tile, tta)
        return [postprocess(p, img.shape[:2], thr, clean) for p, img in zip(probs, images)]

    def __call__(self, image: ImageLike, tile: bool = False, threshold: float | None = None,
                 clean: bool = False, tta: bool = False) -> Segmentation:
        return self.predict([image], tile=tile, threshold=threshold, clean=clean, tta=tta)[0]

"""The engine: one model, one runtime (any registered: onnxruntime CPU/CUDA, OpenVINO), any image size."""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from . import runtimes
from .contract import ModelContract, read_metadata
from .postprocess import Segmentation, postprocess
from .preprocess import prepare_input
from .runtimes import BackendError, ModelLoadError, RunnerOptions, available_cpus, check_io

log = logging.getLogger(__name__)

DEFAULT_MODEL = "unet_pets.onnx"
INT8_SUFFIX = ".int8.onnx"
ImageLike = Union[np.ndarray, str, os.PathLike]


def default_model_path() -> Path:
    """The bundled model, shipped as package data."""
    ref = resources.files("unetlite.infer.models") / DEFAULT_MODEL
    if not ref.is_file():
        raise ModelLoadError(f"bundled model {DEFAULT_MODEL} is missing from unetlite.infer.models; pass --model")
    return Path(str(ref))


def int8_twin(path: Path) -> Path:
    """``<stem>.int8.onnx`` next to an fp32 model: what --int8 runs (the one copy of that name rule)."""
    path = Path(path)
    return path if path.name.endswith(INT8_SUFFIX) else path.with_name(f"{path.stem}{INT8_SUFFIX}")


def model_path(model: str | os.PathLike | None, int8: bool = False) -> Path:
    """The model file a run uses: ``model`` or the bundled one, its int8 twin with ``int8``;
    ModelLoadError when it is not there."""
    path = Path(model) if model is not None else default_model_path()
    if int8:
        path = int8_twin(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: {'int8 model' if int8 else 'model file'} not found")
    return path


def graph_contract(path: Path, shape: tuple, layout: str) -> ModelContract:
    """The contract in the file's metadata; a model without one is fed at its graph's fixed size
    (when it has one). A contract that contradicts the graph is refused."""
    meta = read_metadata(path)
    contract = ModelContract.from_metadata(meta)
    height, width = shape[1:3] if layout == "NHWC" else shape[2:4]
    if height is None or width is None or (height, width) == contract.input_size:
        return contract
    if "unetlite.input_height" in meta:
        raise ModelLoadError(f"{path}: its contract says {contract.input_height}x{contract.input_width} input, "
                             f"the graph takes {height}x{width}")
    return replace(contract, input_height=height, input_width=width)


def read_model_inputs(path: Path) -> tuple[ModelContract, str]:
    """(contract, input dtype) read from the file alone, no runtime session: what Ray's driver
    needs to plan decoding. ModelLoadError for a file that is not an image-to-mask ONNX model."""
    from .onnx_wire import DATA_TYPES, WireError, read
    from .runtimes.base import TensorSpec

    try:
        model = read(path)
    except (WireError, OSError) as exc:
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({exc})") from None
    weights = {init.name for init in model.initializers}
    inputs = [v for v in model.inputs if v.name not in weights]

    def spec(value) -> TensorSpec:
        dtype = DATA_TYPES.get(value.elem_type, str(value.elem_type))
        return TensorSpec(value.name, "float32" if dtype == "float" else dtype,
                          tuple(d if isinstance(d, int) else None for d in value.shape))

    if not inputs or not model.outputs:
        raise ModelLoadError(f"{path}: not an image-to-mask model (no graph inputs/outputs)")
    first = spec(inputs[0])
    layout = check_io(path, len(inputs), first, spec(model.outputs[0]))
    return graph_contract(path, first.shape, layout), first.dtype


def flip_average(run, x: np.ndarray, width_axis: int) -> np.ndarray:
    """The one flip averaging: ``run(x)`` averaged with ``run`` on ``x`` mirrored along ``width_axis``,
    flipped back (its output has width on the same axis: NHWC -> NxHxW, HxWx3 -> HxW)."""
    mirrored = run(np.ascontiguousarray(np.flip(x, width_axis)))
    return (run(x) + np.flip(mirrored, width_axis)) * np.float32(0.5)


class Segmenter:
    """Loads an ONNX U-Net and segments images of any size.

    Images are RGB uint8 arrays (HxWx3) or file paths. A BGR array from ``cv2.imread``
    gives different (wrong) masks: convert it with ``cv2.cvtColor(img, cv2.COLOR_BGR2RGB)``
    or pass the path.

    ``providers``: "auto" (CUDA when a GPU is present, then OpenVINO when installed, then
    onnxruntime CPU) or a registered runtime ("cpu", "cuda", "openvino", ...); an explicit
    choice that cannot run raises BackendError. ``precision`` "bf16" is OpenVINO-only. ``int8``
    runs ``<stem>.int8.onnx``. ``provider`` and ``precision`` say what really runs; ``describe()``
    says it in one line.
    """

    def __init__(self, model: str | os.PathLike | None = None, providers: str | Sequence[str] = "auto",
                 threads: int | None = None, spin: bool = True, precision: str = "fp32", int8: bool = False):
        path = model_path(model, int8)
        try:
            requested = runtimes.parse_backend(providers)
        except ValueError as exc:
            raise BackendError(f"--providers {exc}") from None
        if precision != "fp32" and requested == runtimes.AUTO:
            requested = runtimes.for_precision(precision) or requested  # only some runtimes offer it
        choice = runtimes.choose(requested, runtimes.machine_facts(), runtimes.names())
        options = RunnerOptions(threads or available_cpus(), spin, precision)
        self.runner = runtimes.open_chosen(choice, path, options)
        self.path = path
        self.provider: str = self.runner.provider
        self.precision: str = self.runner.precision
        self.layout = check_io(path, self.runner.n_inputs, self.runner.input, self.runner.output)
        self.input_dtype = self.runner.input.dtype
        self.batch_fixed = self.runner.input.shape[0] is not None
        self.contract = graph_contract(path, self.runner.input.shape, self.layout)
        log.log(logging.WARNING if choice.warn else logging.INFO, "%s (%s)", self.describe(), choice.reason)

    def describe(self) -> str:
        """What runs, in one line: runtime, device, precision, threads, model."""
        quant = f", {self.contract.quantization}" if self.contract.quantization != "none" else ""
        return (f"{self.provider} ({self.runner.version}), {self.precision} precision, {self.runner.threads} threads, "
                f"{self.input_dtype} input, model {self.path.name}{quant}")

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

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.batch_fixed and len(batch) > 1:
            return np.concatenate([self._run(b[None]) for b in batch])
        out = np.asarray(self.runner(self._as_input(batch)))
        if out.ndim == 4:
            out = out[:, 0] if self.layout == "NCHW" else out[..., 0]
        return out

    def run(self, batch: np.ndarray, tta: bool = False) -> np.ndarray:
        """NHWC batch (prepared float32, or uint8 pixels) -> NxHxW float32 probabilities at model resolution.

        ``tta``: averaged with the run on the mirrored batch, flipped back (2x the work). This flips
        the prepared input, so it needs no original pixels (segment's reduced decode drops them).
        """
        return flip_average(self._run, batch, 2) if tta else self._run(batch)

    def probabilities(self, images: Sequence[np.ndarray], tile: bool = False, tta: bool = False) -> list[np.ndarray]:
        """RGB images -> probability maps: at model resolution (one batch), or at full size with
        ``tile``. ``tta`` averages with the mirrored images' maps, flipped back (2x the work)."""
        if tile:
            from .tile import predict_tiled

            def tiled(img: np.ndarray) -> np.ndarray:
                return predict_tiled(self, img)
            return [flip_average(tiled, img, 1) if tta else tiled(img) for img in images]
        return list(self.run(np.stack([self.prepare(img) for img in images]), tta=tta))

    def predict(self, images: Sequence[ImageLike], tile: bool = False, threshold: float | None = None,
                clean: bool = False, tta: bool = False) -> list[Segmentation]:
        """RGB uint8 images or paths (any sizes) -> results at each image's original size.

        The same steps as every command: prepare, infer a batch (``tile``: overlapping tiles at
        native resolution; ``tta``: flip-averaged), the one ``postprocess``.
        """
        from ..io.images import read_image  # io sits below the engine: decoding needs no model

        images = [read_image(img) if isinstance(img, (str, os.PathLike)) else img for img in images]
        if not images:
            return []
        thr = self.contract.resolve_threshold(threshold)
        probs = self.probabilities(images, tile, tta)
        return [postprocess(p, img.shape[:2], thr, clean) for p, img in zip(probs, images)]

    def __call__(self, image: ImageLike, tile: bool = False, threshold: float | None = None,
                 clean: bool = False, tta: bool = False) -> Segmentation:
        return self.predict([image], tile=tile, threshold=threshold, clean=clean, tta=tta)[0]

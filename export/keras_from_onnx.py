"""The Keras U-Net rebuilt from an exported ONNX file: one copy of the weights in the repository.

The TensorFlow-vs-ONNX benchmark needs the network as a Keras model. Instead of a second
30 MB checkpoint next to ``infer/models/unet_pets.onnx``, the model is rebuilt from the ONNX
file: :func:`unetlite.train.model.build_unet` with the architecture read from the graph
(base filters = the first Conv's outputs, depth = the MaxPool count, channels = the first
Conv's inputs, input size from the contract), then every Conv / ConvTranspose kernel and
bias copied from the ONNX initializers into the matching Keras layer.

Layouts: ONNX Conv weights are (C_out, C_in, kH, kW) and Keras Conv2D kernels (kH, kW, C_in,
C_out); ONNX ConvTranspose weights are (C_in, C_out, kH, kW) and Keras Conv2DTranspose kernels
(kH, kW, C_out, C_in). Both are the same axis permutation (2, 3, 1, 0). Layers are matched by
the Keras layer name tf2onnx keeps in the node name (``unet_1/down0_conv1_1/BiasAdd``), else
by graph order; every shape is checked, and :func:`check_rebuild` compares the two models'
probabilities on real images.

The ONNX model may take uint8 pixels (Cast + scale inside the graph, ``input_dtype`` uint8 in
the contract); the Keras model takes float32 in [0, 1] (pixel * contract.scale), as in training.

    python -m unetlite.export.keras_from_onnx infer/models/unet_pets.onnx -o runs/unet_pets.keras \
        --check-images tests/data/pets/images
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from unetlite.infer.engine.contract import ModelContract

log = logging.getLogger(__name__)

KERNEL_AXES = (2, 3, 1, 0)   # ONNX (O, I, kH, kW) -> Keras (kH, kW, I, O); ConvTranspose (I, O, ..) -> (.., O, I)
MAX_ABS_DIFF = 1e-4          # rebuilt Keras vs onnxruntime, probabilities


class RebuildError(ValueError):
    """The ONNX file is not a unetlite U-Net this module can rebuild (one line saying why)."""


@dataclass(frozen=True)
class OnnxUNet:
    """What the ONNX graph says about the network: architecture, contract and weights in graph order."""

    base_filters: int
    depth: int
    channels: int
    contract: ModelContract
    convs: tuple[tuple[str, np.ndarray, np.ndarray], ...]      # (node name, ONNX weight, bias), Conv
    tconvs: tuple[tuple[str, np.ndarray, np.ndarray], ...]     # the same, ConvTranspose

    @property
    def input_size(self) -> int:
        return self.contract.input_height


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in data-flow order (tf2onnx usually writes them so; this does not rely on it)."""
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
    needs = [{producers[x] for x in node.input if x in producers} for node in graph.node]
    users: dict[int, list[int]] = {}
    for i, deps in enumerate(needs):
        for d in deps:
            users.setdefault(d, []).append(i)
    ready = deque(i for i, deps in enumerate(needs) if not deps)
    waiting = [len(d) for d in needs]
    order = []
    while ready:
        i = ready.popleft()
        order.append(graph.node[i])
        for u in users.get(i, ()):
            waiting[u] -= 1
            if not waiting[u]:
                ready.append(u)
    return order if len(order) == len(graph.node) else list(graph.node)


def read_onnx_unet(model: onnx.ModelProto | str | os.PathLike) -> OnnxUNet:
    """Architecture, contract and conv weights of an exported unetlite U-Net."""
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise RebuildError(f"{path}: not a loadable ONNX model ({exc})") from None
    graph = model.graph
    contract = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props})
    inits = {t.name: t for t in graph.initializer}

    def weights(node) -> tuple[str, np.ndarray, np.ndarray]:
        if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            raise RebuildError(f"{node.op_type} {node.name!r}: weight and bias are not both initializers")
        return (node.name, numpy_helper.to_array(inits[node.input[1]]).astype(np.float32),
                numpy_helper.to_array(inits[node.input[2]]).astype(np.float32))

    nodes = _topological(graph)
    convs = tuple(weights(n) for n in nodes if n.op_type == "Conv")
    tconvs = tuple(weights(n) for n in nodes if n.op_type == "ConvTranspose")
    depth = sum(1 for n in nodes if n.op_type == "MaxPool")
    if not convs or not depth or len(tconvs) != depth or len(convs) != 4 * depth + 3:
        raise RebuildError(f"not a unetlite U-Net: {len(convs)} Conv, {len(tconvs)} ConvTranspose, "
                           f"{depth} MaxPool nodes (depth d has 4d+3, d and d)")
    first = convs[0][1]
    if contract.input_height != contract.input_width:
        raise RebuildError(f"input {contract.input_height}x{contract.input_width}: build_unet makes square inputs")
    return OnnxUNet(base_filters=int(first.shape[0]), depth=depth, channels=int(first.shape[1]),
                    contract=contract, convs=convs, tconvs=tconvs)


def _stem(onnx_name: str) -> str:
    """'unet_1/down0_conv1_1/BiasAdd' -> 'down0_conv1' (tf2onnx keeps Keras layer names, suffixed _N)."""
    parts = onnx_name.split("/")
    scope = parts[-2] if len(parts) >= 2 else parts[0]
    return re.sub(r"_\d+$", "", scope)


def _pair(layers, found: Sequence[tuple[str, np.ndarray, np.ndarray]], kind: str) -> list:
    """Keras layers matched to ONNX weights: by name when every name matches, else by graph order."""
    by_name = {_stem(name): (name, w, b) for name, w, b in found}
    if len(by_name) == len(found) and all(layer.name in by_name for layer in layers):
        return [(layer, by_name[layer.name]) for layer in layers]
    log.debug("%s: names do not match the Keras layers; matching by graph order", kind)
    return list(zip(layers, found))


def build_keras(unet: OnnxUNet, dynamic_size: bool | None = None):
    """The Keras model with the ONNX weights. ``dynamic_size`` None: as the ONNX contract says."""
    from unetlite.train.model import UNetConfig, build_unet

    if dynamic_size is None:
        dynamic_size = unet.contract.dynamic_size
    try:
        config = UNetConfig(base_filters=unet.base_filters, depth=unet.depth, input_size=unet.input_size,
                            channels=unet.channels)
    except ValueError as exc:
        raise RebuildError(str(exc)) from None
    model = build_unet(config, dynamic_size=dynamic_size)
    kinds = {"Conv2D": [], "Conv2DTranspose": []}
    for layer in model.layers:
        if type(layer).__name__ in kinds:
            kinds[type(layer).__name__].append(layer)
    pairs = _pair(kinds["Conv2D"], unet.convs, "Conv") + _pair(kinds["Conv2DTranspose"], unet.tconvs,
                                                                "ConvTranspose")
    if len(pairs) != len(unet.convs) + len(unet.tconvs):
        raise RebuildError(f"layer count differs: Keras {sum(map(len, kinds.values()))}, "
                           f"ONNX {len(unet.convs) + len(unet.tconvs)}")
    for layer, (name, weight, bias) in pairs:
        kernel = np.ascontiguousarray(weight.transpose(KERNEL_AXES))
        want = tuple(layer.kernel.shape), tuple(layer.bias.shape)
        if (kernel.shape, bias.shape) != want:
            raise RebuildError(f"{name} -> {layer.name}: ONNX weights {weight.shape}/{bias.shape} do not fit "
                               f"Keras {want[0]}/{want[1]}")
        layer.set_weights([kernel, bias])
    return model


def rebuild_keras(onnx_path: str | os.PathLike, dynamic_size: bool | None = None):
    """The Keras U-Net an ONNX export came from, weights and all (needs the [train] extra)."""
    return build_keras(read_onnx_unet(onnx_path), dynamic_size)


def cached_keras(onnx_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A ``.keras`` file rebuilt from ``onnx_path``, kept under a temp folder keyed by the ONNX bytes."""
    data = Path(onnx_path).read_bytes()
    folder = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "unetlite-keras"
    path = folder / f"{Path(onnx_path).stem}-{hashlib.sha256(data).hexdigest()[:16]}.keras"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        model = rebuild_keras(onnx_path, dynamic_size=False)
        partial = path.with_suffix(f".{os.getpid()}.tmp.keras")
        model.save(partial)
        os.replace(partial, path)
    return path


@dataclass(frozen=True)
class RebuildCheck:
    max_abs_diff: float      # probabilities, rebuilt Keras vs onnxruntime CPU
    mask_iou: float
    images: int
    passed: bool

    def summary(self) -> str:
        return (f"Keras rebuilt vs onnxruntime: max |prob diff| {self.max_abs_diff:.2e}, mask IoU "
                f"{self.mask_iou:.6f} on {self.images} images: {'ok' if self.passed else 'FAILED'}")


def check_rebuild(keras_model, onnx_path: str | os.PathLike, images: Sequence[np.ndarray],
                  max_abs_diff: float = MAX_ABS_DIFF, size: tuple[int, int] | None = None) -> RebuildCheck:
    """Both models on the same prepared images: the ONNX model fed as its contract says (uint8 or float),
    Keras fed float32 pixel * scale, exactly what the uint8 graph computes inside."""
    from unetlite.infer.engine.segmenter import Segmenter
    from unetlite.infer.pipeline.metrics import mask_iou

    seg = Segmenter(onnx_path, providers="cpu", threads=1)
    batch = np.stack([seg.prepare(img, size) for img in images])
    floats = batch.astype(np.float32) * np.float32(seg.contract.scale) if batch.dtype == np.uint8 else batch
    reference = seg.run(batch)
    rebuilt = np.asarray(keras_model(floats, training=False))[..., 0]
    diff = float(np.abs(reference.astype(np.float64) - rebuilt).max())
    threshold = seg.contract.threshold
    iou = mask_iou(reference >= threshold, rebuilt >= threshold)
    return RebuildCheck(diff, float(iou), len(images), diff < max_abs_diff)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m unetlite.export.keras_from_onnx",
                                description="Rebuild the Keras U-Net (weights included) from an exported ONNX file.")
    p.add_argument("onnx", type=Path, help="ONNX model exported by unetlite export")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .keras file to write")
    p.add_argument("--dynamic-size", choices=("auto", "yes", "no"), default="auto",
                   help="leave H and W unspecified (default: as the ONNX contract says)")
    p.add_argument("--check-images", type=Path, metavar="DIR",
                   help="compare the rebuilt model with onnxruntime on up to 16 images from DIR (fails over 1e-4)")
    args = p.parse_args(argv)
    from unetlite.export.parity import image_files, read_images

    try:
        dynamic = {"auto": None, "yes": True, "no": False}[args.dynamic_size]
        model = rebuild_keras(args.onnx, dynamic)
    except (RebuildError, OSError) as exc:
        print(f"keras_from_onnx: {exc}", file=sys.stderr)
        return 2
    if args.check_images:
        check = check_rebuild(model, args.onnx, read_images(image_files(args.check_images)[:16]))
        print(check.summary())
        if not check.passed:
            return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    print(f"wrote {args.output} ({model.count_params():,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Static int8 quantization (QDQ) of an exported model, calibrated on real images.

Static QDQ with per-channel int8 weights and uint8 activations is what runs fast on
CPU here (QLinearConv); dynamic quantization is 5-7x slower than fp32 and not offered.
Three measured choices for this U-Net (8 filters, 256x256; numbers in the export report):

* the full-resolution layers (before the first MaxPool and from the last ConvTranspose
  on) stay float: with 8 channels onnxruntime's int8 convs are slower there than its
  fp32 ones, and they decide the mask boundary, so quantizing them cost speed and IoU.
* every Conv that reads a skip-connection Concat is split into one Conv per concat input
  plus Adds (exact in float). A quantized Concat has one scale for both halves, and the
  up-sampled half spans ~40x the range of the skip half, which crushed the skip (the
  fine detail) to a few levels.
* the default calibration ("average": MinMax over a moving average of per-image ranges)
  agreed best with fp32 on held-out images; global MinMax, entropy and percentile
  ranges gave 3 points lower mask IoU.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from unetlite.infer.engine.contract import ModelContract
from unetlite.infer.engine.preprocess import prepare_input

from .convert import attach_contract, save_onnx
from .parity import ParityResult, agreement, onnx_probabilities

log = logging.getLogger(__name__)

QUANTIZATION = "int8-qdq"
DEFAULT_METHOD = "average"
METHODS = ("average", "percentile", "entropy", "minmax")
TARGET_IOU = 0.97  # product target: int8 masks vs fp32 masks


def _calibration(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: choose from {', '.join(METHODS)}")
    if method == "average":
        return CalibrationMethod.MinMax, {"CalibMovingAverage": True}
    return {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
            "minmax": CalibrationMethod.MinMax}[method], {}


def _reader(images: Sequence[np.ndarray], contract: ModelContract, input_name: str):
    """One prepared image per calibration batch, prepared exactly as at run time."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        def __init__(self):
            self._images = iter(images)

        def get_next(self):
            image = next(self._images, None)
            if image is None:
                return None
            return {input_name: prepare_input(image, contract, dtype=contract.input_dtype)[None]}

    return ImageReader()


def _channels(model: onnx.ModelProto) -> dict[str, int]:
    """Known channel counts (dim 1 of NCHW tensors) from ONNX shape inference."""
    inferred = shape_inference.infer_shapes(model)
    found = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value") and dims[1].dim_value > 0:
            found[value.name] = dims[1].dim_value
    return found


def split_concat_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite Conv(Concat(a, b), W) as Conv(a, W_a) + Conv(b, W_b) (bias on the first).

    Exact in float; after quantization each input keeps its own scale. Returns the model
    (modified in place) and the number of Convs rewritten.
    """
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    channels = _channels(model)
    nodes, dropped, rewritten = [], set(), 0
    for node in graph.node:
        concat = producer.get(node.input[0]) if node.op_type == "Conv" else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (concat is None or concat.op_type != "Concat" or node.input[1] not in weights
                or attrs.get("group", 1) != 1
                or {a.name: a.i for a in concat.attribute}.get("axis") not in (1, -3)):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        sizes = [channels.get(name) for name in concat.input]
        if sizes.count(None) == 1:  # a dynamic-size graph hides one side behind a Pad: infer it
            sizes[sizes.index(None)] = w.shape[1] - sum(s for s in sizes if s is not None)
        if None in sizes or sum(sizes) != w.shape[1] or min(sizes) <= 0:
            nodes.append(node)
            continue
        parts, start = [], 0
        for k, (name, size) in enumerate(zip(concat.input, sizes)):
            w_name = f"{node.input[1]}__part{k}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, start:start + size]), w_name))
            start += size
            bias = [node.input[2]] if k == 0 and len(node.input) > 2 else []
            part = helper.make_node("Conv", [name, w_name, *bias], [f"{node.output[0]}__part{k}"],
                                    name=f"{node.name}__part{k}")
            part.attribute.extend(node.attribute)
            nodes.append(part)
            parts.append(part.output[0])
        total = parts[0]
        for k, part in enumerate(parts[1:], 1):
            out = node.output[0] if k == len(parts) - 1 else f"{node.output[0]}__sum{k}"
            nodes.append(helper.make_node("Add", [total, part], [out], name=f"{node.name}__sum{k}"))
            total = out
        if readers.get(concat.output[0]) == 1:
            dropped.add(concat.name)
        rewritten += 1
    del graph.node[:]
    graph.node.extend(n for n in nodes if n.name not in dropped)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model, rewritten


def full_resolution_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes working at the input resolution: before the first MaxPool, and from the last
    ConvTranspose on (graph order is topological)."""
    ops = [node.op_type for node in model.graph.node]
    if "MaxPool" not in ops or "ConvTranspose" not in ops:
        return []
    first_pool = ops.index("MaxPool")
    last_up = len(ops) - 1 - ops[::-1].index("ConvTranspose")
    return [node.name for i, node in enumerate(model.graph.node) if i < first_pool or i >= last_up]


def read_contract(path: str | os.PathLike) -> ModelContract:
    model = onnx.load(str(path), load_external_data=False)
    return ModelContract.from_metadata({p.key: p.value for p in model.metadata_props})


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration_images: Sequence[np.ndarray], method: str = DEFAULT_METHOD,
                  exclude: Sequence[str] = (), float_full_resolution: bool = True) -> Path:
    """fp32 ONNX -> static QDQ int8 ONNX at ``out_path`` (written atomically), same contract
    with quantization="int8-qdq".

    ``calibration_images``: RGB uint8 arrays, prepared with the model's contract.
    ``exclude``: node-name substrings kept in float, in addition to the full-resolution
    layers unless ``float_full_resolution`` is False.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not len(calibration_images):
        raise ValueError("int8 calibration needs at least one image")
    calibrate_method, extra = _calibration(method)
    contract = read_contract(fp32_path)
    with tempfile.TemporaryDirectory(prefix="unetlite-int8-") as tmp:
        pre, split, quant = (Path(tmp) / name for name in ("pre.onnx", "split.onnx", "int8.onnx"))
        # Symbolic shape inference needs sympy and adds nothing for this all-conv graph.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        model, rewritten = split_concat_convs(onnx.load(str(pre)))
        log.info("split %d concat-fed convs", rewritten)
        onnx.save(model, str(split))
        excluded = [n.name for n in model.graph.node if any(pattern in n.name for pattern in exclude)]
        for pattern in exclude:
            if not any(pattern in name for name in excluded):
                log.warning("--int8-exclude %r matches no node", pattern)
        if float_full_resolution:
            excluded += [name for name in full_resolution_nodes(model) if name not in excluded]
        log.info("%d of %d nodes stay float", len(excluded), len(model.graph.node))
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):  # onnxruntime prints calibration progress
            quantize_static(str(split), str(quant), _reader(calibration_images, contract, model.graph.input[0].name),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibrate_method, nodes_to_exclude=excluded,
                            extra_options=extra)
        log.debug("onnxruntime calibration output:\n%s", captured.getvalue())
        quantized = attach_contract(onnx.load(str(quant)), replace(contract, quantization=QUANTIZATION))
        return save_onnx(quantized, out_path)


def compare_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike,
                 images: Sequence[np.ndarray]) -> ParityResult:
    """Mask agreement of the int8 model with its fp32 source (passed = the product target)."""
    reference, contract = onnx_probabilities(fp32_path, images)
    candidate, _ = onnx_probabilities(int8_path, images)
    return agreement(reference, candidate, contract.threshold, min_iou=TARGET_IOU, max_abs_diff=None)

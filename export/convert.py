"""Keras -> ONNX conversion with tf2onnx, embedding the preprocessing contract."""
from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from unetlite.infer.engine.contract import ModelContract
from unetlite.infer.io.images import write_atomic

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def package_version() -> str:
    try:
        return version("unetlite")
    except PackageNotFoundError:
        return "0+unknown"


def to_onnx_model(model, dynamic_size: bool = False, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Convert a Keras U-Net; input named ``image`` (NHWC float32), dynamic batch."""
    import tensorflow as tf
    import tf2onnx

    _, height, width, channels = model.input_shape
    if dynamic_size:
        height = width = None
    spec = (tf.TensorSpec((None, height, width, channels), tf.float32, name="image"),)
    # An explicit input_signature is what makes tf2onnx 1.17 work with Keras 3.
    onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    return onnx_model


def add_uint8_input(onnx_model: onnx.ModelProto, scale: float) -> onnx.ModelProto:
    """Make the graph take uint8 pixels: the float input becomes Cast + Mul(scale) inside it.

    A quarter of the bytes cross to the device (and through the pre-processing), and the
    scaling is exactly what ``preprocess.to_float`` does: float32(pixel) * float32(scale).
    """
    graph = onnx_model.graph
    source = graph.input[0]
    name = source.name
    scaled = f"{name}__scaled"
    for node in graph.node:  # readers of the float input now read the scaled tensor
        for i, item in enumerate(node.input):
            if item == name:
                node.input[i] = scaled
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in source.type.tensor_type.shape.dim]
    new_input = helper.make_tensor_value_info(name, TensorProto.UINT8, dims)
    graph.initializer.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{name}__scale"))
    graph.node.insert(0, helper.make_node("Mul", [f"{name}__float", f"{name}__scale"], [scaled], name=f"{name}__Mul"))
    graph.node.insert(0, helper.make_node("Cast", [name], [f"{name}__float"], to=TensorProto.FLOAT,
                                          name=f"{name}__Cast"))
    graph.input.remove(source)
    graph.input.insert(0, new_input)
    return onnx_model


def attach_contract(onnx_model: onnx.ModelProto, contract: ModelContract) -> onnx.ModelProto:
    """Write the contract into metadata_props (replacing any earlier unetlite keys)."""
    meta = contract.to_metadata()
    keep = [p for p in onnx_model.metadata_props if p.key not in meta]
    del onnx_model.metadata_props[:]
    onnx_model.metadata_props.extend(keep)
    for key, value in meta.items():
        onnx_model.metadata_props.add(key=key, value=value)
    return onnx_model


def pool_depth(onnx_model: onnx.ModelProto) -> int:
    """Number of 2x2 pooling steps in the converted graph (a SavedModel wrapper hides its layers)."""
    return sum(1 for node in onnx_model.graph.node if node.op_type == "MaxPool")


def contract_for(model, dynamic_size: bool = False, depth: int | None = None, **overrides) -> ModelContract:
    """The contract of a Keras U-Net built by unetlite.train (depth read from its pool layers
    unless given)."""
    _, height, width, _ = model.input_shape
    if depth is None:
        depth = sum(1 for layer in model.layers if "MaxPooling" in type(layer).__name__)
    base = ModelContract()
    return replace(base, input_height=height or base.input_height, input_width=width or base.input_width,
                   size_multiple=2 ** depth, dynamic_size=dynamic_size,
                   version=package_version(),
                   export_date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   **overrides)


def convert(model, dynamic_size: bool = False, opset: int = DEFAULT_OPSET, uint8_input: bool = True,
            **contract_fields) -> tuple[onnx.ModelProto, ModelContract]:
    """Convert in memory and attach the contract; nothing is written (the caller checks parity first).

    ``uint8_input`` (default): the model takes uint8 pixels and scales them in the graph;
    False keeps the float32 [0, 1] input of earlier exports.
    """
    onnx_model = to_onnx_model(model, dynamic_size, opset)
    if uint8_input:
        contract_fields = {**contract_fields, "input_dtype": "uint8"}
    contract = contract_for(model, dynamic_size=dynamic_size, depth=pool_depth(onnx_model), **contract_fields)
    if uint8_input:
        add_uint8_input(onnx_model, contract.scale)
    return attach_contract(onnx_model, contract), contract


def save_onnx(onnx_model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Serialize atomically: the file is either complete or absent."""
    write_atomic(path, onnx_model.SerializeToString())
    return Path(path)


def export_onnx(model, output: str | os.PathLike, dynamic_size: bool = False, opset: int = DEFAULT_OPSET,
                uint8_input: bool = True, **contract_fields) -> tuple[onnx.ModelProto, ModelContract]:
    """Convert ``model`` and write it to ``output`` with its contract. No parity check here."""
    onnx_model, contract = convert(model, dynamic_size, opset, uint8_input, **contract_fields)
    save_onnx(onnx_model, output)
    log.info("wrote %s", output)
    return onnx_model, contract

"""Keras -> ONNX conversion with tf2onnx, embedding the preprocessing contract."""
from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import onnx

from unetlite.infer.contract import ModelContract
from unetlite.infer.imageio import write_atomic

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


def convert(model, dynamic_size: bool = False, opset: int = DEFAULT_OPSET,
            **contract_fields) -> tuple[onnx.ModelProto, ModelContract]:
    """Convert in memory and attach the contract; nothing is written (the caller checks parity first)."""
    onnx_model = to_onnx_model(model, dynamic_size, opset)
    contract = contract_for(model, dynamic_size=dynamic_size, depth=pool_depth(onnx_model), **contract_fields)
    return attach_contract(onnx_model, contract), contract


def save_onnx(onnx_model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Serialize atomically: the file is either complete or absent."""
    write_atomic(path, onnx_model.SerializeToString())
    return Path(path)


def export_onnx(model, output: str | os.PathLike, dynamic_size: bool = False, opset: int = DEFAULT_OPSET,
                **contract_fields) -> tuple[onnx.ModelProto, ModelContract]:
    """Convert ``model`` and write it to ``output`` with its contract. No parity check here."""
    onnx_model, contract = convert(model, dynamic_size, opset, **contract_fields)
    save_onnx(onnx_model, output)
    log.info("wrote %s", output)
    return onnx_model, contract

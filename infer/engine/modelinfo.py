"""What a model file is and how to feed it (``unetlite info``, serve's /v1/model).

Needs nothing beyond the base install (no TensorFlow, no onnx package): the file is read
with a small protobuf reader (onnx_wire).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UnetliteError
from .contract import PREFIX, ModelContract

_QDQ = {"QuantizeLinear", "DequantizeLinear"}


class InfoError(UnetliteError):
    """One-line reason a file cannot be described."""


@dataclass
class ModelInfo:
    path: str
    file_bytes: int
    inputs: list[dict]
    outputs: list[dict]
    contract: dict | None                 # the unetlite contract, None when the file has none
    metadata: dict[str, str]              # other metadata_props
    producer: str = ""
    opset: int | None = None
    ir_version: int | None = None
    parameters: int | None = None
    nodes: int | None = None
    op_counts: dict[str, int] = field(default_factory=dict)


def parameter_count(model) -> int:
    """Learned numbers in the graph: initializer elements, leaving out quantization scales and
    zero points, scalar constants and integer shape/index constants, so fp32 and int8 twins (and
    uint8-input exports) count the same.

    ``model``: an ``onnx_wire.OnnxFile``.
    """
    not_weights, dequantized = set(), set()
    for node in model.nodes:
        if node.op_type in _QDQ:
            not_weights.update(node.inputs[1:])
            if node.op_type == "DequantizeLinear":
                dequantized.add(node.inputs[0])
    total = 0
    for init in model.initializers:
        if init.name in not_weights or not init.dims:  # scalars: the input scale, epsilons -- not learned
            continue
        is_float = init.data_type in (1, 10, 11, 16)  # float, float16, double, bfloat16
        if is_float or init.name in dequantized:
            total += math.prod(init.dims)
    return total


def inspect(path: str | Path) -> ModelInfo:
    """Describe an ONNX file; raises InfoError (one line) for a missing or non-ONNX file.

    Reads the protobuf directly (onnx_wire): needs neither the onnx package nor TensorFlow.
    """
    from .onnx_wire import DATA_TYPES, WireError, read

    path = Path(path)
    if not path.is_file():
        raise InfoError(f"{path}: {'is a directory' if path.is_dir() else 'file not found'}")
    try:
        model = read(path)
    except WireError as exc:
        raise InfoError(f"{path}: not an ONNX model ({exc})") from None
    except OSError as exc:
        raise InfoError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not model.nodes:
        raise InfoError(f"{path}: not an ONNX model (no graph)")
    initializers = {init.name for init in model.initializers}

    def describe(values):
        return [{"name": v.name, "type": DATA_TYPES.get(v.elem_type, str(v.elem_type)), "shape": v.shape}
                for v in values if v.name not in initializers]

    ops: dict[str, int] = {}
    for node in model.nodes:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    info = ModelInfo(path=str(path), file_bytes=path.stat().st_size, inputs=describe(model.inputs),
                     outputs=describe(model.outputs), contract=None, metadata=model.metadata,
                     producer=model.producer, opset=model.opset, ir_version=model.ir_version,
                     parameters=parameter_count(model), nodes=len(model.nodes),
                     op_counts=dict(sorted(ops.items(), key=lambda kv: -kv[1])))
    ours = {k: v for k, v in info.metadata.items() if k.startswith(PREFIX)}
    if ours:
        try:
            info.contract = asdict(ModelContract.from_metadata(ours))
        except (ValueError, TypeError) as exc:
            raise InfoError(f"{path}: damaged unetlite contract in metadata ({exc})") from None
    info.metadata = {k: v for k, v in info.metadata.items() if k not in ours}
    return info

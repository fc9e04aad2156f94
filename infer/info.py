"""`unetlite info MODEL.onnx`: what a model file is and how to feed it (no TensorFlow needed).

Uses the ``onnx`` package when it is installed (opset, parameter count, graph details);
otherwise onnxruntime's model metadata, and says what could not be read.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .contract import PREFIX, ModelContract

log = logging.getLogger(__name__)

_QDQ = {"QuantizeLinear", "DequantizeLinear"}


class InfoError(Exception):
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
    unavailable: list[str] = field(default_factory=list)


def parameter_count(model) -> int:
    """Learned numbers in the graph: initializer elements, leaving out quantization scales and
    zero points and integer shape/index constants, so fp32 and int8 twins count the same."""
    import numpy as np

    not_weights, dequantized = set(), set()
    for node in model.graph.node:
        if node.op_type in _QDQ:
            not_weights.update(node.input[1:])
            if node.op_type == "DequantizeLinear":
                dequantized.add(node.input[0])
    total = 0
    for init in model.graph.initializer:
        if init.name in not_weights:
            continue
        is_float = init.data_type in (1, 10, 11, 16)  # float, float16, double, bfloat16
        if is_float or init.name in dequantized:
            total += int(np.prod(init.dims, dtype=np.int64))
    return total


def _dims(shape) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _from_onnx(path: Path) -> ModelInfo:
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InfoError(f"{path}: not an ONNX model ({reason})") from None
    if model.ir_version <= 0 or not model.graph.node:
        raise InfoError(f"{path}: not an ONNX model (no graph)")
    initializers = {init.name for init in model.graph.initializer}

    def describe(values):
        return [{"name": v.name, "type": TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
                 "shape": _dims(v.type.tensor_type.shape)} for v in values if v.name not in initializers]

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    meta = {p.key: p.value for p in model.metadata_props}
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x)
    return ModelInfo(path=str(path), file_bytes=path.stat().st_size, inputs=describe(model.graph.input),
                     outputs=describe(model.graph.output), contract=None, metadata=meta, producer=producer,
                     opset=opset, ir_version=model.ir_version, parameters=parameter_count(model),
                     nodes=len(model.graph.node), op_counts=dict(sorted(ops.items(), key=lambda kv: -kv[1])))


def _from_onnxruntime(path: Path) -> ModelInfo:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InfoError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:120]})") from None
    meta = session.get_modelmeta()

    def describe(values):
        return [{"name": v.name, "type": v.type.replace("tensor(", "").rstrip(")"),
                 "shape": list(v.shape)} for v in values]

    return ModelInfo(path=str(path), file_bytes=path.stat().st_size, inputs=describe(session.get_inputs()),
                     outputs=describe(session.get_outputs()), contract=None,
                     metadata=dict(meta.custom_metadata_map), producer=meta.producer_name,
                     unavailable=["opset", "ir_version", "parameters", "nodes", "op_counts"])


def inspect(path: str | Path) -> ModelInfo:
    """Describe an ONNX file; raises InfoError (one line) for a missing or non-ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise InfoError(f"{path}: {'is a directory' if path.is_dir() else 'file not found'}")
    try:
        import onnx  # noqa: F401
    except ImportError:
        log.info("onnx is not installed: using onnxruntime's metadata only")
        info = _from_onnxruntime(path)
    else:
        info = _from_onnx(path)
    ours = {k: v for k, v in info.metadata.items() if k.startswith(PREFIX)}
    if ours:
        try:
            info.contract = asdict(ModelContract.from_metadata(ours))
        except (ValueError, TypeError) as exc:
            raise InfoError(f"{path}: damaged unetlite contract in metadata ({exc})") from None
    info.metadata = {k: v for k, v in info.metadata.items() if k not in ours}
    return info


def _shape(shape: list) -> str:
    """Unnamed dynamic dims (None, or tf2onnx's "unk__N") print as "?"."""
    return "[" + ", ".join("?" if d is None or str(d).startswith("unk__") else str(d) for d in shape) + "]"


def format_info(info: ModelInfo) -> str:
    na = "unavailable (install onnx)"
    lines = [f"model       {info.path} ({info.file_bytes / 1e6:.2f} MB)"]
    if info.producer:
        lines.append(f"producer    {info.producer}")
    lines.append(f"opset       {info.opset if info.opset is not None else na}")
    lines.append(f"parameters  {format(info.parameters, ',') if info.parameters is not None else na}")
    if info.nodes is not None:
        top = ", ".join(f"{op} {n}" for op, n in list(info.op_counts.items())[:8])
        lines.append(f"graph       {info.nodes} nodes ({top}{', ...' if len(info.op_counts) > 8 else ''})")
    for kind, values in (("input", info.inputs), ("output", info.outputs)):
        for v in values:
            lines.append(f"{kind:<11} {v['name']}  {v['type']}  {_shape(v['shape'])}")
    if info.contract is None:
        lines.append("contract    none in this file (the engine would use the defaults)")
    else:
        lines.append("contract")
        for key, value in info.contract.items():
            if value in ("", {}, None):
                value = "-"
            elif isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, (tuple, list)):
                value = ", ".join(map(str, value))
            lines.append(f"  {key:<15} {value}")
    for key, value in info.metadata.items():
        lines.append(f"metadata    {key} = {value}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a model's contract, inputs/outputs, opset and size",
                       description="Describe an ONNX model file: the unetlite contract stored in it, "
                                   "inputs and outputs, opset, parameter count and file size.")
    p.add_argument("model", type=Path, help="ONNX file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        info = inspect(args.model)
    except InfoError as exc:
        print(f"unetlite info: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(info), indent=2) if args.json else format_info(info))
    return 0

"""`unetlite info [MODEL.onnx]`: what a model file is and how to feed it."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from .args import say


def _shape(shape: list) -> str:
    """Unnamed dynamic dims (None, or tf2onnx's "unk__N") print as "?"."""
    return "[" + ", ".join("?" if d is None or str(d).startswith("unk__") else str(d) for d in shape) + "]"


def format_info(info) -> str:
    na = "unknown"
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
    p.add_argument("model", type=Path, nargs="?", help="ONNX file (default: the bundled model)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Exit 2 for a missing or unreadable model, like every other command (the error is a UnetliteError)."""
    from ..engine.modelinfo import inspect
    from ..engine.segmenter import default_model_path
    info = inspect(args.model if args.model is not None else default_model_path())
    say(json.dumps(asdict(info), indent=2) if args.json else format_info(info))
    return 0

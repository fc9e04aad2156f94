"""Read what `info` and the engine need from an ONNX file without the ``onnx`` package.

ONNX files are protobuf; this walks the wire format for the few fields used (opset,
producer, metadata, graph inputs/outputs, node types, initializer shapes) and skips the
rest by length, so even the engine's start-up can read the contract cheaply. Field
numbers are from onnx/onnx.proto3.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# TensorProto.DataType numbers -> names (the ones a U-Net export can contain)
DATA_TYPES = {1: "float", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
              10: "float16", 11: "double", 16: "bfloat16"}


class WireError(ValueError):
    """Not a well-formed protobuf / ONNX model."""


@dataclass
class Node:
    op_type: str = ""
    inputs: list[str] = field(default_factory=list)


@dataclass
class Initializer:
    name: str = ""
    data_type: int = 0
    dims: list[int] = field(default_factory=list)


@dataclass
class Value:
    name: str = ""
    elem_type: int = 0
    shape: list = field(default_factory=list)   # int, str (named dim) or None


@dataclass
class OnnxFile:
    ir_version: int = 0
    producer: str = ""
    opset: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    initializers: list[Initializer] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """(field number, wire type, value) for each field; value is an int or a memoryview."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise WireError("length runs past the end")
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise WireError("truncated fixed-size field")
            value, pos = int.from_bytes(buf[pos:pos + size], "little"), pos + size
        else:
            raise WireError(f"unsupported wire type {wire}")
        yield number, wire, value


def _text(value) -> str:
    if isinstance(value, int):
        raise WireError("expected a string")
    return bytes(value).decode("utf-8", errors="replace")


def _ints(wire: int, value) -> list[int]:
    """A repeated int64: one varint, or a packed run."""
    if wire == 0:
        return [value]
    out, pos, buf = [], 0, value
    while pos < len(buf):
        item, pos = _varint(buf, pos)
        out.append(item)
    return out


def _value(buf) -> Value:
    value = Value()
    for number, _, raw in _fields(buf):
        if number == 1:
            value.name = _text(raw)
        elif number == 2 and not isinstance(raw, int):          # TypeProto
            for n, _, tensor in _fields(raw):
                if n == 1 and not isinstance(tensor, int):      # tensor_type
                    for k, wire, item in _fields(tensor):
                        if k == 1 and wire == 0:
                            value.elem_type = item
                        elif k == 2 and not isinstance(item, int):  # shape
                            for d, _, dim in _fields(item):
                                if d == 1 and not isinstance(dim, int):
                                    value.shape.append(_dim(dim))
    return value


def _dim(buf) -> int | str | None:
    for number, _, raw in _fields(buf):
        if number == 1 and isinstance(raw, int):
            return raw
        if number == 2:
            return _text(raw)
    return None


def _graph(buf, out: OnnxFile) -> None:
    for number, wire, raw in _fields(buf):
        if number == 1:
            node = Node()
            for n, _, item in _fields(raw):
                if n == 1:
                    node.inputs.append(_text(item))
                elif n == 4:
                    node.op_type = _text(item)
            out.nodes.append(node)
        elif number == 5:
            init = Initializer()
            for n, w, item in _fields(raw):
                if n == 1:
                    init.dims.extend(_ints(w, item))
                elif n == 2 and w == 0:
                    init.data_type = item
                elif n == 8:
                    init.name = _text(item)
            out.initializers.append(init)
        elif number in (11, 12):
            (out.inputs if number == 11 else out.outputs).append(_value(raw))


def parse(data: bytes, graph: bool = True) -> OnnxFile:
    """Parse a serialized ModelProto; ``graph=False`` reads only the top-level fields (fast)."""
    out = OnnxFile()
    producer_version = ""
    for number, wire, raw in _fields(memoryview(data)):
        if number == 1 and wire == 0:
            out.ir_version = raw
        elif number == 2:
            out.producer = _text(raw)
        elif number == 3:
            producer_version = _text(raw)
        elif number == 8 and not isinstance(raw, int):
            domain, version = "", None
            for n, w, item in _fields(raw):
                if n == 1:
                    domain = _text(item)
                elif n == 2 and w == 0:
                    version = item
            if domain in ("", "ai.onnx") and version is not None:
                out.opset = version
        elif number == 14 and not isinstance(raw, int):
            entry = dict((n, _text(item)) for n, _, item in _fields(raw))
            out.metadata[entry.get(1, "")] = entry.get(2, "")
        elif number == 7 and graph and not isinstance(raw, int):
            _graph(raw, out)
    out.producer = " ".join(x for x in (out.producer, producer_version) if x)
    if out.ir_version <= 0:
        raise WireError("no ONNX ir_version")
    return out


def read(path: str | Path, graph: bool = True) -> OnnxFile:
    return parse(Path(path).read_bytes(), graph)

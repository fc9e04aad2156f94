"""The model's preprocessing contract, carried inside the ONNX file's metadata_props.

Everything the engine needs to feed a model correctly travels with the model, so a
deployment never needs a side file. A model without metadata still runs with the
defaults below (the paper's 256x256 RGB [0,1] U-Net with depth 6).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

PREFIX = "unetlite."


@dataclass(frozen=True)
class ModelContract:
    """How images go into the model and how its output is read."""

    input_height: int = 256
    input_width: int = 256
    channel_order: str = "RGB"          # order of the 3 input channels
    scale: float = 1.0 / 255.0          # uint8 pixel * scale -> model input in [0, 1]
    resize: str = "area"                # "area": INTER_AREA to shrink (no aliasing on 12 MP photos), linear to enlarge
    threshold: float = 0.5              # probability -> mask
    size_multiple: int = 64             # 2**depth: valid H and W for a dynamic-size model
    dynamic_size: bool = False          # True: the ONNX graph accepts any H, W multiple of size_multiple
    classes: tuple[str, ...] = ("pet",)
    input_name: str = "image"
    layout: str = "NHWC"
    input_dtype: str = "float32"        # "uint8": raw pixels in, Cast + scale inside the graph
    # Provenance: informational, shown by `unetlite info`.
    training_data: str = ""
    metrics: dict = field(default_factory=dict, hash=False, compare=False)
    version: str = ""
    export_date: str = ""
    quantization: str = "none"

    def resolve_threshold(self, requested: float | None) -> float:
        """The threshold a run uses: the one asked for, else the model's own."""
        return self.threshold if requested is None else requested

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model is fed at when not tiling."""
        return self.input_height, self.input_width

    def to_metadata(self) -> dict[str, str]:
        """Flat string key/values for onnx metadata_props."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, (dict, list, tuple, bool)):
                value = json.dumps(list(value) if isinstance(value, tuple) else value)
            out[PREFIX + key] = str(value)
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "ModelContract":
        """Parse metadata_props; unknown keys are ignored, missing ones take defaults."""
        kwargs = {}
        for f in fields(cls):
            raw = meta.get(PREFIX + f.name)
            if raw is None:
                continue
            default = f.default
            if f.name == "metrics" or isinstance(default, (bool, tuple)):
                value = json.loads(raw)
                if isinstance(default, tuple):
                    value = tuple(value)
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            else:
                value = raw
            kwargs[f.name] = value
        return cls(**kwargs)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """An ONNX file's metadata_props, read without a runtime (onnx_wire); {} when unreadable."""
    from .onnx_wire import WireError, read
    try:
        return read(path, graph=False).metadata
    except (WireError, OSError):  # a runtime reports what is wrong with the file; a contract-less model runs
        return {}


def read_contract(path: str | os.PathLike) -> ModelContract:
    """The one metadata reader: the contract stored in an ONNX file (defaults where absent).
    Used by the Segmenter, ``info``, quantize and Ray's driver (no session needed)."""
    return ModelContract.from_metadata(read_metadata(path))

"""Optional dependencies: one place that knows each extra's modules and its install hint.

The package is installed from a clone, so hints say ``pip install '.[EXTRA]'``.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from .errors import UnetliteError


@dataclass(frozen=True)
class Extra:
    modules: tuple[str, ...]   # imported to check it is there
    needs: str                 # what the message says is needed


EXTRAS: dict[str, Extra] = {
    "train": Extra(("tensorflow", "tf2onnx"), "TensorFlow and tf2onnx"),
    "serve": Extra(("fastapi", "uvicorn", "multipart"), "FastAPI, uvicorn and python-multipart"),
    "ray": Extra(("ray", "ray.data"), "Ray Data"),
    "openvino": Extra(("openvino",), "OpenVINO"),
    "video": Extra(("av",), "PyAV (FFmpeg: H.264, VP9 with alpha, GIF/WebP, pipes)"),
    "cuda": Extra(("onnxruntime",), "onnxruntime-gpu with its CUDA libraries"),
}


class MissingExtra(UnetliteError):
    """An optional dependency is not installed (exit 2, with the install command)."""


def install_hint(name: str) -> str:
    """How to install extra ``name`` from a clone of the repository."""
    return f"pip install '.[{name}]'"


def require_extra(name: str, what: str | None = None) -> None:
    """Import extra ``name``'s modules, or raise MissingExtra: '<what> needs X (Y is not installed);
    install it with: pip install '.[name]''."""
    extra = EXTRAS[name]
    if name == "train":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for module in extra.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            prefix = f"{what} needs" if what else "needs"
            raise MissingExtra(f"{prefix} {extra.needs} ({exc.name or exc} is not installed); "
                               f"install with: {install_hint(name)}") from None


def require_tensorflow(command: str) -> None:
    """train/export: fail with the install hint, not a traceback, when TensorFlow is missing.
    ``main()`` prints ``unetlite COMMAND: ...`` and exits 2."""
    require_extra("train")

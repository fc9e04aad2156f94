"""unetlite.infer: segment images and video with an ONNX U-Net. Needs no TensorFlow.

Layers (each imports only the ones before it): errors/extras/signals -> io -> engine -> pipeline
-> serve -> cli (tests/test_layers.py checks it). The public names below load on first use, so
``unetlite --help`` imports neither OpenCV nor a runtime.
"""
from __future__ import annotations

import importlib

_PUBLIC = {
    "ModelContract": ".engine.contract",
    "Segmentation": ".engine.postprocess",
    "postprocess": ".engine.postprocess",
    "prepare": ".engine.preprocess",
    "trimap_to_mask": ".engine.preprocess",
    "label_to_mask": ".engine.preprocess",
    "BackendError": ".engine.runtimes",
    "ModelLoadError": ".engine.runtimes",
    "Segmenter": ".engine.segmenter",
    "default_model_path": ".engine.segmenter",
    "UnetliteError": ".errors",
    "ImageReadError": ".io.images",
    "read_image": ".io.images",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

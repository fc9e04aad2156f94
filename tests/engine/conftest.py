"""Engine-only pytest set-up: the ``requires_cuda`` marker (skips cleanly without a usable GPU)."""
from __future__ import annotations

import pytest


def _cuda_usable() -> bool:
    from unetlite.infer.engine.runtimes.base import CUDA_EP, gpu_present
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return gpu_present() and CUDA_EP in ort.get_available_providers()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_cuda: needs an NVIDIA GPU and onnxruntime's CUDA provider")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_cuda") and not _cuda_usable():
        pytest.skip("needs an NVIDIA GPU and onnxruntime's CUDA provider (pip install '.[cuda]')")

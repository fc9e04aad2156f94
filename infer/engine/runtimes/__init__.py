"""The runtime registry: ``--providers`` choices, precisions and openers all come from here.

Adding a runtime is one module (a :class:`~.base.Runtime` with an ``open`` that returns a Runner)
plus one line in :data:`REGISTRY`. Runtime packages are imported only when a runner is opened.
"""
from __future__ import annotations

import logging
from pathlib import Path

from . import onnxruntime as _onnxruntime
from . import openvino as _openvino
from .base import (AUTO, BackendChoice, BackendError, MachineFacts, ModelLoadError, Runner,  # noqa: F401
                   RunnerOptions, Runtime, TensorSpec, available_cpus, check_io, choose, gpu_present,
                   machine_facts, openvino_installed)
from .base import parse_backend as _parse

log = logging.getLogger(__name__)

REGISTRY: dict[str, Runtime] = {
    "cpu": _onnxruntime.CPU,
    "cuda": _onnxruntime.CUDA,
    "openvino": _openvino.RUNTIME,
}


def names() -> tuple[str, ...]:
    """The registered runtimes, in registry order."""
    return tuple(REGISTRY)


def choices() -> tuple[str, ...]:
    """What ``--providers`` accepts: auto plus every registered runtime."""
    return (AUTO, *REGISTRY)


def precisions() -> tuple[str, ...]:
    """Every precision some registered runtime offers, fp32 first."""
    found = ["fp32"]
    for runtime in REGISTRY.values():
        found += [p for p in runtime.precisions if p not in found]
    return tuple(found)


def parse_backend(text) -> str:
    """'auto' or a registered runtime (or an onnxruntime provider name) -> its registry name."""
    return _parse(text, names())


def for_precision(precision: str) -> str | None:
    """The first registered runtime offering ``precision`` (auto with --precision bf16)."""
    return next((name for name, rt in REGISTRY.items() if precision in rt.precisions), None)


def open_runner(backend: str, path: Path, options: RunnerOptions) -> Runner:
    """The runner for one registered runtime; BackendError when it cannot run here."""
    runtime = REGISTRY[backend]
    if options.precision not in runtime.precisions:
        offering = [n for n, rt in REGISTRY.items() if options.precision in rt.precisions]
        hint = f" (pass --providers {offering[0]})" if offering else ""
        raise BackendError(f"--precision {options.precision}: the {backend} runtime does not offer it{hint}")
    return runtime.open(path, options)


def open_chosen(choice: BackendChoice, path: Path, options: RunnerOptions) -> Runner:
    """Open the chosen runtime; under auto, fall back (one line) when it cannot load."""
    try:
        return open_runner(choice.backend, path, options)
    except BackendError as exc:
        if choice.fallback is None:
            raise
        log.warning("%s; falling back to %s", exc, choice.fallback)
        return open_runner(choice.fallback, path, options)

"""What every runtime shares: the Runner protocol, tensor specs, I/O checks and the choice of runtime.

Imports no sibling module: runtimes import this, and the registry (``runtimes/__init__``) lists them.
The choice is a pure function of what this machine offers (:func:`choose`), so every case -- GPU or
not, CUDA build or not, OpenVINO installed or not, explicit or auto -- is table-tested with the
provider lists real machines report.
"""
from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from ...errors import UnetliteError

AUTO = "auto"
BUILTIN = ("cpu", "cuda", "openvino")   # the runtimes auto may pick, in preference order cuda > openvino > cpu
CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
OPENVINO = "OpenVINO"
CUDA_HINT = "pip install '.[cuda]'"
OPENVINO_HINT = "pip install '.[openvino]'"
# Explicit onnxruntime provider names are accepted as aliases of the short names.
ALIASES = {"cpuexecutionprovider": "cpu", "cudaexecutionprovider": "cuda"}


class ModelLoadError(UnetliteError):
    """The model file is missing, unloadable or not an image-to-mask model (one-line message)."""


class BackendError(ModelLoadError):
    """The requested runtime cannot run here (one line saying why and how to fix it)."""


@dataclass(frozen=True)
class TensorSpec:
    """An input or output as the runtime reports it; None for a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


class Runner(Protocol):
    """One loaded model on one runtime: ``runner(batch) -> output`` plus what really runs."""

    provider: str          # e.g. "CPUExecutionProvider", "OpenVINO"
    precision: str         # "fp32", "bf16"
    threads: int
    version: str           # "onnxruntime 1.31.1"
    input: TensorSpec
    output: TensorSpec
    n_inputs: int

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RunnerOptions:
    threads: int
    spin: bool = False        # onnxruntime busy-waiting (off when other threads share the cores)
    precision: str = "fp32"


@dataclass(frozen=True)
class Runtime:
    """A registry entry: how to open a runner, and what it offers."""

    name: str
    open: Callable[[Path, RunnerOptions], Runner]   # raises BackendError when it cannot run here
    precisions: tuple[str, ...] = ("fp32",)
    summary: str = ""


@dataclass(frozen=True)
class MachineFacts:
    """What the machine offers, as :func:`choose` needs it (collected by :func:`machine_facts`)."""

    ort_providers: tuple[str, ...]
    openvino_installed: bool
    gpu_present: bool


@dataclass(frozen=True)
class BackendChoice:
    backend: str                 # a registry name: "cuda", "openvino", "cpu", ...
    fallback: str | None = None  # auto only: what runs if the backend fails to load
    reason: str = ""             # one line for the log
    warn: bool = False           # a GPU is present but will not be used: worth a WARNING


def parse_backend(text: str | Sequence[str], names: Sequence[str] = BUILTIN) -> str:
    """'auto' or a runtime name (or an onnxruntime provider name) -> the short name.

    A list (the old API: onnxruntime provider names) is judged by its first entry.
    """
    if not isinstance(text, str):
        text = next(iter(text), "")
    name = text.strip().lower()
    name = ALIASES.get(name, name)
    choices = (AUTO, *names)
    if name not in choices:
        raise ValueError(f"{text!r}: expected one of {', '.join(choices)}")
    return name


def choose(requested: str, facts: MachineFacts, names: Sequence[str] = BUILTIN) -> BackendChoice:
    """What to run. auto: CUDA when a GPU is present and onnxruntime has CUDA, then OpenVINO when
    installed, then onnxruntime CPU. An explicit built-in request that cannot work raises
    BackendError; any other registered runtime is taken as asked (it says itself if it cannot run)."""
    requested = parse_backend(requested, names)
    cuda_built = CUDA_EP in facts.ort_providers
    local = "openvino" if facts.openvino_installed else "cpu"
    if requested == "cpu":
        return BackendChoice("cpu", reason="asked for onnxruntime CPU")
    if requested == "openvino":
        if not facts.openvino_installed:
            raise BackendError(f"--providers openvino: the openvino package is not installed; {OPENVINO_HINT}")
        return BackendChoice("openvino", reason="asked for OpenVINO")
    if requested == "cuda":
        if not cuda_built:
            raise BackendError(f"--providers cuda: this onnxruntime build has no CUDA provider "
                               f"(it has {', '.join(facts.ort_providers) or 'none'}); {CUDA_HINT}")
        if not facts.gpu_present:
            raise BackendError("--providers cuda: no NVIDIA GPU on this machine (no /dev/nvidia* device)")
        return BackendChoice("cuda", reason="asked for CUDA")
    if requested != AUTO:
        return BackendChoice(requested, reason=f"asked for {requested}")
    if facts.gpu_present and cuda_built:
        return BackendChoice("cuda", fallback=local, reason="NVIDIA GPU found")
    if facts.gpu_present:
        return BackendChoice(local, reason=f"a GPU is present but this onnxruntime has no CUDA provider ({CUDA_HINT})",
                             warn=True)
    return BackendChoice(local, reason="no GPU; " + ("OpenVINO installed" if facts.openvino_installed
                                                     else f"OpenVINO not installed ({OPENVINO_HINT} is faster)"))


def choose_backend(requested: str, ort_providers: Sequence[str], openvino_installed: bool,
                   gpu_present: bool) -> BackendChoice:
    """:func:`choose` with the facts as separate arguments."""
    return choose(requested, MachineFacts(tuple(ort_providers), openvino_installed, gpu_present))


def gpu_present() -> bool:
    """An NVIDIA GPU is visible: a device node, the driver's GPU list, or WSL's GPU bridge."""
    if glob.glob("/dev/nvidia[0-9]*"):
        return True
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    return Path("/dev/dxg").exists() and Path("/usr/lib/wsl/lib/libcuda.so.1").exists()


def openvino_installed() -> bool:
    try:
        return importlib.util.find_spec("openvino") is not None
    except ValueError:  # sys.modules["openvino"] = None: deliberately unimportable
        return False


def machine_facts() -> MachineFacts:
    """This machine's facts (imports onnxruntime)."""
    import onnxruntime as ort
    return MachineFacts(tuple(ort.get_available_providers()), openvino_installed(), gpu_present())


def available_cpus() -> int:
    """CPUs this process may use (affinity, cgroup pinning), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_io(path: Path, inputs: int, first: TensorSpec, output: TensorSpec) -> str:
    """The model must map an image batch to a 1-channel map of the same size.

    Returns the input layout ("NHWC" or "NCHW"); raises ModelLoadError saying what was
    expected and what was found.
    """
    def show(spec: TensorSpec) -> str:
        return f"{spec.name!r} {spec.dtype} [" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"

    expected_in = "one image input [N, H, W, 3] (or [N, 3, H, W]) of float32 or uint8"
    if inputs != 1:
        raise ModelLoadError(f"{path}: not an image-to-mask model: expected {expected_in}, found {inputs} inputs")
    shape = first.shape
    if len(shape) == 4 and shape[3] == 3:
        layout, spatial, channel_axis = "NHWC", shape[1:3], 3
    elif len(shape) == 4 and shape[1] == 3:
        layout, spatial, channel_axis = "NCHW", shape[2:4], 1
    else:
        layout = ""
    if not layout or first.dtype not in ("float32", "uint8"):
        raise ModelLoadError(f"{path}: not an image-to-mask model: expected {expected_in}, found {show(first)}")
    out = output.shape
    if len(out) == 4 and out[channel_axis] == 1:
        out_spatial = out[1:3] if layout == "NHWC" else out[2:4]
    elif len(out) == 3:
        out_spatial = out[1:3]
    else:
        out_spatial = None
    same = out_spatial is not None and all(a is None or b is None or a == b for a, b in zip(spatial, out_spatial))
    if not same or output.dtype != "float32":
        want = "[N, H, W, 1]" if layout == "NHWC" else "[N, 1, H, W]"
        raise ModelLoadError(f"{path}: not an image-to-mask model: expected a float32 1-channel output {want} "
                             f"of the input's size, found {show(output)}")
    return layout

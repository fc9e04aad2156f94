"""Which runtime runs the model, and the onnxruntime runner.

The choice is a pure function of what this machine offers (``choose_backend``), so every
case -- GPU or not, CUDA build or not, OpenVINO installed or not, explicit or auto -- is
testable with the provider lists a real machine reports. Runners share one interface:
``runner(batch) -> output``, ``runner.provider``, ``runner.precision``, ``runner.input``,
``runner.output``.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .messages import first_line

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpu", "cuda", "openvino")
PRECISIONS = ("fp32", "bf16")
CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
OPENVINO = "OpenVINO"
CUDA_HINT = "pip install 'unetlite[cuda]'"
OPENVINO_HINT = "pip install 'unetlite[openvino]'"
# Explicit onnxruntime provider names are accepted as aliases of the short names.
_ALIASES = {"cpuexecutionprovider": "cpu", "cudaexecutionprovider": "cuda"}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
              "tensor(int8)": "int8", "tensor(double)": "float64", "tensor(int64)": "int64"}


class ModelLoadError(Exception):
    """The model file is missing, unloadable or not an image-to-mask model (one-line message)."""


class BackendError(ModelLoadError):
    """The requested runtime cannot run here (one line saying why and how to fix it)."""


@dataclass(frozen=True)
class TensorSpec:
    """An input or output as the runtime reports it; None for a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class BackendChoice:
    backend: str                 # "cuda" (onnxruntime CUDA), "openvino" or "cpu" (onnxruntime CPU)
    fallback: str | None = None  # auto only: what runs if the backend fails to load
    reason: str = ""             # one line for the log
    warn: bool = False           # a GPU is present but will not be used: worth a WARNING


def parse_backend(text: str | Sequence[str]) -> str:
    """'auto'|'cpu'|'cuda'|'openvino' (or an onnxruntime provider name) -> the short name.

    A list (the old API: onnxruntime provider names) is judged by its first entry.
    """
    if not isinstance(text, str):
        text = next(iter(text), "")
    name = text.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in BACKENDS:
        raise ValueError(f"{text!r}: expected one of {', '.join(BACKENDS)}")
    return name


def choose_backend(requested: str, ort_providers: Sequence[str], openvino_installed: bool,
                   gpu_present: bool) -> BackendChoice:
    """What to run. auto: CUDA when a GPU is present and onnxruntime has CUDA, then OpenVINO when
    installed, then onnxruntime CPU. An explicit request that cannot work raises BackendError."""
    requested = parse_backend(requested)
    cuda_built = CUDA_EP in ort_providers
    local = "openvino" if openvino_installed else "cpu"
    if requested == "cpu":
        return BackendChoice("cpu", reason="asked for onnxruntime CPU")
    if requested == "openvino":
        if not openvino_installed:
            raise BackendError(f"--providers openvino: the openvino package is not installed; {OPENVINO_HINT}")
        return BackendChoice("openvino", reason="asked for OpenVINO")
    if requested == "cuda":
        if not cuda_built:
            raise BackendError(f"--providers cuda: this onnxruntime build has no CUDA provider "
                               f"(it has {', '.join(ort_providers) or 'none'}); {CUDA_HINT}")
        if not gpu_present:
            raise BackendError("--providers cuda: no NVIDIA GPU on this machine (no /dev/nvidia* device)")
        return BackendChoice("cuda", reason="asked for CUDA")
    if gpu_present and cuda_built:
        return BackendChoice("cuda", fallback=local, reason="NVIDIA GPU found")
    if gpu_present:
        return BackendChoice(local, reason=f"a GPU is present but this onnxruntime has no CUDA provider ({CUDA_HINT})",
                             warn=True)
    return BackendChoice(local, reason="no GPU; " + ("OpenVINO installed" if openvino_installed
                                                     else f"OpenVINO not installed ({OPENVINO_HINT} is faster)"))


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


def available_cpus() -> int:
    """CPUs this process may use (affinity, cgroup pinning), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---- onnxruntime --------------------------------------------------------------------------------

def preload_cuda() -> None:
    """Load the pip-installed CUDA/cuDNN libraries (unetlite[cuda]) before a CUDA session.

    ``onnxruntime.preload_dlls`` exists from onnxruntime 1.21; it prints its own warnings,
    which are kept off the terminal (the reason a load fails is reported by cuda_problem).
    """
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            preload(cuda=True, cudnn=True, msvc=False)
        except Exception as exc:  # best effort: the dlopen check below says what is missing
            log.debug("onnxruntime.preload_dlls failed: %s", exc)


def cuda_problem() -> str | None:
    """Why onnxruntime's CUDA provider cannot load here, or None: the dynamic loader's own words."""
    import onnxruntime as ort

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "the NVIDIA driver library libcuda.so.1 is not installed"
    provider_lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not provider_lib.is_file():
        return f"{provider_lib.name} is missing from this onnxruntime install"
    try:
        ctypes.CDLL(str(provider_lib))
    except OSError as exc:  # e.g. "libcublasLt.so.13: cannot open shared object file: ..."
        return str(exc).splitlines()[0]
    return None


class OrtRunner:
    """An onnxruntime session (CPU, or CUDA with IO binding)."""

    def __init__(self, path: Path, cuda: bool, threads: int, spin: bool):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not spin:  # another thread (decoder, writer) shares the cores: don't busy-wait
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if cuda:
            preload_cuda()
            problem = cuda_problem()
            if problem:
                raise BackendError(f"CUDA cannot load: {problem} ({CUDA_HINT}; needs an NVIDIA driver for CUDA 13)")
        ort.set_default_logger_severity(4)  # a failed CUDA load is logged as errors, then ignored
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options,
                                                providers=[CUDA_EP, CPU_EP] if cuda else [CPU_EP])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from None
        self.provider = self.session.get_providers()[0]
        if cuda and self.provider != CUDA_EP:
            raise BackendError("CUDA cannot load: onnxruntime fell back to the CPU (run with -vv for its log)")
        self.precision = "fp32"
        self.threads = threads
        self.version = f"onnxruntime {ort.__version__}"
        self.input, self.output = (self._spec(v) for v in (self.session.get_inputs()[0], self.session.get_outputs()[0]))
        self.n_inputs = len(self.session.get_inputs())
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)

    @staticmethod
    def _spec(value) -> TensorSpec:
        return TensorSpec(value.name, _ORT_TYPES.get(value.type, value.type),
                          tuple(d if isinstance(d, int) else None for d in value.shape))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.provider != CUDA_EP:
            return self.session.run([self.output.name], {self.input.name: batch})[0]
        # IO binding: input copied once to the device, output left there until fetched.
        # Untested on hardware while this was written (no GPU available).
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input.name, batch)
        binding.bind_output(self.output.name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def open_runner(backend: str, path: Path, threads: int, spin: bool, precision: str):
    """The runner for one backend; BackendError when that runtime cannot run here."""
    if backend == "openvino":
        from .openvino_backend import OpenVinoRunner
        return OpenVinoRunner(path, threads, precision)
    if precision != "fp32":
        raise BackendError(f"--precision {precision}: only the OpenVINO backend offers it (pass --providers openvino)")
    return OrtRunner(path, cuda=backend == "cuda", threads=threads, spin=spin)


def open_chosen(choice: BackendChoice, path: Path, threads: int, spin: bool, precision: str):
    """Open the chosen backend; under auto, fall back (one line) when it cannot load."""
    try:
        return open_runner(choice.backend, path, threads, spin, precision)
    except BackendError as exc:
        if choice.fallback is None:
            raise
        log.warning("%s; falling back to %s", exc, choice.fallback)
        return open_runner(choice.fallback, path, threads, spin, precision)


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

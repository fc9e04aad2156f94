"""onnxruntime on the CPU, and on CUDA with IO binding. onnxruntime itself is imported on open."""
from __future__ import annotations

import contextlib
import ctypes
import io
import logging
from pathlib import Path

import numpy as np

from ...errors import first_line
from .base import CPU_EP, CUDA_EP, CUDA_HINT, BackendError, ModelLoadError, Runtime, RunnerOptions, TensorSpec

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
              "tensor(int8)": "int8", "tensor(double)": "float64", "tensor(int64)": "int64"}


def preload_cuda() -> None:
    """Load the pip-installed CUDA/cuDNN libraries (the [cuda] extra) before a CUDA session.

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

    @staticmethod
    def _spec(value) -> TensorSpec:
        return TensorSpec(value.name, _ORT_TYPES.get(value.type, value.type),
                          tuple(d if isinstance(d, int) else None for d in value.shape))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.provider != CUDA_EP:
            return self.session.run([self.output.name], {self.input.name: batch})[0]
        # IO binding: input copied once to the device, output left there until fetched.
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input.name, batch)
        binding.bind_output(self.output.name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def _open_cpu(path: Path, options: RunnerOptions) -> OrtRunner:
    return OrtRunner(path, cuda=False, threads=options.threads, spin=options.spin)


def _open_cuda(path: Path, options: RunnerOptions) -> OrtRunner:
    return OrtRunner(path, cuda=True, threads=options.threads, spin=options.spin)


CPU = Runtime("cpu", _open_cpu, summary="onnxruntime on the CPU")
CUDA = Runtime("cuda", _open_cuda, summary="onnxruntime on an NVIDIA GPU (IO binding)")

"""Batch segmentation on Ray Data: the same outputs as ``unetlite segment``, on one machine or many.

Ray Data does the scheduling (streaming execution with back-pressure, an actor pool that
loads the model once per worker, CPU/GPU placement, pyarrow filesystems); this module only
wires segment's own steps into it:

    read + decode + prepare (tasks)  ->  inference (actor pool of Segmenters)
    ->  postprocess + render + encode (tasks)  ->  this process: write, manifest, failures

Every step is the pipeline's own (``items``: decode, infer_batch, encode_output), so the bytes are
the ones plain ``segment`` writes. Each row carries its ``Decoded`` whole (one object column) from
the read task to the encode task. The driver reads the model's contract from the file's metadata
and opens no session. A bad image becomes a row with an ``error`` reason, never a failed job.
Ray is imported inside functions only: it is the optional ``[ray]`` extra.
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..engine.contract import ModelContract
from ..errors import UnetliteError, first_line, one_line
from ..extras import MissingExtra, install_hint
from ..io.atomic import display_path, write_atomic
from ..io.formats import get as output_format
from ..io.images import DEFAULT_MAX_PIXELS, ImageReadError
from ..signals import held_signals, stop_on_signals
from .batch import OnFailed, Summary, failures_csv, log_failure
from .items import Decoded, ModelInputs, SegmentSettings, as_decoded, decode, infer_batch, encode_output, keeps_rgb, load
from .naming import Job, UriJob, is_uri

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

log = logging.getLogger(__name__)

RAY_EXTRA_HINT = install_hint("ray")
ROWS_PER_BLOCK = 16      # file jobs per Ray block: small blocks keep the decoded images in flight few
ACTOR_CPU_SHARE = 0.5    # at most this share of the cluster's CPUs is reserved by the actor pool
_DECODED, _PROB, _SIZE = "__unetlite_decoded", "__unetlite_prob", "__unetlite_size"


class MissingRay(MissingExtra):
    """The ``ray[data]`` extra is not installed (one-line message with the install command)."""


class RayUnavailable(UnetliteError):
    """No Ray runtime could be started or joined (one-line message)."""


def import_ray():
    """``ray`` with ``ray.data`` loaded, or MissingRay with the install hint."""
    # Ray's C++ failure handler catches SIGTERM itself (a stack dump, then abort: exit 134 and no
    # summary); read once, when ray is first imported
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingRay(f"--ray needs Ray Data ({exc.name or exc} is not installed); "
                         f"install it with: {RAY_EXTRA_HINT}") from None
    return ray


# ----------------------------------------------------------------------------- resources

@dataclass(frozen=True)
class Plan:
    """How the actor pool is sized on the cluster it runs on."""

    workers: int               # actors, each holding one Segmenter
    cpus_per_worker: float     # Ray CPU request per actor
    gpus_per_worker: float     # Ray GPU request per actor (0: CPU only)
    threads: int               # inference threads per actor

    def line(self) -> str:
        gpu = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (f"{self.workers} worker{'s' * (self.workers != 1)} x ({self.cpus_per_worker:g} CPU{gpu}, "
                f"{self.threads} thread{'s' * (self.threads != 1)})")


def plan_resources(cluster_cpus: float, cluster_gpus: float, workers: int | None = None,
                   providers: str = "auto", threads: int | None = None) -> Plan:
    """Size the actor pool from the cluster's resources.

    Actors reserve at most half of the CPUs, so read/decode and encode tasks always find a free
    one: on a 2-CPU runtime, two actors asking 1 CPU each starve the read tasks and the job never
    ends (issue 12), 0.5 each finishes. GPUs are requested for ``cuda`` and ``auto`` only when the
    cluster has some: an actor asking for a GPU that no node has would wait for ever.
    """
    cpus = max(float(cluster_cpus), 1.0)
    gpu = cluster_gpus >= 1 and providers in ("auto", "cuda")
    if workers is None:
        workers = int(cluster_gpus) if gpu else max(1, int(cpus * ACTOR_CPU_SHARE))
    workers = max(1, workers)
    cpu_request = max(0.01, math.floor(min(1.0, cpus * ACTOR_CPU_SHARE / workers) * 100) / 100)
    gpu_request = min(1.0, math.floor(cluster_gpus / workers * 100) / 100) if gpu else 0.0
    if threads is None:
        threads = 1 if gpu else max(1, int(cpus // workers))
    return Plan(workers, cpu_request, gpu_request, threads)


# ----------------------------------------------------------------------------- model

@dataclass(frozen=True)
class DriverModel:
    """The driver's view of the model: its file, contract and input type, read from the file
    alone (no session); the actors open their own Segmenters from the shipped bytes."""

    path: Path
    contract: ModelContract
    input_dtype: str


class _Infer:
    """Actor: one Segmenter, loaded once from the model bytes the driver shipped, run on batches."""

    def __init__(self, model: list, providers: str, threads: int, precision: str, settings: SegmentSettings):
        import ray
        from ..engine.segmenter import Segmenter
        logging.getLogger("unetlite").setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="unetlite-model-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(ray.get(model[0]))  # worker nodes need not see the driver's disk
            self.segmenter = Segmenter(path, providers=providers, threads=threads, spin=False, precision=precision)
        self.settings = settings
        self.ran = f"{self.segmenter.provider} ({self.segmenter.precision})"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = list(batch["error"])
        ok = [i for i, e in enumerate(errors) if not e]
        probs: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(errors)
        decoded = [_unpack(cell) for cell in batch[_DECODED]]
        if ok:
            try:
                for i, prob in zip(ok, infer_batch(self.segmenter, [decoded[i] for i in ok], self.settings.tile,
                                                   self.settings.tta)):
                    probs[i] = prob
            except Exception as exc:  # e.g. out of memory: these rows fail, the job goes on
                reason = one_line(exc)
                errors = [e or reason for e in errors]
        keep_rgb = output_format(self.settings.fmt).needs_pixels  # tile mode kept it for inference only
        for d in decoded:
            if d is not None:
                d.model_input = None
                d.rgb = d.rgb if keep_rgb else None
        batch[_DECODED] = np.array([_pack(d) for d in decoded], dtype=object)
        batch[_PROB] = _objects(probs)
        batch["error"] = np.array(errors, dtype=object)
        batch["provider"] = np.array([self.ran] * len(errors), dtype=object)
        return batch


# ----------------------------------------------------------------------------- row steps

def _objects(items: list) -> np.ndarray:
    """A 1-D object array (Ray stores arrays of different shapes as a ragged tensor column)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _pack(decoded: Decoded | None) -> bytes:
    """A row's Decoded, whole, as one cell (Ray's columns hold bytes, not arbitrary objects)."""
    return b"" if decoded is None else pickle.dumps(decoded, protocol=5)


def _unpack(cell) -> Decoded | None:
    return pickle.loads(cell) if len(cell) else None


def _columns(batch: dict[str, np.ndarray], decoded: list, errors: list[str]) -> dict[str, np.ndarray]:
    """Add each row's Decoded (b"" in failed rows) and the error column to a batch."""
    batch[_DECODED] = np.array([_pack(d) for d in decoded], dtype=object)
    batch["error"] = np.array(errors, dtype=object)
    return batch


def _load_rows(batch: dict[str, np.ndarray], load: Callable[[Any, str], Any], cells: Sequence,
               names: Sequence[str], inputs: ModelInputs, settings: SegmentSettings) -> dict[str, np.ndarray]:
    decoded, errors = [], []
    for cell, name in zip(cells, names):
        try:
            decoded.append(load(cell, name))
            errors.append("")
        except Exception as exc:  # every per-image problem becomes that row's reason
            decoded.append(None)
            errors.append(one_line(exc))
    return _columns(batch, decoded, errors)


def _read_files(batch: dict[str, np.ndarray], inputs: ModelInputs, settings: SegmentSettings) -> dict[str, np.ndarray]:
    """Task: local files through the pipeline's own loader (same decode, same reasons); URIs via pyarrow."""
    return _load_rows(batch, _source_loader(inputs, settings), batch["source"],
                      [display_path(s) for s in batch["source"]], inputs, settings)


def _source_loader(inputs: ModelInputs, settings: SegmentSettings) -> Callable[[bytes, str], Decoded]:
    def load_source(source: bytes, name: str) -> Decoded:
        text = os.fsdecode(source)
        if is_uri(text):
            return decode(inputs, settings, read_uri(text), text, _no_reserve)
        return load(inputs, settings, Path(text), _no_reserve)
    return load_source


def _no_reserve(nbytes: int) -> None:
    """Ray's back-pressure bounds the decoded images in flight, not segment's read-ahead budget."""


def as_rgb(value: Any, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A decoded-array cell -> HxWx3 uint8 RGB (grey and RGBA accepted), or ImageReadError."""
    arr = np.asarray(value)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))):
        raise ImageReadError(name, f"not an RGB image array (dtype {arr.dtype}, shape {arr.shape})")
    if arr.size == 0:
        raise ImageReadError(name, "empty image array")
    if max_pixels is not None and arr.shape[0] * arr.shape[1] > max_pixels:
        raise ImageReadError(name, f"{arr.shape[1]}x{arr.shape[0]} pixels is over the limit of {max_pixels}")
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.ascontiguousarray(np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[..., :3])


def _decode_column(batch: dict[str, np.ndarray], column: str, path_column: str | None, inputs: ModelInputs,
                   settings: SegmentSettings) -> dict[str, np.ndarray]:
    """Task: a column of encoded bytes or of decoded arrays -> model inputs; bad cells become error rows."""
    cells = batch.pop(column)
    names = ([str(p) for p in batch[path_column]] if path_column and path_column in batch
             else [f"row {i}" for i in range(len(cells))])
    return _load_rows(batch, _cell_loader(inputs, settings), cells, names, inputs, settings)


def _cell_loader(inputs: ModelInputs, settings: SegmentSettings) -> Callable[[Any, str], Decoded]:
    def load_cell(cell, name: str) -> Decoded:
        if isinstance(cell, (bytes, bytearray, memoryview)):
            return decode(inputs, settings, bytes(cell), name, _no_reserve)
        rgb = as_rgb(cell, name, settings.max_pixels)
        return as_decoded(inputs, rgb, rgb.shape[:2], settings)
    return load_cell


def _finish(batch: dict[str, np.ndarray], settings: SegmentSettings, threshold: float) -> dict[str, np.ndarray]:
    """Task: probability -> original size -> threshold -> the picture segment writes, encoded."""
    probs, decoded = batch.pop(_PROB), [_unpack(cell) for cell in batch.pop(_DECODED)]
    errors = list(batch["error"])
    outputs = []
    for i, (item, prob) in enumerate(zip(decoded, probs)):
        data = b""
        if not errors[i]:
            try:
                data = encode_output(item, prob, settings, threshold)
            except Exception as exc:
                errors[i] = one_line(exc)
        outputs.append(data)
    batch[_SIZE] = np.array([d.size if d is not None else (0, 0) for d in decoded], dtype=np.int64).reshape(-1, 2)
    batch["output"] = np.array(outputs, dtype=object)
    batch["error"] = np.array(errors, dtype=object)
    return batch


# ----------------------------------------------------------------------------- pipeline

def _alive_nodes() -> int:
    import ray
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def cluster_plan(workers: int | None, providers: str, threads: int | None) -> Plan:
    """plan_resources() for the cluster Ray is connected to."""
    import ray
    res = ray.cluster_resources()
    if providers == "cuda" and res.get("GPU", 0) < 1:
        log.warning("--providers cuda, but the Ray cluster has no GPU")
    return plan_resources(res.get("CPU", 1.0), res.get("GPU", 0.0), workers, providers, threads)


def _quiet_data_context() -> None:
    """No Ray progress bars or execution-plan banners: unetlite shows one bar of rows done."""
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _infer_and_finish(ds: "ray.data.Dataset", model_path: Path, plan: Plan, providers: str, precision: str,
                      settings: SegmentSettings, threshold: float) -> "ray.data.Dataset":
    """Prepared rows -> actor pool inference -> encoded outputs."""
    import ray
    import ray.data
    model_ref = ray.put(model_path.read_bytes())
    ds = ds.map_batches(_Infer, batch_size=settings.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=plan.workers),
                        fn_constructor_args=([model_ref], providers, plan.threads, precision, settings),
                        num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_worker or None)
    return ds.map_batches(_finish, batch_size=settings.batch_size, batch_format="numpy",
                          fn_args=(settings, threshold))


def driver_model(model: str | os.PathLike | None, int8: bool = False) -> DriverModel:
    """The model as the driver needs it, read from the file's metadata (no session): a bad --model
    fails before Ray starts, and tasks get its contract and input type."""
    from ..engine.segmenter import model_path, read_model_inputs
    path = model_path(model, int8)
    contract, input_dtype = read_model_inputs(path)
    return DriverModel(path, contract, input_dtype)


def segment_dataset(ds: "ray.data.Dataset", model: str | os.PathLike | None = None, fmt: str = "mask",
                    threshold: float | None = None, batch_size: int = 4, workers: int | None = None,
                    providers: str = "cpu", threads: int | None = None, column: str = "bytes",
                    path_column: str | None = "path", tile: bool = False, clean: bool = False,
                    tta: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                    precision: str = "fp32", edge: str = "soft") -> "ray.data.Dataset":
    """Segment a Ray Dataset of images; lazy, so it composes with the caller's own pipeline.

    ``edge``: "soft" (edge-aware alpha for cutout/overlay, as `unetlite segment`'s default) or "hard".

    ``column`` holds encoded image bytes (as ``ray.data.read_binary_files`` gives) or decoded
    uint8 arrays (HxW, HxWx3 RGB, HxWx4). The result keeps the other columns and adds ``output``
    (the file ``unetlite segment --format fmt`` would write, encoded; b"" for failed rows),
    ``error`` ("" or a one-line reason) and ``provider`` (what ran). Needs ``ray.init()`` first.
    """
    import_ray()
    output_format(fmt)  # ValueError naming the choices
    _quiet_data_context()
    probe = driver_model(model)
    settings = SegmentSettings(fmt, batch_size, tile, threshold, clean, tta, max_pixels, edge=edge)
    inputs = ModelInputs(probe.contract, probe.input_dtype)
    ds = ds.map_batches(_decode_column, batch_size=batch_size, batch_format="numpy",
                        fn_args=(column, path_column, inputs, settings))
    plan = cluster_plan(workers, providers, threads)
    thr = probe.contract.resolve_threshold(threshold)
    return _infer_and_finish(ds, probe.path, plan, providers, precision, settings, thr)


# ----------------------------------------------------------------------------- runtime

# A watchdog for a local runtime this process starts: Ray's own processes (GCS, raylet, the dashboard
# and runtime-env agents, workers) outlive a driver killed with SIGKILL. It remembers every
# descendant of the driver (pid and start time, from /proc) and, once the driver is gone, kills those
# still running. It runs in its own session (Ctrl-C to the terminal's group does not reach it).
_WATCHDOG = r"""
import os, signal, sys, time
driver, me = int(sys.argv[1]), os.getpid()
def table():
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            fields = data[data.rindex(b")") + 2:].split()
            procs[int(name)] = (int(fields[1]), int(fields[19]))
    return procs
procs = table()
if driver not in procs:
    sys.exit(0)
born, seen = procs[driver][1], {}
while True:
    procs = table()
    if driver in procs and procs[driver][1] == born:
        children = {}
        for pid, (ppid, start) in procs.items():
            children.setdefault(ppid, []).append(pid)
        stack = [driver]
        while stack:
            for child in children.get(stack.pop(), []):
                if child != me:
                    seen.setdefault(child, procs[child][1])
                    stack.append(child)
        time.sleep(0.3)
        continue
    for pid, start in seen.items():
        if pid in procs and procs[pid][1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    break
"""


def _start_watchdog():
    """The watchdog process for a local runtime (Linux, /proc); None elsewhere."""
    import subprocess
    if not os.path.isdir("/proc/self"):
        return None
    try:
        return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid())], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def _stop_watchdog(watchdog) -> None:
    if watchdog is not None:
        try:
            watchdog.kill()
            watchdog.wait(timeout=5)
        except Exception:  # noqa: BLE001 -- it may be gone already; nothing to report
            pass


class _KeepSignalHandlers:
    """ray.init installs its own SIGTERM handler (sys.exit(15): no summary, exit 15); while this
    process starts or joins a runtime, its own handler (Stopped -> exit 143 with the summary) stays."""

    def __enter__(self):
        try:
            from ray._private import utils
        except ImportError:
            self._utils = None
            return self
        self._utils, self._saved = utils, getattr(utils, "set_sigterm_handler", None)
        if self._saved is not None:
            utils.set_sigterm_handler = lambda handler: None
        return self

    def __exit__(self, *exc):
        if self._utils is not None and self._saved is not None:
            self._utils.set_sigterm_handler = self._saved
        return False


_watchdog = None


def connect(address: str | None) -> tuple[bool, str]:
    """Join the cluster at ``address`` ('auto', 'ray://head:10001') or start a local runtime
    (None). Returns (whether we started it, one line saying what runs). Ray's own logs stay in
    its log folder; a runtime the caller already initialised is used as it is. A local runtime gets
    a watchdog that ends it if this process is killed (SIGKILL leaves no handler to run)."""
    global _watchdog
    ray = import_ray()
    started = not ray.is_initialized()
    try:
        # a signal while Ray starts is acted on once it has started (interrupting ray.init half-way
        # left a core worker that crashed the interpreter at exit), then the runtime is shut down
        with _KeepSignalHandlers(), held_signals():
            if started and not address:
                _watchdog = _start_watchdog()   # first: a kill -9 during ray.init is covered too
                ray.init(address="local", include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            elif started:  # joining: the cluster's own settings (dashboard, resources) are not ours to pass
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except SystemExit as exc:  # a signal that still reached a handler of Ray's
        _shutdown(started)
        import signal as _signal
        from ..signals import Stopped
        if exc.code == _signal.SIGTERM:
            raise Stopped(_signal.SIGTERM) from None
        raise
    except KeyboardInterrupt:
        _shutdown(started)
        raise
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        _shutdown(started)
        where = f"join the Ray cluster at {address}" if address else "start a local Ray runtime"
        raise RayUnavailable(f"--ray: cannot {where} ({one_line(exc)})") from None
    res = ray.cluster_resources()
    nodes = _alive_nodes()
    kind = "local Ray runtime" if started and not address else f"Ray cluster at {address or ray.get_runtime_context().gcs_address}"
    gpus = f", {res.get('GPU', 0):g} GPUs" if res.get("GPU") else ""
    return started, f"{kind} ({nodes} node{'s' * (nodes != 1)}, {res.get('CPU', 0):g} CPUs{gpus})"


def _shutdown(started: bool) -> None:
    """Shut down a runtime this process started (also one half started), and its watchdog."""
    global _watchdog
    if not started:
        return
    import ray
    if ray.is_initialized():
        ray.shutdown()
        _stop_watchdog(_watchdog)
        _watchdog = None
    # else: a start cut short may have left processes; the watchdog ends them when this process exits


def _driver_node() -> dict[str, str] | None:
    """Label selector pinning the reading of local paths to this process's node when the cluster
    has several (other nodes cannot see this machine's disk). One node: no constraint."""
    import ray
    if _alive_nodes() <= 1:
        return None
    return {"ray.io/node-id": ray.get_runtime_context().get_node_id()}


def read_uri(uri: str) -> bytes:
    """An object's bytes through pyarrow's filesystems (s3://, gs://, hdfs://, file://)."""
    from pyarrow import fs
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(path) as fh:
            return fh.read()
    except FileNotFoundError:
        raise ImageReadError(uri, "file not found") from None
    except (OSError, ValueError) as exc:  # pyarrow reports storage errors as OSError
        raise ImageReadError(uri, f"cannot read ({first_line(exc)})") from None


def write_output(location: str | os.PathLike, data: bytes) -> None:
    """Local paths: segment's durable atomic write. URIs: one upload (an object store publishes an
    object only once complete); file:// URIs are local paths."""
    if not is_uri(location):
        write_atomic(location, data)
        return
    from pyarrow import fs
    filesystem, path = fs.FileSystem.from_uri(os.fsdecode(location))
    if isinstance(filesystem, fs.LocalFileSystem):
        write_atomic(path, data)
        return
    filesystem.create_dir(str(PurePosixPath(path).parent), recursive=True)
    with filesystem.open_output_stream(path) as fh:
        fh.write(data)


def output_exists(locations: Sequence[str | os.PathLike]) -> list[bool]:
    """Whether each output is there (resume for URI outputs, which have no manifest)."""
    from pyarrow import fs
    result = []
    for loc in locations:
        if not is_uri(loc):
            result.append(Path(loc).exists())
            continue
        filesystem, path = fs.FileSystem.from_uri(os.fsdecode(loc))
        result.append(filesystem.get_file_info(path).type != fs.FileType.NotFound)
    return result


def segment_jobs_on_ray(segmenter, jobs: Sequence[Job | UriJob], settings: SegmentSettings = SegmentSettings(),
                        on_written: Callable[[Job, tuple[int, int], int], None] | None = None,
                        progress: bool = True, *, providers: str = "auto", threads: int | None = None,
                        precision: str = "fp32", address: str | None = None,
                        workers: int | None = None, on_failed: OnFailed = log_failure,
                        note: Callable[[str], None] = log.info) -> tuple[Summary, str]:
    """``segment.segment_jobs`` on Ray: same jobs, settings, ``on_written`` and Summary, plus one line
    saying what ran (runtime, pool, provider) for the summary.

    ``segmenter`` is the driver's model (open it on the CPU): only its file, contract and input
    type are used here; inference runs in ``workers`` actors with ``providers``/``threads``.
    ``address``: None starts a local runtime (shut down at the end), 'auto' or 'ray://head:10001'
    joins a cluster; an already initialised runtime is used as it is. Results stream back to this
    process, which writes them, so a local OUT works with a remote cluster too.
    """
    from tqdm import tqdm
    ray = import_ray()
    summary = Summary()
    if not jobs:  # all done already: no need to start a runtime
        return summary, "Ray (not started: nothing to do)"
    started = time.perf_counter()
    try:
        with stop_on_signals():
            we_started, runtime = connect(address)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP while Ray starts: the summary, nothing done
        summary.interrupted = getattr(exc, "exit_code", 130)
        summary.seconds = time.perf_counter() - started
        return summary, "Ray (interrupted while starting)"
    try:
        # ray.init put in its own SIGTERM handler (sys.exit: no summary, no exit 143): for the job,
        # SIGTERM and SIGHUP end it like Ctrl-C; its handler is back before the runtime shuts down.
        with stop_on_signals():
            _quiet_data_context()
            plan = cluster_plan(workers, providers, threads)
            batches = math.ceil(len(jobs) / settings.batch_size)
            plan = replace(plan, workers=max(1, min(plan.workers, batches)))  # no idle actors for a few images
            note(f"{runtime}; {plan.line()}")
            ran: set[str] = set()
            settings = replace(settings, workers=None, budget_bytes=None)  # thread pools are Ray's here
            threshold = segmenter.contract.resolve_threshold(settings.threshold)
            inputs = ModelInputs(segmenter.contract, segmenter.input_dtype)
            items = [{"index": i, "source": os.fsencode(job.source)} for i, job in enumerate(jobs)]
            blocks = max(math.ceil(len(items) / ROWS_PER_BLOCK), min(len(items), 2 * plan.workers))
            ds = ray.data.from_items(items, override_num_blocks=blocks)
            local = any(not is_uri(job.source) for job in jobs)
            ds = ds.map_batches(_read_files, batch_size=settings.batch_size, batch_format="numpy",
                                fn_args=(inputs, settings), label_selector=_driver_node() if local else None)
            ds = _infer_and_finish(ds, segmenter.path, plan, providers, precision, settings, threshold)
            bar = tqdm(total=len(jobs), unit="img", disable=not progress, file=sys.stderr)
            try:
                _collect(ds, jobs, summary, on_written, ran, bar, on_failed)
            except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: what was written stays written
                summary.interrupted = getattr(exc, "exit_code", 130)
            bar.close()
            summary.seconds = time.perf_counter() - started
            return summary, f"{' / '.join(sorted(ran)) or 'no inference needed'} on {runtime}, {plan.line()}"
    finally:
        with held_signals(reraise=False):  # a second signal must not cut the shutdown short
            _shutdown(we_started)


def _collect(ds: "ray.data.Dataset", jobs: Sequence[Job | UriJob], summary: Summary,
             on_written: Callable[[Job, tuple[int, int], int], None] | None, ran: set[str], bar,
             on_failed: OnFailed = log_failure) -> None:
    """This process's part: stream the results, write each output, record it, count failures."""
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for index, data, error, size, what in zip(batch["index"], batch["output"], batch["error"],
                                                  batch[_SIZE], batch.get("provider", [""] * len(batch["index"]))):
            job = jobs[int(index)]
            if what:
                ran.add(str(what))
            if not error:
                try:
                    write_output(job.output, bytes(data))
                    if on_written is not None and isinstance(job, Job):
                        on_written(job, (int(size[0]), int(size[1])), len(data))
                    summary.done += 1
                except Exception as exc:
                    error = one_line(exc)
            if error:
                summary.failed.append((display_path(job.source), str(error)))
                on_failed(display_path(job.source), str(error))
            bar.update()


def pending(jobs: Sequence[UriJob], overwrite: bool = False) -> tuple[list[UriJob], int]:
    """(jobs to run, how many are done): resume for URI outputs, which have no manifest, trusts
    existence (object stores publish an object only once its upload completed)."""
    if overwrite:
        return list(jobs), 0
    todo = [job for job, there in zip(jobs, output_exists([j.output for j in jobs])) if not there]
    return todo, len(jobs) - len(todo)

"""What resume trusts: an append-only manifest in OUT, and the lock that keeps one run per OUT.

``OUT/.unetlite-manifest.jsonl`` gets one fsynced JSON line per output written: the
source (absolute path, size, mtime), the output (path below OUT, size, bytes) and the
configuration that made it (format, threshold, model sha256, clean, tile). An existing
output counts as done only when its latest line names the same source, unchanged, the
same configuration, and the file on disk has exactly the bytes recorded (never 0).
"""
from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Iterable

from ..errors import UnetliteError
from ..io.atomic import display_path
from .naming import FileId, Job, file_id

log = logging.getLogger(__name__)

MANIFEST_NAME = ".unetlite-manifest.jsonl"
LOCK_NAME = ".unetlite.lock"


class OutputBusy(UnetliteError):
    """Another run holds OUT's lock (one-line message; exit 2)."""


@dataclass(frozen=True)
class OutputConfig:
    """Everything that changes an output's pixels; a change redoes the output."""

    format: str
    threshold: float
    model_sha256: str
    clean: bool = False
    tile: bool = False
    tta: bool = False


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _source_key(path: Path) -> str:
    """The source as recorded: absolute, links in the folder part kept (as the user named it)."""
    return os.fsdecode(os.path.abspath(path))


def _source_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def make_record(job: Job, config: OutputConfig, size: tuple[int, int], nbytes: int) -> dict:
    """The manifest line for an output just written."""
    stamp = _source_stamp(job.source) or (None, None)
    return {"source": _source_key(job.source), "source_bytes": stamp[0], "source_mtime_ns": stamp[1],
            "output": job.rel, **asdict(config), "size": list(size), "bytes": nbytes}


def load_records(out_dir: Path) -> dict[str, dict]:
    """Latest manifest line per output (path below OUT). A torn last line (crash) is ignored."""
    path = out_dir / MANIFEST_NAME
    records: dict[str, dict] = {}
    try:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    record = json.loads(line)
                    records[record["output"]] = record
                except (ValueError, KeyError, TypeError):
                    log.warning("%s line %d: not a manifest record, ignored", display_path(path), number)
    except FileNotFoundError:
        pass
    return records


def recorded_outputs(out_dir: Path, records: dict[str, dict]) -> frozenset[FileId]:
    """Identities of the outputs the manifest lists that exist: never taken as inputs."""
    ids = (file_id(out_dir / rel) for rel in records)
    return frozenset(i for i in ids if i is not None)


class Verdict(enum.Enum):
    DONE = "done"
    NEW = "new"                      # no output yet
    CONFIG_CHANGED = "the configuration changed (format, threshold, model, --clean, --tile or --tta)"
    SOURCE_CHANGED = "the source file changed"
    OTHER_SOURCE = "the existing output was made from another source file"
    UNTRUSTED = "the existing output is empty, incomplete or not in the manifest"


def verdict(job: Job, config: OutputConfig, record: dict | None) -> Verdict:
    """Whether ``job``'s existing output can be kept (see module docstring)."""
    try:
        on_disk = job.output.stat().st_size
    except OSError:
        return Verdict.NEW
    if record is None or on_disk == 0 or record.get("bytes") != on_disk:
        return Verdict.UNTRUSTED
    if record.get("source") != _source_key(job.source):
        return Verdict.OTHER_SOURCE
    if [record.get("source_bytes"), record.get("source_mtime_ns")] != list(_source_stamp(job.source) or ()):
        return Verdict.SOURCE_CHANGED
    if any(record.get(k) != v for k, v in asdict(config).items()):
        return Verdict.CONFIG_CHANGED
    return Verdict.DONE


@dataclass
class Plan:
    """Jobs to run, jobs already done, and why existing outputs are being redone."""

    todo: list[Job] = field(default_factory=list)
    done: list[Job] = field(default_factory=list)
    redone: dict[Verdict, int] = field(default_factory=dict)


def plan_resume(jobs: Iterable[Job], config: OutputConfig, records: dict[str, dict],
                overwrite: bool = False) -> Plan:
    """Split jobs into done (kept) and todo; ``overwrite`` redoes everything."""
    plan = Plan()
    for job in jobs:
        v = Verdict.NEW if overwrite else verdict(job, config, records.get(job.rel))
        if v is Verdict.DONE:
            plan.done.append(job)
            continue
        plan.todo.append(job)
        if v is not Verdict.NEW:
            plan.redone[v] = plan.redone.get(v, 0) + 1
    return plan


class Manifest:
    """Appends records to OUT's manifest, one fsynced line each, from any thread."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / MANIFEST_NAME
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = None

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")
        with self._lock:
            if self._fh is None:
                self._fh = open(self.path, "ab")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class RunLock:
    """An exclusive ``flock`` on OUT/.unetlite.lock for the life of a run.

    Raises OutputBusy when another run (any process) holds it; OSError when OUT cannot
    be created or written. The lock file stays (removing it would race another run).
    """

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl  # POSIX only; kept out of module import
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusy(f"{display_path(self.path.parent)}: another unetlite run is writing here "
                             f"(locked: {display_path(self.path)})") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

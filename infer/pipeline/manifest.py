"""What resume trusts: an append-only manifest in OUT, and the lock that keeps one run per OUT.

``OUT/.unetlite-manifest.jsonl`` gets one fsynced JSON line per output written: the
source (absolute path, size, mtime), the output (path below OUT, size, bytes) and the
configuration that made it (format, threshold, model sha256, clean, tile). An existing
output counts as done only when its latest line names the same source, unchanged, the
same configuration, and the file on disk has exactly the bytes recorded (never 0).

Run files (the manifest and ``.unetlite.lock``) are opened without following links
(``O_NOFOLLOW``), without blocking (``O_NONBLOCK``: a FIFO never hangs a run) and only when they
are regular files with one link: a manifest or lock that is a symlink, a hard link to another
file, a folder, a FIFO or a device stops the run with one line (exit 2) before anything is
written, so a run can never append to, or create, a file outside OUT. Reading is bounded
(:data:`MAX_MANIFEST_BYTES`); lines that are not records (``{"output": null}``, junk) are
ignored with one warning; a torn last line (a crash, a full disk, ``ulimit -f``) is ignored, and
the next append starts on a new line instead of continuing it.
"""
from __future__ import annotations

import enum
import errno
import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import UnetliteError
from ..io.atomic import display_path
from .naming import FileId, Job, file_id

log = logging.getLogger(__name__)

MANIFEST_NAME = ".unetlite-manifest.jsonl"
LOCK_NAME = ".unetlite.lock"
MAX_MANIFEST_BYTES = 1 << 30   # ~3 million records; a bigger manifest is not one this tool wrote
RUN_FILE_NAMES = (MANIFEST_NAME, LOCK_NAME)


class OutputBusy(UnetliteError):
    """Another run holds OUT's lock (one-line message; exit 2)."""


class UnsafeRunFile(UnetliteError):
    """A run file (manifest, lock) that is a link, a folder, a FIFO or a device (one line; exit 2)."""


class ManifestWriteError(OSError):
    """An output was written but its manifest line was not (the output is redone next run)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def open_run_file(path: Path, flags: int, what: str) -> int | None:
    """A descriptor for run file ``path``, never through a link and never blocking on a FIFO.

    Returns None when ``path`` does not exist and ``flags`` has no O_CREAT. Raises UnsafeRunFile
    when it is a symlink, not a regular file, or has more than one link (another name for some
    other file); OSError for the rest (permissions, a missing OUT).
    """
    import stat
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except FileNotFoundError:
        if flags & os.O_CREAT:
            raise
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise UnsafeRunFile(f"{display_path(path)}: the {what} is a symbolic link; refusing to follow it "
                                f"(remove it, or choose another -o folder)") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise UnsafeRunFile(f"{display_path(path)}: the {what} is not a regular file (remove it, or choose "
                                f"another -o folder)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeRunFile(f"{display_path(path)}: the {what} is not a regular file (remove it, or choose "
                                f"another -o folder)")
        if st.st_nlink > 1:
            raise UnsafeRunFile(f"{display_path(path)}: the {what} has {st.st_nlink} hard links (it is also another "
                                f"file); refusing to write it (remove it, or choose another -o folder)")
        if _NONBLOCK:  # a regular file: plain blocking I/O from here
            import fcntl
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class OutputConfig:
    """Everything that changes an output's pixels; a change redoes the output."""

    format: str
    threshold: float
    model_sha256: str
    clean: bool = False
    tile: bool = False
    tta: bool = False
    # --background ("blur:3", "R,G,B", "image:sha256:HEX") and --edge; None where they do not change
    # the pixels (backgrounds.photo_config), so records made before they existed still match.
    background: str | None = None
    edge: str | None = None


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


def _valid(record) -> bool:
    """A manifest record: a JSON object whose output is a relative path below OUT."""
    if not isinstance(record, dict):
        return False
    output = record.get("output")
    return (isinstance(output, str) and bool(output) and "\0" not in output and not os.path.isabs(output)
            and ".." not in output.split("/"))


def load_records(out_dir: Path, quiet: bool = False) -> dict[str, dict]:
    """Latest manifest line per output (path below OUT). A torn last line (crash) is ignored;
    other lines that are not records are ignored with one warning. UnsafeRunFile (exit 2) for a
    manifest that is a link, a folder, a FIFO or a device, or over MAX_MANIFEST_BYTES."""
    path = out_dir / MANIFEST_NAME
    records: dict[str, dict] = {}
    try:
        fd = open_run_file(path, os.O_RDONLY, "manifest")
    except NotADirectoryError:
        return records
    if fd is None:
        return records
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fd).st_size > MAX_MANIFEST_BYTES:
            raise UnsafeRunFile(f"{display_path(path)}: the manifest is over {MAX_MANIFEST_BYTES >> 30} GB, "
                                f"more than this tool writes; move it away to start afresh")
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    lines = data.split(b"\n")
    if lines and lines[-1]:
        lines.pop()   # a torn last line (no newline): the write that a crash or full disk cut short
    bad, first_bad = 0, 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not _valid(record):
            bad += 1
            first_bad = first_bad or number
            continue
        records[record["output"]] = record
    if bad and not quiet:
        log.warning("%s: %d line%s (first: line %d) not a manifest record, ignored", display_path(path), bad,
                    "s" * (bad != 1), first_bad)
    return records


def recorded_outputs(out_dir: Path, records: dict[str, dict]) -> frozenset[FileId]:
    """Identities of the outputs the manifest lists that exist: never taken as inputs."""
    ids = (file_id(out_dir / rel) for rel in records if _valid(records[rel]))
    return frozenset(i for i in ids if i is not None)


class Verdict(enum.Enum):
    DONE = "done"
    NEW = "new"                      # no output yet
    CONFIG_CHANGED = "the configuration changed (format, threshold, model, --clean, --tile, --tta, --background or --edge)"
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
    """Appends records to OUT's manifest, one fsynced line each, from any thread.

    Unbuffered writes on a descriptor opened by :func:`open_run_file`: a failed append raises
    ManifestWriteError for that one record and never again for the bytes already refused (close
    never raises); a line is never appended to a torn one (a newline goes first).
    """

    def __init__(self, out_dir: Path):
        self.path = out_dir / MANIFEST_NAME
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._torn = False

    def open(self) -> None:
        """Open (create) the manifest now: an unsafe one stops the run before any output is written."""
        with self._lock:
            self._open()

    def _open(self) -> None:
        if self._fd is not None:
            return
        fd = open_run_file(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, "manifest")
        size = os.fstat(fd).st_size
        if size:
            self._torn = os.pread(fd, 1, size - 1) != b"\n"
        self._fd = fd

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")
        with self._lock:
            try:
                self._open()
                data = (b"\n" if self._torn else b"") + line
                self._torn = True      # until the whole line is down
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fsync(self._fd)
                self._torn = False
            except OSError as exc:
                raise ManifestWriteError(exc.errno or errno.EIO, f"written, but not recorded in "
                                         f"{display_path(self.path)} ({exc.strerror or exc}); it is redone "
                                         f"next run") from None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
                self._fd = None


class RunLock:
    """An exclusive ``flock`` on OUT/.unetlite.lock for the life of a run.

    Raises OutputBusy when another run (any process) holds it; UnsafeRunFile when the lock file is
    a link, a folder, a FIFO or a device (never created through a link); OSError when OUT cannot
    be created or written. The lock file stays (removing it would race another run).
    """

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl  # POSIX only; kept out of module import
        from ..io.atomic import make_dirs
        make_dirs(self.path.parent)
        fd = open_run_file(self.path, os.O_RDWR | os.O_CREAT, "lock file")
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

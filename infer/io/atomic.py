"""Durable atomic writes and temp-file hygiene.

A temp file in the target folder (named ``.NAME.unetlite-PID-XXXXXXXX.tmp`` so it can never
be a user's file), flushed and fsynced, renamed over the target, then the folder fsynced:
after a crash the file is either absent or complete. ``remove_stale_temps`` deletes what
killed runs left. ``display_path`` lives here (no OpenCV) because write errors name files.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)


def display_path(path: str | bytes | os.PathLike) -> str:
    """A printable, one-line, CSV-safe form of any path.

    Bytes that are not valid UTF-8 become ``\\xNN`` and control characters (newline, tab...)
    are escaped, so messages, logs and failures.csv never crash or split a line.
    """
    raw = os.fsencode(path)
    text = raw.decode("utf-8", "backslashreplace")
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


class WriteError(OSError):
    """A write that failed (full disk, read-only folder, no permission); str() is one line
    naming the file. ``errno`` is kept from the original error."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


_TEMP_MARK = ".unetlite-"
# .NAME.unetlite-PID-XXXXXXXX.tmp[.EXT]; XXXXXXXX is tempfile's random part
_TEMP_NAME = re.compile(r"^\..*\.unetlite-(\d+)-[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]{1,10})?$", re.S)
STALE_TEMP_SECONDS = 24 * 3600  # older than this, a temp is stale even if its PID is alive (reused)


def _write_error(exc: OSError, action: str, path: str | os.PathLike) -> WriteError:
    reason = exc.strerror or str(exc)
    return WriteError(exc.errno or errno.EIO, f"cannot {action} {display_path(path)}: {reason}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable. Not possible on Windows or on some network file systems."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a folder we may write but not read: the rename stands, unsynced
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def make_dirs(folder: str | os.PathLike) -> None:
    """``mkdir -p`` without recursion (Path.mkdir(parents=True) and os.makedirs recurse once per
    level: a tree 1,100 folders deep raised RecursionError for every file)."""
    folder = Path(folder)
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not path.is_dir():
                raise


def make_temp(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """Create an empty temp file beside ``path`` for a writer that needs a file name
    (e.g. cv2.VideoWriter); finish with ``commit_temp``. ``keep_suffix`` ends the name with
    path's extension, for writers that choose the container by it."""
    path = Path(path)
    try:
        make_dirs(path.parent)
        # keep the temp's name under the usual 255-byte limit whatever the target's length
        stem = os.fsdecode(os.fsencode(path.name)[:150])
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}{_TEMP_MARK}{os.getpid()}-",
                                   suffix=".tmp" + (path.suffix if keep_suffix else ""), dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_error(exc, "write", path) from None
    return Path(tmp)


@contextmanager
def _temp_guard(tmp: Path, path: Path) -> Iterator[None]:
    """Remove the temp on any failure (Ctrl-C included); OSErrors become one-line WriteErrors."""
    try:
        yield
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(exc, "write", path) from None
        raise


def _rename_durably(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def commit_temp(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Finish a ``make_temp`` file: fsync it, rename it over ``path``, fsync the folder.

    The temp is removed on any failure; failures raise WriteError.
    """
    tmp, path = Path(tmp), Path(path)
    with _temp_guard(tmp, path):
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _rename_durably(tmp, path)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes so the file is either absent or complete, also after a crash or power loss.

    Temp file in the same folder, flushed and fsynced, renamed over ``path``, folder fsynced;
    the temp is removed on any failure (including Ctrl-C). Failures (ENOSPC, EROFS, EACCES...)
    raise WriteError, an OSError whose str() is "cannot write PATH: reason".
    """
    path = Path(path)
    tmp = make_temp(path)
    with _temp_guard(tmp, path):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _rename_durably(tmp, path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): keep its file
    return True


def is_temp_name(name: str) -> bool:
    """True for names made by ``make_temp``/``write_atomic`` (never a user's file)."""
    return bool(_TEMP_NAME.match(name))


def _walk_files(folder: str | os.PathLike, recursive: bool) -> Iterator[tuple[str, list[str]]]:
    """(folder, file names) for ``folder`` and, when ``recursive``, every real folder below it, without
    recursion (os.walk recurses once per level) and without following folder links."""
    stack = [os.fspath(folder)]
    while stack:
        root = stack.pop()
        try:
            entries = list(os.scandir(root))
        except OSError as exc:
            log.warning("%s", exc)
            continue
        files = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(entry.path)
                else:
                    files.append(entry.name)
            except OSError:
                continue
        yield root, files


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete temp files left by killed runs in ``folder``; returns how many were removed.

    Only names made by this module count; a temp whose writer (PID in the name) is still
    running on this machine is kept unless older than a day, so two runs on one folder do
    not delete each other's work. Symlinked folders are not followed.
    """
    removed, now = 0, time.time()
    for root, files in _walk_files(folder, recursive):
        for name in files:
            match = _TEMP_NAME.match(name)
            if not match:
                continue
            path = os.path.join(root, name)
            try:
                old = now - os.lstat(path).st_mtime > STALE_TEMP_SECONDS
                if _pid_alive(int(match.group(1))) and not old:
                    continue
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove stale temp file %s: %s", display_path(path), exc.strerror or exc)
    return removed

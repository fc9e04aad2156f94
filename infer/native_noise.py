"""Native libraries write to file descriptor 2 directly, past Python's logging: libpng prints
``libpng error: IDAT: CRC error`` before OpenCV returns the failure we report, and Ray's C++ core
prints ``core_worker.cc`` lines when its actors stop. While a command runs, fd 2 goes through a pipe
and a thread passes everything on except lines matching that known noise, so a user sees one line per
problem: ours.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from typing import Iterator

NOISE = re.compile(rb"^libpng (error|warning): |core_worker\.cc:\d+")
_HOLD = (b"libpng", b"[")   # a fragment that may become a noise line: wait for the rest of it


def _pump(source: int, target: int, pattern: re.Pattern) -> None:
    """Copy ``source`` to ``target`` piece by piece, dropping whole lines that match ``pattern``.

    Pieces end at a newline or a carriage return (progress bars redraw with ``\\r``); an unfinished
    piece is passed on at once unless it could still turn into a noise line."""
    pending = b""
    while True:
        try:
            chunk = os.read(source, 65536)
        except OSError:
            break
        if not chunk:
            break
        pending += chunk
        pieces = re.split(rb"(?<=[\r\n])", pending)
        pending = pieces.pop()
        out = b"".join(p for p in pieces if not pattern.search(p))
        if pending and not pending.startswith(_HOLD):
            out, pending = out + pending, b""
        if out:
            _write_all(target, out)
    if pending and not pattern.search(pending):
        _write_all(target, pending)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # the reader of our stderr went away: nothing more to do
        pass


@contextlib.contextmanager
def quiet_native_noise(pattern: re.Pattern = NOISE) -> Iterator[None]:
    """Filter fd 2 for the duration of the block (a no-op when fd 2 cannot be duplicated)."""
    try:
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_pump, args=(read_end, original, pattern), name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        os.dup2(original, 2)   # the pipe ends once no child process still holds its write end
        thread.join(timeout=2.0)
        # ``original`` stays open while a child (a Ray worker) may still write through the pipe.
        if not thread.is_alive():
            os.close(original)
            os.close(read_end)

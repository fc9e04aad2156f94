"""One-line messages from exceptions: what users read instead of tracebacks."""
from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a library's error message (they can run to screens), at most ``limit`` characters."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def one_line(exc: BaseException) -> str:
    """A one-line reason for any per-file exception (never a traceback)."""
    from .imageio import ImageReadError
    if isinstance(exc, ImageReadError):
        return exc.reason
    if isinstance(exc, MemoryError):
        return "not enough memory for this image"
    if isinstance(exc, OSError):  # imageio's WriteError: "cannot write PATH: reason"
        return exc.strerror or str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else 'no details'}"

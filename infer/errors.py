"""The bottom layer: one error base class and one-line messages.

Every error a user can cause derives from :class:`UnetliteError`, which carries the exit code,
so ``unetlite``'s ``main()`` prints one line ``unetlite CMD: message`` and returns it.
"""
from __future__ import annotations


class UnetliteError(Exception):
    """An error users read as one line; ``exit_code`` is what the command returns (2: bad input)."""

    exit_code: int = 2


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of a library's error message (they can run to screens), at most ``limit`` characters."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def library_reason(exc: BaseException, limit: int = 200) -> str:
    """The first line of a native library's report that says something: OpenVINO opens with
    ``Exception from src/inference/src/cpp/core.cpp:84:`` lines that only locate its own source."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception from src/")]
    return ((useful or lines or [type(exc).__name__])[0])[:limit]


def one_line(exc: BaseException) -> str:
    """A one-line reason for any per-file exception (never a traceback).

    Errors that name their file and carry a separate ``reason`` (ImageReadError) give the reason.
    """
    reason = getattr(exc, "reason", None)
    if isinstance(exc, UnetliteError) and isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, MemoryError):
        return "not enough memory for this image"
    if isinstance(exc, OSError):  # io.atomic's WriteError: "cannot write PATH: reason"
        return exc.strerror or str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else 'no details'}"

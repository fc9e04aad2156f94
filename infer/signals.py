"""Stop signals: SIGTERM and SIGHUP end a run the way Ctrl-C does.

Every long-running command (segment, video, segment --ray) saves what it finished, prints its
summary and exits 128 + the signal number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP). The signal
is turned into an exception in the main thread, so the same ``except KeyboardInterrupt``
paths handle all three.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread and handled exactly like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_number(exc: BaseException) -> int:
    """The signal behind an interruption (a plain KeyboardInterrupt is Ctrl-C, SIGINT)."""
    return getattr(exc, "signum", int(signal.SIGINT))


def exit_code(exc: BaseException) -> int:
    """128 + the signal behind an interruption: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP."""
    return 128 + signal_number(exc)


def _raise_stop(signum: int, frame) -> None:
    raise KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """For the block's duration SIGTERM and SIGHUP raise ``Stopped`` (Ctrl-C already raises
    KeyboardInterrupt). A signal that is ignored (``nohup``) stays ignored; outside the main
    thread nothing changes (only it may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT and signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _raise_stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def held_signals(reraise: bool = True) -> Iterator[list[int]]:
    """Hold stop signals until the block ends, so a step (a frame written and counted) happens
    whole or not at all; then raise for the first one caught (``reraise``) or just report them."""
    caught: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is signal.default_int_handler or handler is _raise_stop:  # not ignored or customised
                previous[signum] = signal.signal(signum, lambda number, frame: caught.append(number))
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught and reraise:
        _raise_stop(caught[0], None)

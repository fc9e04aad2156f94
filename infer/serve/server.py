"""The server runner behind `unetlite serve`: bind the socket, run uvicorn with a graceful SIGTERM
(new requests get 503 while the running ones finish), return the exit code."""
from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import UnetliteError
from ..extras import require_extra

log = logging.getLogger("unetlite.serve")


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so an address in use is one clear line, not a uvicorn log,
    and listening before the startup line says so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # from here on, connections wait in the backlog until uvicorn accepts them
    except OSError:
        sock.close()
        raise
    return sock


def _server_class(say: Callable[[str], None]):
    """uvicorn.Server whose first SIGINT/SIGTERM drains (503 to new requests) instead of closing at once."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def __init__(self, config, state, grace: float):
            super().__init__(config)
            self.state, self.grace = state, grace
            self.stop_signal: int | None = None
            self.deadline = 0.0

        def handle_exit(self, sig: int, frame) -> None:
            if self.stop_signal is None:
                self.stop_signal, self.deadline = sig, time.monotonic() + self.grace
                self.state.draining = True
                say(f"{signal.Signals(sig).name}: finishing {self.state.inflight} running request(s), "
                    f"refusing new ones")
            else:  # a second signal: stop now
                self.should_exit = self.force_exit = True

        async def on_tick(self, counter: int) -> bool:
            if await super().on_tick(counter):
                return True
            return self.state.draining and (self.state.inflight == 0 or time.monotonic() > self.deadline)

    return DrainingServer


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8000
    grace: float = 30.0         # seconds running requests may take to finish after SIGTERM


def bind(listen: Listen) -> socket.socket:
    """The listening socket, or UnetliteError (exit 2) naming the address."""
    try:
        return _bind(listen.host, listen.port)
    except OSError as exc:
        raise UnetliteError(f"cannot listen on {listen.host}:{listen.port} ({exc.strerror or exc})") from None


def serve(sock: socket.socket, segmenter, config, listen: Listen, say: Callable[[str], None]) -> int:
    """Serve until stopped; ``say`` gets the start, drain and stop lines. Returns 0, or 128 + signal."""
    import uvicorn

    from .app import ServerState, create_app
    from .protocol import json_h11_protocol

    state = ServerState()
    logging.getLogger("unetlite.serve").setLevel(logging.INFO)  # the request log is the server's output
    uv_config = uvicorn.Config(create_app(segmenter, config, state), log_config=None, access_log=False,
                               server_header=False, http=json_h11_protocol(),  # its 400s in JSON too
                               timeout_graceful_shutdown=1.0)  # the drain (on_tick) did the waiting
    server = _server_class(say)(uv_config, state, listen.grace)
    host, port = sock.getsockname()[:2]
    loopback = host in ("127.0.0.1", "::1") or host.startswith("127.")
    say(f"{segmenter.describe()}; listening on "
        f"http://{'[' + host + ']' if ':' in host else host}:{port} (page: /, docs: /docs, metrics: /metrics, "
        f"Open Inference Protocol: /v2; "
        f"{'token required on /v1, /v2/models, /metrics' if config.token else 'no token'}; max "
        f"{config.max_concurrency} running + {config.max_queue} queued, {config.max_bytes} bytes, "
        f"{config.max_pixels} pixels, {config.budget_bytes} bytes of decoded images)")
    if not loopback and not config.token:
        say("warning: listening beyond this machine without a token (set UNETLITE_TOKEN)")
    server.run(sockets=[sock])
    say(f"stopped after {state.served} requests")
    return 0 if server.stop_signal is None else 128 + int(server.stop_signal)  # 130 Ctrl-C, 143 SIGTERM


def require_serve_extra() -> None:
    require_extra("serve", "serve")

"""`unetlite serve`: the model as an HTTP service (FastAPI + uvicorn, extra ``unetlite[serve]``).

One Segmenter (one onnxruntime session) serves every request; the app itself is in
``serve_app``. This module parses the command line, binds the socket and runs uvicorn with
a graceful SIGTERM: new requests get 503 while the running ones finish, then it exits 143.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time

from .cliargs import (add_engine_arguments, add_limit_argument, non_negative_int, open_segmenter, positive_count,
                      positive_int, whole_number)

log = logging.getLogger("unetlite.serve")

SERVE_EXTRA_HINT = "pip install 'unetlite[serve]'"
byte_count = positive_count("byte count", "20000000 or 20M")                   # --max-bytes
port_number = whole_number(0, 65535, "a port number 0-65535 (0: any free port)")  # --port


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds >= 0")
    return value


# The server's limits and timeouts: (flag, type, default, metavar, help).
_LIMITS = (
    ("--max-concurrency", positive_int, 4, "N", "requests decoded/inferred/encoded at once (default: 4)"),
    ("--max-queue", non_negative_int, 16, "N",
     "further requests admitted to wait for a slot; beyond that 503 at once (default: 16)"),
    ("--queue-wait", seconds, 10.0, "S", "seconds a request may wait for a slot before 503 (default: 10)"),
    ("--max-bytes", byte_count, 20_000_000, "N", "largest request body, e.g. 20M (default: 20M); larger gets 413"),
    ("--batch-size", positive_int, 4, "N", "most concurrent requests run as one inference batch (default: 4)"),
    ("--read-timeout", seconds, 30.0, "S", "seconds to receive a request body before 408 (default: 30)"),
    ("--grace", seconds, 30.0, "S", "on SIGTERM, seconds to let running requests finish (default: 30)"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the model over HTTP (needs unetlite[serve])",
                       description="Serve the model over HTTP: POST /v1/segment, GET /v1/model, GET /healthz, "
                                   "OpenAPI docs at /docs. Binds to loopback unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port (default: 8000; 0: any free port)")
    p.add_argument("--token", default=os.environ.get("UNETLITE_TOKEN") or None,
                   help="require 'Authorization: Bearer TOKEN' on /v1/* (default: $UNETLITE_TOKEN; "
                        "prefer the variable: arguments are visible to other users in ps)")
    for flag, kind, default, metavar, text in _LIMITS:
        p.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
    add_limit_argument(p)
    add_engine_arguments(p)
    p.set_defaults(run=run)


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


def _server_class():
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
                print(f"unetlite serve: {signal.Signals(sig).name}: finishing {self.state.inflight} running "
                      f"request(s), refusing new ones", file=sys.stderr, flush=True)
            else:  # a second signal: stop now
                self.should_exit = self.force_exit = True

        async def on_tick(self, counter: int) -> bool:
            if await super().on_tick(counter):
                return True
            return self.state.draining and (self.state.inflight == 0 or time.monotonic() > self.deadline)

    return DrainingServer


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart)
        import uvicorn
    except ImportError as exc:
        print(f"unetlite serve: needs FastAPI, uvicorn and python-multipart ({exc.name or exc} is not installed). "
              f"Install them with: {SERVE_EXTRA_HINT}", file=sys.stderr)
        return 2
    from .serve_app import ServeConfig, ServerState, create_app

    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(f"unetlite serve: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    segmenter = open_segmenter(args, "serve")
    if segmenter is None:
        sock.close()
        return 2
    config = ServeConfig(threshold=segmenter.contract.resolve_threshold(args.threshold),
                         max_bytes=args.max_bytes, max_pixels=args.max_pixels, max_concurrency=args.max_concurrency,
                         max_queue=args.max_queue, queue_wait=args.queue_wait, read_timeout=args.read_timeout,
                         batch_size=args.batch_size, token=args.token)
    state = ServerState()
    logging.getLogger("unetlite.serve").setLevel(logging.INFO)  # the request log is the server's output
    uv_config = uvicorn.Config(create_app(segmenter, config, state), log_config=None, access_log=False,
                               server_header=False,
                               timeout_graceful_shutdown=1.0)  # the drain (on_tick) did the waiting
    server = _server_class()(uv_config, state, args.grace)
    host, port = sock.getsockname()[:2]
    loopback = host in ("127.0.0.1", "::1") or host.startswith("127.")
    print(f"unetlite serve: {segmenter.describe()}; listening on "
          f"http://{'[' + host + ']' if ':' in host else host}:{port} (docs: /docs; "
          f"{'token required on /v1/*' if config.token else 'no token'}; max {config.max_concurrency} running + "
          f"{config.max_queue} queued, {config.max_bytes} bytes, {config.max_pixels} pixels)",
          file=sys.stderr, flush=True)
    if not loopback and not config.token:
        print("unetlite serve: warning: listening beyond this machine without a token (set UNETLITE_TOKEN)",
              file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    print(f"unetlite serve: stopped after {state.served} requests", file=sys.stderr, flush=True)
    return 0 if server.stop_signal is None else 128 + int(server.stop_signal)  # 130 Ctrl-C, 143 SIGTERM

"""`unetlite serve`: the model as an HTTP service (FastAPI + uvicorn, the [serve] extra)."""
from __future__ import annotations

import argparse
import os

from ..pipeline.readahead import DEFAULT_BUDGET_BYTES
from .args import (add_engine_arguments, add_limit_argument, engine_options, non_negative_int, positive_count,
                   positive_int, say_error, seconds, whole_number)

byte_count = positive_count("byte count", "20000000 or 20M")                   # --max-bytes
port_number = whole_number(0, 65535, "a port number 0-65535 (0: any free port)")  # --port


def memory_size(text: str) -> int:
    """--memory-budget: bytes, with an optional K, M or G (powers of 1000)."""
    raw = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(raw[-1:], 1)
    try:
        value = int(float(raw[:-1] if scale > 1 else raw) * scale)
    except (ValueError, OverflowError):
        value = 0
    if not 1_000_000 <= value <= 1 << 50:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a memory size of at least 1M, such as 805M or 2G")
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
    ("--memory-budget", memory_size, DEFAULT_BUDGET_BYTES, "BYTES",
     "decoded images and output work in flight at once, e.g. 805M or 2G (default: 805M, segment's read-ahead "
     "budget); a request that alone needs more gets 422, one that must wait longer than --queue-wait 503"),
)




def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the model over HTTP (needs the [serve] extra)",
                       description="Serve the model over HTTP: a page at /, POST /v1/segment, GET /v1/model, "
                                   "GET /healthz, the Open Inference Protocol under /v2, Prometheus /metrics, "
                                   "API docs at /docs. Binds to loopback unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port (default: 8000; 0: any free port)")
    p.add_argument("--token", default=os.environ.get("UNETLITE_TOKEN") or None,
                   help="require 'Authorization: Bearer TOKEN' on /v1/*, /v2/models/* and /metrics (default: "
                        "$UNETLITE_TOKEN; "
                        "prefer the variable: arguments are visible to other users in ps)")
    for flag, kind, default, metavar, text in _LIMITS:
        p.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
    add_limit_argument(p)
    add_engine_arguments(p)
    p.set_defaults(run=run)



def run(args: argparse.Namespace) -> int:
    from ..engine.options import open_segmenter
    from ..serve.server import Listen, bind, require_serve_extra, serve

    require_serve_extra()
    from ..serve.app import ServeConfig

    listen = Listen(args.host, args.port, args.grace)
    sock = bind(listen)
    try:
        segmenter = open_segmenter(engine_options(args))
    except BaseException:
        sock.close()
        raise
    config = ServeConfig(threshold=segmenter.contract.resolve_threshold(args.threshold),
                         max_bytes=args.max_bytes, max_pixels=args.max_pixels, max_concurrency=args.max_concurrency,
                         max_queue=args.max_queue, queue_wait=args.queue_wait, read_timeout=args.read_timeout,
                         batch_size=args.batch_size, token=args.token, budget_bytes=args.memory_budget)
    return serve(sock, segmenter, config, listen, lambda line: say_error("serve", line))

"""The ``unetlite`` command: one entry point, one thin module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``run(args) -> int``: arguments in, one library call, result out. Modules are imported here only
for their argparse set-up; heavy imports (OpenCV, onnxruntime, TensorFlow) happen inside ``run``.
Errors derive from ``UnetliteError``: ``main()`` prints one line ``unetlite CMD: message`` and
returns its exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ..errors import UnetliteError
from .args import OneLineUsageParser, say_error

SUBCOMMAND_MODULES = (
    "unetlite.infer.cli.segment",
    "unetlite.infer.cli.video",
    "unetlite.infer.cli.eval",
    "unetlite.infer.cli.info",
    "unetlite.infer.cli.bench",
    "unetlite.infer.cli.serve",
    "unetlite.train.cli",
    "unetlite.train.soft_labels_cli",
    "unetlite.export.cli",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("unetlite")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``| head``): stop quietly, as 'cat' does (128 + SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    return 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unetlite", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"unetlite {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more diagnostics (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineUsageParser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``unetlite``; returns the exit code (0 ok, 1 some inputs failed, 2 usage error, 128 + signal)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    from ..native_noise import quiet_native_noise
    with quiet_native_noise():  # libpng's and Ray's C++ lines: one line per problem, ours
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here for buffered output
        return code
    except UnetliteError as exc:
        say_error(args.command, str(exc))
        return exc.exit_code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP as signals.Stopped before a run's own handling
        print("interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)

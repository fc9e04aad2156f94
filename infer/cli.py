"""The ``unetlite`` command: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and
sets ``run(args) -> int``. Modules are imported here only for their argparse set-up;
heavy imports (TensorFlow, onnxruntime) happen inside ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

SUBCOMMAND_MODULES = (
    "unetlite.infer.segment",
    "unetlite.infer.video",
    "unetlite.infer.evaluate",
    "unetlite.infer.info",
    "unetlite.infer.bench",
    "unetlite.infer.serve",
    "unetlite.train.cli",
    "unetlite.export.cli",
)

TRAIN_EXTRA_HINT = "pip install 'unetlite[train]'"


class MissingTensorFlow(SystemExit):
    """Raised (exit code 2) by subcommands that need the [train] extra when it is absent."""


def require_tensorflow(command: str) -> None:
    """Fail with an install hint, not a traceback, when TensorFlow is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        print(f"unetlite {command}: needs TensorFlow and tf2onnx ({exc.name or exc} is not installed). "
              f"Install them with: {TRAIN_EXTRA_HINT}", file=sys.stderr)
        raise MissingTensorFlow(2) from None


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here for buffered output
        return code
    except MissingTensorFlow as exc:
        return int(exc.code)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP as signals.Stopped before a run's own handling
        print("interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())

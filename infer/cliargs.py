"""Argument groups shared by the subcommands that run a model (segment, video, eval)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return int(text)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --providers, --threads, --threshold."""
    parser.add_argument("--model", type=Path, help="ONNX model (default: the bundled one)")
    parser.add_argument("--providers", default="auto",
                        help="auto (CUDA then CPU), cpu, cuda, or onnxruntime provider names (default: auto)")
    parser.add_argument("--threads", type=positive_int, help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the model's)")


def open_segmenter(args: argparse.Namespace, command: str):
    """The Segmenter the arguments ask for, or None after a one-line error on stderr.

    Spinning is off: every command runs reader/writer threads on the same cores.
    """
    from .session import ModelLoadError, Segmenter
    try:
        return Segmenter(args.model, providers=args.providers, threads=args.threads, spin=False)
    except ModelLoadError as exc:
        print(f"unetlite {command}: {exc}", file=sys.stderr)
        return None

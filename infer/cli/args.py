"""The argparse types and argument groups every command shares, defined once.

Imports nothing heavy: building the parser (``--help``, ``--version``) loads neither OpenCV nor a runtime.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable


def whole_number(minimum: int, maximum: int | None, expected: str) -> Callable[[str], int]:
    """An argparse type for a whole number in [minimum, maximum] (None: no upper bound)."""
    def parse(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum or (maximum is not None and int(text) > maximum):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return int(text)
    return parse


positive_int = whole_number(1, None, "a positive integer")
MAX_BATCH_SIZE = 32   # images per inference call: ~30 MB of activations each with the bundled model (32: 1.2 GB peak; 1000 took 4 GB); more adds no speed
batch_size = whole_number(1, MAX_BATCH_SIZE, f"a whole number from 1 to {MAX_BATCH_SIZE}")
non_negative_int = whole_number(0, None, "a whole number >= 0")


def probability(text: str) -> float:
    """A threshold: a finite number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number between 0 and 1")
    return value


def _with_suffix(text: str) -> int:
    """'20M' -> 20000000, '1.5K' -> 1500, '42' -> 42 (K and M are powers of 1000); 0 when not a number."""
    raw = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(raw[-1:], 1)
    try:
        return int(float(raw[:-1] if scale > 1 else raw) * scale)
    except (ValueError, OverflowError):  # also 'nan' and 'inf'
        return 0


def positive_count(what: str, example: str, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type for a positive count written with an optional K or M suffix (at most ``maximum``)."""
    def parse(text: str) -> int:
        value = _with_suffix(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a positive {what} such as {example}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: expected at most {maximum // 1_000_000}M")
        return value
    return parse


MAX_PIXELS_LIMIT = 10_000_000_000   # 10 G pixels: 30 GB of RGB, far above any photo, far below an overflow
pixel_count = positive_count("pixel count", "100000000 or 100M", MAX_PIXELS_LIMIT)   # --max-pixels


def add_limit_argument(parser: argparse.ArgumentParser) -> None:
    """--max-pixels, shared by every command that decodes untrusted images or frames."""
    from ..io.headers import DEFAULT_MAX_PIXELS
    parser.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"refuse images whose header claims more pixels (default: "
                             f"{DEFAULT_MAX_PIXELS // 1_000_000}M)")


def seconds(text: str) -> float:
    """A number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds >= 0")
    return value


def background(text: str):
    """--background blur[:STRENGTH] | PATH | R,G,B (segment and video) -> a pipeline BackgroundSpec."""
    from ..pipeline.backgrounds import BackgroundError, parse_background
    try:
        return parse_background(text)
    except BackgroundError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


BACKGROUND_METAVAR = "blur[:S]|PATH|R,G,B"
EDGE_HELP = ("soft: an edge-aware alpha from the picture (guided filter) for backgrounds, cutouts and the overlay; "
             "hard: the binary mask (default soft; mask and prob outputs are the same either way)")


def backend(text: str) -> str:
    """--providers: auto or a registered runtime (onnxruntime's own provider names also accepted)."""
    from ..engine import runtimes
    try:
        return runtimes.parse_backend(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def model_file(text: str) -> Path:
    """--model: a path that, if it exists, is a regular file (not /dev/zero, a FIFO or a folder).
    A missing file is left to the engine, which says so in its own words."""
    import os
    import stat
    path = Path(text)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return path
    if stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"{text!r}: is a directory, not a model file")
    if not stat.S_ISREG(mode):
        raise argparse.ArgumentTypeError(f"{text!r}: not a regular file (a device, FIFO or socket)")
    return path


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --int8, --providers, --precision, --threads, --threshold (runtimes from the registry)."""
    from ..engine import runtimes
    parser.add_argument("--model", type=model_file, help="ONNX model (default: the bundled one)")
    parser.add_argument("--int8", action="store_true",
                        help="run the int8 twin <model stem>.int8.onnx next to the model (the bundled one has it)")
    parser.add_argument("--providers", type=backend, default="auto", metavar="{" + ",".join(runtimes.choices()) + "}",
                        help="runtime: auto = CUDA when a GPU is present, else OpenVINO when installed, "
                             "else onnxruntime CPU (default: auto)")
    parser.add_argument("--precision", choices=runtimes.precisions(), default="fp32",
                        help="fp32 (default) or bf16 (OpenVINO on CPUs with bf16 units; faster, less exact)")
    parser.add_argument("--threads", type=positive_int, help="inference threads (default: the CPUs this process may use)")
    parser.add_argument("--threshold", type=probability, help="probability threshold (default: the model's)")


def engine_options(args: argparse.Namespace):
    """The EngineOptions the engine arguments ask for."""
    from ..engine.options import EngineOptions
    return EngineOptions(args.model, getattr(args, "int8", False), args.providers, args.threads,
                         getattr(args, "precision", "fp32"))


def add_output_format_argument(parser: argparse.ArgumentParser, names, default: str, extra_choices=()) -> None:
    """--format, its choices and help from the output-format registry."""
    from ..io import formats
    parser.add_argument("--format", dest="fmt", choices=[*names, *extra_choices], default=default,
                        help=formats.help_text(names) + f" (default: {default})")


class OneLineUsageParser(argparse.ArgumentParser):
    """A subcommand's parser whose usage error is its one-line usage and the error, not the whole
    wrapped usage block of every option."""

    def short_usage(self) -> str:
        positionals = " ".join(a.metavar if isinstance(a.metavar, str) else a.dest.upper()
                               for a in self._actions if not a.option_strings and a.help != argparse.SUPPRESS
                               and a.dest != "command")
        required = " ".join(f"{a.option_strings[0]} {a.metavar or a.dest.upper()}" for a in self._actions
                            if a.option_strings and a.required)
        return " ".join(part for part in (f"usage: {self.prog} [options]", positionals, required) if part)

    def error(self, message: str):
        self.exit(2, f"{self.short_usage()}\n{self.prog}: error: {message} (see {self.prog} --help)\n")


def say_error(command: str, message: str) -> None:
    """One line ``unetlite CMD: message`` on stderr (a terminal gone away is ignored)."""
    try:
        print(f"unetlite {command}: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def say(line: str) -> None:
    """A result line on stdout; a terminal that went away (SIGHUP) must not turn it into a traceback.
    A closed pipe (``| head``) goes on to main(), which exits 141 quietly."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        raise
    except OSError:
        pass


def progress_reporter(command: str):
    """``(path, reason)`` -> one line ``unetlite CMD: path: reason`` that does not break a tqdm bar."""
    def report(path: str, reason: str) -> None:
        from tqdm import tqdm
        tqdm.write(f"unetlite {command}: {path}: {reason}", file=sys.stderr)
    return report

"""`unetlite video`: segment a video file, camera or stream frame by frame (the frame loop is
pipeline.frames). Exit 0 done; 1 output not saved, file truncated or stream lost; 2 bad input;
130/143/129 Ctrl-C/SIGTERM/SIGHUP (the output so far is saved and playable)."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..signals import exit_code, stop_on_signals
from .args import (add_engine_arguments, add_limit_argument, add_output_format_argument, engine_options,
                   positive_int, say, say_error, whole_number)

log = logging.getLogger(__name__)

DEFAULT_BACKGROUND = (0, 255, 0)  # RGB: green screen (pipeline.frames.DEFAULT_BACKGROUND)
DEFAULT_RECONNECT = 3
FOURCC_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi")   # io.sinks.FOURCC's keys, without importing cv2
AV_EXTENSIONS = (".webm", ".gif", ".webp")                      # io.video_av: the [video] extra (PyAV)
VIDEO_EXTENSIONS = FOURCC_EXTENSIONS + AV_EXTENSIONS
ALPHA_EXTENSIONS = AV_EXTENSIONS                                # carry a transparent --format cutout



def _video_options(args: argparse.Namespace, legacy, scene, transparent: bool) -> "VideoOptions":
    """The frame loop's options from the command line (one stream or several)."""
    from ..pipeline.frames import VideoOptions, video_format
    return VideoOptions(fmt=video_format(args.fmt), background=legacy, smooth=args.smooth,
                        threshold=args.threshold, max_frames=args.max_frames, live=args.live, fourcc=args.fourcc,
                        reconnect=args.reconnect, clean=args.clean, tta=args.tta, max_pixels=args.max_pixels,
                        scene=scene, edge=args.edge, transparent=transparent)

def _output_path(text: str) -> Path:
    path = Path(text)
    if text == "-" or text.endswith(("/", os.sep)) or path.is_dir():  # standard output, or a folder (several sources)
        return path if text != "-" else Path("-")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise argparse.ArgumentTypeError(f"{text}: unsupported video extension; use one of "
                                         f"{', '.join(VIDEO_EXTENSIONS)}, - (standard output) or a folder")
    return path


def _rgb(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected R,G,B with values 0-255, e.g. 0,255,0")
    return values  # type: ignore[return-value]


def _background(text: str):
    from .args import background
    return background(text)


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value <= 1000.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"{text!r}: expected frames per second, e.g. 25 or 29.97")
    return value


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 640x360")
    return int(width), int(height)


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: smoothing must be a number in [0, 1)")
    return value


_attempts = whole_number(0, None, "a whole number of attempts (0 turns reconnecting off)")  # --reconnect


def register(sub) -> None:
    from ..io import formats
    p = sub.add_parser(
        "video", help="segment a video file, camera or stream",
        description="Segment a video frame by frame. Files: every frame. Cameras and URLs: real time, always "
                    "the newest frame (stale ones are dropped), written by wall time. The output is checked "
                    "(reopened, every frame there) before it appears under its name. Exit 0 done; 1 output not "
                    "saved, file truncated or stream lost; 2 bad input; 130/143/129 Ctrl-C/SIGTERM/SIGHUP "
                    "(the output so far is saved and playable).")
    p.add_argument("source", nargs="+", metavar="SOURCE",
                   help="video file (.gif/.webp too), camera index (0, 1, ...), URL (rtsp://, http://...) or - "
                        "(a stream on standard input; raw BGR frames with --size); several: one model, their frames "
                        "batched together, -o a folder")
    p.add_argument("-o", "--output", type=_output_path, metavar="OUT",
                   help=f"write the result video ({', '.join(VIDEO_EXTENSIONS)}; .webm/.gif/.webp and H.264 .mp4 "
                        f"with the [video] extra), - for standard output (Matroska), or a folder for several sources")
    p.add_argument("--show", action="store_true", help="show the result in a window with the live fps (q/Esc quits)")
    add_output_format_argument(p, formats.video_formats(), "overlay", extra_choices=tuple(formats.VIDEO_ALIASES))
    p.set_defaults(fmt=None)  # overlay, or composite when --background is given
    fmt_action = next(a for a in p._actions if a.dest == "fmt")
    fmt_action.help = fmt_action.help.replace(" (default: overlay)", "; cutout: a transparent video into .webm, .gif "
                                              "or .webp (in other containers the subject on --background's colour) "
                                              "(default: overlay, or composite with --background)")
    p.add_argument("--background", type=_background, default=None, metavar="blur[:S]|PATH|R,G,B",
                   help="put the subject on a blurred frame (S: sigma in %% of the shorter side, default 3), an "
                        "image or looping video (PATH), or a colour; implies --format composite (whose default "
                        "colour is 0,255,0)")
    p.add_argument("--edge", choices=("soft", "hard"), default="soft",
                   help="soft: an edge-aware alpha from the frame (guided filter) for backgrounds, cutouts and the "
                        "overlay; hard: the binary mask (default soft)")
    p.add_argument("--size", type=_size, metavar="WxH", help="SOURCE - carries raw BGR frames of this size")
    p.add_argument("--fps", type=_fps, default=25.0, help="frame rate of raw frames on standard input (default 25)")
    p.add_argument("--smooth", type=_alpha, default=0.0, metavar="ALPHA",
                   help="temporal smoothing of the probability map against flicker, 0 (off) to <1 (default 0)")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N segmented frames")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="real-time mode, dropping stale frames (default: on for cameras and URLs, off for files; "
                        "a file read live is paced at its own fps)")
    p.add_argument("--reconnect", type=_attempts, default=DEFAULT_RECONNECT, metavar="N",
                   help=f"live network streams: reopen a stream that fails up to N times in a row, waiting "
                        f"0.5, 1, 2... s (default {DEFAULT_RECONNECT}; 0: off)")
    p.add_argument("--clean", action="store_true",
                   help="keep the main foreground regions and fill holes enclosed by them")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped frame (2x the work)")
    add_engine_arguments(p)
    add_limit_argument(p)
    p.add_argument("--fourcc", help="codec four-character code (default: mp4v, or XVID for .avi)")
    p.set_defaults(run=run)


def _fail(message: str, code: int = 2) -> int:
    say_error("video", message)
    return code


def run(args: argparse.Namespace) -> int:
    """SIGTERM and SIGHUP end the run like Ctrl-C: the output so far is saved, exit 128 + signal."""
    with stop_on_signals():
        try:
            return _run_command(args)
        except KeyboardInterrupt as exc:  # before or after the frames (model loading, opening the source)
            return _fail("interrupted", exit_code(exc))


def _check_output(path: Path, source: str) -> str | None:
    """Why ``path`` cannot be written (checked before the model loads), or None. Also removes
    temp files that killed runs left in its folder."""
    from ..io.atomic import WriteError, display_path, make_temp, remove_stale_temps
    from ..io.sources import is_live
    if not path.parent.is_dir():
        return f"{display_path(path)}: folder {display_path(path.parent)} does not exist"
    if path.is_dir():
        return f"{display_path(path)}: is a folder; give a file name such as {display_path(path / 'out.mp4')}"
    if not is_live(source) and path.exists() and path.resolve() == Path(source.removeprefix("file://")).resolve():
        return f"{display_path(path)}: is the input; choose another output name"
    removed = remove_stale_temps(path.parent, recursive=False)
    if removed:
        log.info("%s: removed %d temp file(s) left by killed runs", display_path(path.parent), removed)
    try:  # a real write: permission bits, read-only mounts and quotas all show here
        make_temp(path, keep_suffix=True).unlink()
    except WriteError as exc:
        return str(exc)
    return None


def _run_command(args: argparse.Namespace) -> int:
    from ..engine.options import open_segmenter
    from ..io.atomic import display_path
    from ..io.sinks import Display, DisplayError, VideoNotSaved, VideoWriteError, display_problem
    from ..io.sources import SourceError, open_source
    from ..pipeline.frames import process_video, video_format

    from ..pipeline.backgrounds import BackgroundSpec
    if args.output is None and not args.show:
        return _fail("error: nothing to do; give -o OUT and/or --show")
    scene = args.background
    if args.fmt is None:  # --background alone means the subject on that background
        args.fmt = "composite" if scene is not None else "overlay"
    if scene is not None and video_format(args.fmt) != "composite":
        return _fail(f"error: --background puts the subject on a background (--format composite), not --format {args.fmt}")
    legacy = scene.color if scene is not None and scene.kind == "color" else DEFAULT_BACKGROUND
    transparent = (args.fmt == "cutout" and scene is None and args.output is not None
                   and args.output.suffix.lower() in ALPHA_EXTENSIONS)
    if args.size is not None and args.source != ["-"]:
        return _fail("error: --size describes raw frames on standard input (SOURCE -)")
    if len(args.source) > 1 or (args.output is not None and args.output != Path("-") and args.output.is_dir()
                                and args.output.suffix.lower() not in VIDEO_EXTENSIONS):
        return _run_streams(args, scene, legacy, transparent)
    if args.fourcc is not None and len(args.fourcc) != 4:
        return _fail(f"error: --fourcc {args.fourcc!r} must be four characters")
    args.source = args.source[0]
    if args.output is not None and args.output != Path("-") and (problem := _check_output(args.output, args.source)):
        return _fail(problem)

    def no_window(reason: str) -> bool:
        """Say why --show cannot work; True when that leaves nothing to do."""
        if args.output is None:
            _fail(f"--show: cannot open a window: {reason}; nothing else to do (add -o OUT)")
            return True
        _fail(f"--show: cannot open a window: {reason}; writing {display_path(args.output)} only")
        return False

    show = args.show
    if show and (problem := display_problem()):  # checked early: no model load just to find out
        if no_window(problem):
            return 2
        show = False
    try:
        if args.source == "-" and args.size is not None:
            from ..io.video_av import AvCapture
            capture = AvCapture("-", raw_size=args.size, raw_fps=args.fps)
        else:
            capture = open_source(args.source)
    except SourceError as exc:
        return _fail(str(exc))
    try:
        segmenter = open_segmenter(engine_options(args))
    except BaseException:
        capture.release()
        raise
    options = _video_options(args, legacy, scene, transparent)
    display = None
    if show:
        try:
            display = Display()
        except DisplayError as exc:
            if no_window(str(exc)):
                capture.release()
                return 2
    try:
        summary = process_video(segmenter, args.source, args.output, options, capture=capture, display=display)
    except VideoNotSaved as exc:  # frames were processed, the file is not there: a failure, not a usage error
        return _fail(str(exc), 1)
    except (SourceError, VideoWriteError) as exc:
        return _fail(str(exc))
    _say_result(summary.line(), args.output)
    return summary.exit_code


def _say_result(line: str, output) -> None:
    """The summary: on stdout, or on stderr when stdout carries the video (-o -)."""
    from .args import say_error
    if output is not None and str(output) == "-":
        say_error("video", line)
    else:
        say(line)


def _run_streams(args: argparse.Namespace, scene, legacy, transparent: bool) -> int:
    """Several sources (or one into a folder): one model, frames batched across streams."""
    from ..engine.options import open_segmenter
    from ..io.atomic import display_path
    from ..io.sinks import VideoWriteError
    from ..io.sources import SourceError, open_source
    from ..io.video_av import have_av, open_sink
    from ..pipeline.streams import output_name, process_streams

    if args.show:
        return _fail("error: --show shows one source; run several sources with -o OUTDIR only")
    if args.output is None or args.output == Path("-"):
        return _fail("error: several sources need -o OUTDIR (one output file per source)")
    folder = args.output
    if not folder.is_dir():
        if not folder.parent.is_dir():
            return _fail(f"{display_path(folder)}: folder {display_path(folder.parent)} does not exist")
        folder.mkdir()
    transparent = args.fmt == "cutout" and scene is None and have_av()
    extension = ".webm" if transparent else ".mp4"
    taken: set[str] = set()
    outputs = [output_name(source, folder, extension, taken) for source in args.source]
    captures = []
    try:
        for source in args.source:
            captures.append(open_source(source))
    except SourceError as exc:
        for cap in captures:
            cap.release()
        return _fail(str(exc))
    try:
        segmenter = open_segmenter(engine_options(args))
    except BaseException:
        for cap in captures:
            cap.release()
        raise
    options = _video_options(args, legacy, scene, transparent)
    try:
        summary = process_streams(segmenter, list(args.source), outputs, options,
                                  lambda path, fps: open_sink(path, fps, args.fourcc, alpha=transparent),
                                  captures=captures)
    except (SourceError, VideoWriteError) as exc:
        return _fail(str(exc))
    for line in summary.lines():
        say(line)
    return summary.exit_code

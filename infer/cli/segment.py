"""`unetlite segment`: segment files, folders, globs (and URIs with --ray) into masks, cutouts or overlays."""
from __future__ import annotations

import argparse
import re

from .args import (MAX_BATCH_SIZE, add_engine_arguments, add_limit_argument, add_output_format_argument,
                   batch_size, engine_options, positive_int, progress_reporter, say, say_error)


def register(sub: argparse._SubParsersAction) -> None:
    from ..io.formats import FORMATS
    p = sub.add_parser("segment", help="segment images: files, folders, globs",
                       description="Segment images and write one output per image under OUT: the source's full "
                                   "name plus the format's extension (cat.jpg -> cat.jpg.png); folders mirror the "
                                   "paths below them (hidden files and folders skipped), files and globs their "
                                   "path below the current folder (else their bare name). Outputs that OUT's "
                                   "manifest shows were made from the same source with the same settings are kept "
                                   "(resume); others are redone.")
    # nargs="*": `--ray DIR` takes DIR as its address, and run() hands it back (split_ray_argument)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or glob patterns "
                                                              "(with --ray also s3://, gs://, file:// URIs)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (with --ray also a URI)")
    add_output_format_argument(p, list(FORMATS), "mask")
    _add_photo_arguments(p)
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders ('**' in globs)")
    p.add_argument("--batch-size", type=batch_size, default=4,
                   help=f"images per inference call, 1 to {MAX_BATCH_SIZE} (default: 4)")
    p.add_argument("--tile", action="store_true", help="segment at native resolution with overlapping tiles")
    p.add_argument("--clean", action="store_true",
                   help="keep the main foreground regions and fill holes enclosed by them")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image (2x the work)")
    p.add_argument("--overwrite", action="store_true", help="redo every output, even those the manifest shows done")
    p.add_argument("--no-reduced-decode", dest="reduced_decode", action="store_false", help=argparse.SUPPRESS)
    add_engine_arguments(p)
    add_limit_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on Ray Data: a local runtime, or the cluster at ADDRESS ('auto', 'ray://HEAD:10001'); "
                        "same outputs, names, resume and unetlite-failures.csv (needs pip install '.[ray]')")
    p.add_argument("--ray-workers", type=positive_int, metavar="N",
                   help="with --ray: model replicas (default: one per GPU, else half the cluster's CPUs)")
    p.set_defaults(run=run)


def _add_photo_arguments(p: argparse.ArgumentParser) -> None:
    """--background and --edge (the video command's, for photos); --format's default becomes
    'mask, or composite with --background' (resolved by _with_photo_options)."""
    from .args import BACKGROUND_METAVAR, EDGE_HELP, background
    p.set_defaults(fmt=None)
    fmt_action = next(a for a in p._actions if a.dest == "fmt")
    fmt_action.help = fmt_action.help.replace(" (default: mask)", " (default: mask, or composite with --background)")
    p.add_argument("--background", type=background, default=None, metavar=BACKGROUND_METAVAR,
                   help="put the subject on a blurred copy of the photo (S: sigma in %% of the shorter side, "
                        "default 3), an image (PATH: scaled to cover the photo, centre-cropped; a video gives its "
                        "first frame) or a colour; implies --format composite")
    p.add_argument("--edge", choices=("soft", "hard"), default="soft", help=EDGE_HELP)


def _with_photo_options(settings, args: argparse.Namespace):
    """``settings`` with the format resolved (--background alone means composite) and the
    background and edge set; a usage error (exit 2) for --background with another --format."""
    from dataclasses import replace

    from ..errors import UnetliteError
    scene = getattr(args, "background", None)
    fmt = settings.fmt or ("composite" if scene is not None else "mask")
    if scene is not None and fmt != "composite":
        raise UnetliteError(f"--background puts the subject on a background (--format composite), "
                            f"not --format {fmt}")
    return replace(settings, fmt=fmt, background=scene, edge=getattr(args, "edge", "soft"))


def split_ray_argument(ray: str | None, inputs: list[str]) -> tuple[str | None, list[str]]:
    """``--ray [ADDRESS]`` before the inputs swallows the first one (argparse's optional value):
    a value that is not an address ('auto', 'local', 'ray://head:10001', 'host:6379') goes back
    to the inputs. Returns (address or "" for a local runtime, or None without --ray; inputs)."""
    if not ray or ray in ("auto", "local") or "://" in ray or re.fullmatch(r"[\w.\-]+:\d+", ray):
        return ("" if ray == "local" else ray), inputs
    return "", [ray, *inputs]


def request_from_args(args: argparse.Namespace):
    """The SegmentRequest `unetlite segment`'s command line asks for."""
    from ..pipeline.items import SegmentSettings
    from ..pipeline.segment_run import SegmentRequest

    ray, inputs = split_ray_argument(args.ray, args.inputs)
    settings = SegmentSettings(args.fmt, args.batch_size, args.tile, args.threshold, args.clean, args.tta,
                               args.max_pixels, args.reduced_decode)
    settings = _with_photo_options(settings, args)
    return SegmentRequest(tuple(inputs), str(args.output), settings, engine_options(args), args.recursive,
                          args.overwrite, not args.no_progress, ray, args.ray_workers)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.segment_run import Report, segment

    result = segment(request_from_args(args),
                     Report(failed=progress_reporter("segment"), note=lambda text: say_error("segment", text)))
    say(result.line())
    return result.exit_code

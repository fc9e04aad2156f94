"""`unetlite soft-labels`: the teacher's soft pet masks for distillation (a `--soft` root for `unetlite train`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "soft-labels"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        COMMAND, help="soft pet masks from a pretrained teacher, for `unetlite train --soft` (needs the [train] extra)",
        description="Run the DeepLabV3 PASCAL VOC teacher (a .tflite file you pass; never shipped) over folders of "
                    "images, image files and video frame ranges, and write a --soft root: ROOT/images/NAME.* and "
                    "ROOT/teacher_soft/NAME.png = round(255 * P(cat or dog)) at each image's size. Pictures not "
                    "already in ROOT/images are hard-linked (or copied) there; video frames are saved as JPEG. "
                    "Existing masks are kept, so an interrupted run resumes.")
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help="a folder of images, an image file, or a video clip.mp4[@START:STOP[:STEP]] (frames are "
                        "named CLIP_f00012)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="ROOT",
                   help="the --soft root to write (ROOT/images, ROOT/teacher_soft); may be the folder above a SRC "
                        "named images/, which is then labelled in place")
    p.add_argument("--teacher", type=Path, required=True, metavar="MODEL.tflite",
                   help="the teacher, e.g. ../shared/teacher/deeplabv3_mnv2_pascal_quant.tflite")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="no flip averaging (2x faster; the shipped Oxford masks were made with it)")
    p.add_argument("--threads", type=int, default=2, help="LiteRT CPU threads (default: 2)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from .teacher import Teacher, TeacherError, make_soft_root

    prog = f"unetlite {COMMAND}"
    if args.threads < 1:
        print(f"{prog}: --threads must be at least 1", file=sys.stderr)
        return 2
    try:
        teacher = Teacher(args.teacher, flip=args.flip, threads=args.threads)
    except TeacherError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        report = make_soft_root(args.sources, args.output, teacher, progress=None if args.quiet else _say)
    except OSError as exc:   # the output root itself cannot be written
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    for source, reason in report.failed:
        print(f"{prog}: {source}: {reason}", file=sys.stderr)
    done = report.written + report.skipped
    print(f"{args.output}: {report.written} soft masks written, {report.skipped} already there, "
          f"{len(report.failed)} failed ({report.seconds:.0f} s)")
    if report.failed:
        print(f"{prog}: {len(report.failed)} of {done + len(report.failed)} inputs failed (listed above)",
              file=sys.stderr)
        return 1
    return 0

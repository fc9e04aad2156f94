"""`unetlite export`: Keras checkpoint -> ONNX with its contract, parity-checked, optionally int8.

Nothing is written until every check has passed: the models are built in a temporary
folder and only then copied (atomically) to their final paths.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from unetlite.infer.errors import first_line

log = logging.getLogger(__name__)

PARITY_COUNT = 8
CALIBRATION_COUNT = 32
EVAL_COUNT = 16
# The same names as unetlite.export.quantize.METHODS (not imported here: it pulls in onnx,
# and every `unetlite` command builds this parser).
CALIBRATION_METHODS = ("average", "percentile", "entropy", "minmax")


class UsageError(Exception):
    """Bad combination of options (exit 2)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="convert a trained Keras model to ONNX, optionally int8 (needs the [train] extra)",
                       description="Convert a Keras U-Net to ONNX with tf2onnx, embed the preprocessing contract, "
                                   "check Keras/ONNX parity on images and optionally add a static int8 twin.")
    p.add_argument("checkpoint", nargs="?", type=Path,
                   help="a .keras/.h5 file from `unetlite train` or a TF SavedModel directory "
                        "(a run.json beside it adds training data and metrics to the contract)")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--untrained", action="store_true",
                   help="export a randomly initialised U-Net built from --base-filters/--depth/--input-size")
    p.add_argument("--base-filters", type=int, metavar="N", help="with --untrained (default 8)")
    p.add_argument("--depth", type=int, metavar="N", help="with --untrained (default 6)")
    p.add_argument("--input-size", type=int, metavar="N", help="with --untrained (default 256)")
    p.add_argument("--float-input", action="store_true",
                   help="float32 [0, 1] input as in earlier exports (default: uint8 pixels, scaled inside the graph)")
    p.add_argument("--dynamic-size", action="store_true",
                   help="accept any height/width that is a multiple of 2**depth (default: the checkpoint's size)")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset, >= 17 (default 17)")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="probability -> mask threshold stored in the contract (default 0.5)")
    g = p.add_argument_group("parity check (Keras vs ONNX, on by default)")
    g.add_argument("--no-parity", action="store_true", help="skip the check")
    g.add_argument("--parity-images", type=Path, metavar="DIR",
                   help="real images to compare on (default: the --calibration folder, else synthetic smooth images)")
    g.add_argument("--parity-count", type=int, default=PARITY_COUNT, metavar="N",
                   help=f"images used (default {PARITY_COUNT})")
    g = p.add_argument_group("int8 (static QDQ quantization with onnxruntime)")
    g.add_argument("--int8", action="store_true", help="also write an int8 model (needs --calibration)")
    g.add_argument("--calibration", type=Path, metavar="DIR", help="real images to calibrate on")
    g.add_argument("--calibration-count", type=int, default=CALIBRATION_COUNT, metavar="N",
                   help=f"calibration images, spread over the folder (default {CALIBRATION_COUNT})")
    g.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="average",
                   help="activation ranges: average = per-image min/max averaged (default; agreed best with fp32), "
                        "percentile, entropy or minmax")
    g.add_argument("--int8-output", type=Path, metavar="PATH", help="default: <output stem>.int8.onnx")
    g.add_argument("--eval-images", type=Path, metavar="DIR",
                   help="images to compare int8 with fp32 on (default: held out from --calibration)")
    g.add_argument("--eval-count", type=int, default=EVAL_COUNT, metavar="N",
                   help=f"comparison images (default {EVAL_COUNT})")
    g.add_argument("--int8-all-layers", action="store_true",
                   help="quantize the full-resolution layers too (default: they stay float, which is faster "
                        "and more accurate for 8-filter models on CPU)")
    g.add_argument("--int8-exclude", action="append", default=[], metavar="NAME",
                   help="also keep nodes whose name contains NAME in float (repeatable; e.g. up1)")
    p.set_defaults(run=run)


def _validate(args: argparse.Namespace) -> None:
    if bool(args.checkpoint) == bool(args.untrained):
        raise UsageError("give a CHECKPOINT or --untrained (not both)")
    if not args.untrained and any(v is not None for v in (args.base_filters, args.depth, args.input_size)):
        raise UsageError("--base-filters/--depth/--input-size only apply with --untrained")
    if args.opset < 17:
        raise UsageError(f"--opset {args.opset}: needs 17 or later")
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise UsageError(f"--threshold {args.threshold}: must be between 0 and 1")
    if args.output.is_dir():
        raise UsageError(f"{args.output}: is a directory; -o takes a file name")
    for name in ("parity_count", "calibration_count", "eval_count"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.int8 and not args.calibration:
        raise UsageError("--int8 needs --calibration DIR (real images)")
    if not args.int8 and (args.int8_output or args.eval_images or args.int8_exclude or args.int8_all_layers):
        raise UsageError("--int8-output/--eval-images/--int8-exclude/--int8-all-layers only apply with --int8")
    if args.int8 and int8_path(args).resolve() == args.output.resolve():
        raise UsageError("--int8-output must differ from -o")


def int8_path(args: argparse.Namespace) -> Path:
    return args.int8_output or args.output.with_name(f"{args.output.stem}.int8.onnx")


def _load(args: argparse.Namespace):
    from .load import is_saved_model, load_keras, untrained

    if args.untrained:
        from unetlite.train.model import UNetConfig

        defaults = UNetConfig()
        try:
            return untrained(args.base_filters or defaults.base_filters, args.depth or defaults.depth,
                             args.input_size or defaults.input_size)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    model = load_keras(args.checkpoint)
    fixed = None not in model.input_shape[1:3]
    if args.dynamic_size and fixed and is_saved_model(args.checkpoint):
        raise UsageError(f"{args.checkpoint}: this SavedModel's signature is fixed at "
                         f"{model.input_shape[1]}x{model.input_shape[2]}, so --dynamic-size cannot work; "
                         "export the .keras checkpoint instead")
    if not fixed and not args.dynamic_size:
        raise UsageError(f"{args.checkpoint}: the model has no fixed input size; pass --dynamic-size")
    return model


def _parity_images(args: argparse.Namespace, contract) -> tuple[list, str]:
    from .parity import image_files, read_images, spread, synthetic_images

    folder = args.parity_images or args.calibration
    if folder is None:
        log.warning("parity runs on %d synthetic smooth images (no --parity-images): pass real images "
                    "for a meaningful check", args.parity_count)
        size = (contract.input_height * 5 // 4, contract.input_width * 3 // 2)  # not the model size: exercise resize
        return synthetic_images(args.parity_count, size), f"{args.parity_count} synthetic images"
    images = read_images(spread(image_files(folder), args.parity_count))
    if not images:
        raise FileNotFoundError(f"{folder}: no readable images")
    return images, f"{len(images)} images from {folder}"


def _int8_files(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """(calibration files, evaluation files): disjoint, each spread over its folder."""
    from .parity import image_files, spread

    files = image_files(args.calibration)
    if args.eval_images:
        calibration = spread(files, args.calibration_count)
        chosen = {p.resolve() for p in calibration}
        evaluation = spread([p for p in image_files(args.eval_images) if p.resolve() not in chosen], args.eval_count)
    else:  # hold out part of the calibration folder
        if len(files) < 2:
            raise UsageError(f"{args.calibration}: needs at least 2 images to hold some out "
                             "(or pass --eval-images)")
        held = args.eval_count if len(files) >= args.calibration_count + args.eval_count else max(1, len(files) // 4)
        evaluation = spread(files, min(held, args.eval_count))
        held_out = set(evaluation)
        calibration = spread([p for p in files if p not in held_out], args.calibration_count)
    if not evaluation:
        raise UsageError(f"{args.eval_images}: no images outside the calibration set")
    return calibration, evaluation


def _megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


class Int8Error(Exception):
    """Quantization could not run (one-line reason)."""


def _int8(args: argparse.Namespace, fp32: Path, tmp: Path, calibration: list[Path], evaluation: list[Path]) -> Path:
    """Quantize, then report agreement with fp32 on images the calibration did not see."""
    from .parity import read_images
    from .quantize import TARGET_IOU, compare_int8, quantize_int8

    calibration_images = read_images(calibration)
    if not calibration_images:
        raise Int8Error(f"{args.calibration}: no readable calibration images")
    try:
        int8 = quantize_int8(fp32, tmp / "model.int8.onnx", calibration_images, args.calibration_method,
                             args.int8_exclude, float_full_resolution=not args.int8_all_layers)
    except Exception as exc:  # onnxruntime.quantization raises plain exceptions of many kinds
        log.debug("quantization failed", exc_info=True)
        raise Int8Error(f"int8 quantization failed ({first_line(exc)})") from None
    eval_images = read_images(evaluation)
    if not eval_images:
        log.warning("no readable evaluation images: int8 agreement not measured")
        return int8
    check = compare_int8(fp32, int8, eval_images)
    print(f"int8: calibrated on {len(calibration_images)} images ({args.calibration_method}); "
          f"vs fp32 on {check.images} other images: mask IoU {check.mask_iou:.4f} "
          f"(worst image {check.min_image_iou:.4f}), max |diff| {check.max_abs_diff:.3f}")
    if not check.passed:
        log.warning("int8 mask IoU %.4f is below the %.2f target: try more --calibration-count, "
                    "another --calibration-method or --int8-exclude up1", check.mask_iou, TARGET_IOU)
    return int8


def _export(args: argparse.Namespace) -> int:
    from unetlite.infer.io.images import write_atomic

    from .convert import convert, save_onnx
    from .load import run_provenance
    from .parity import check_parity

    int8_files = _int8_files(args) if args.int8 else None  # folder problems before the slow part
    model = _load(args)
    fields = {} if args.untrained else run_provenance(args.checkpoint)
    if args.untrained:
        fields["training_data"] = "none (untrained: random initialisation)"
    if args.threshold is not None:
        fields["threshold"] = args.threshold

    started = time.perf_counter()
    source = args.checkpoint or "untrained model"
    try:
        onnx_model, contract = convert(model, dynamic_size=args.dynamic_size, opset=args.opset,
                                       uint8_input=not args.float_input, **fields)
    except Exception as exc:  # tf2onnx raises anything from shape errors to unsupported ops
        log.debug("conversion failed", exc_info=True)
        print(f"unetlite export: {source}: conversion failed ({first_line(exc)})",
              file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    log.info("converted %s in %.1f s", source, seconds)

    with tempfile.TemporaryDirectory(prefix="unetlite-export-") as tmp:
        fp32 = save_onnx(onnx_model, Path(tmp) / "model.onnx")
        if not args.no_parity:
            images, described = _parity_images(args, contract)
            result = check_parity(model, fp32, images)
            print(f"parity: Keras vs ONNX on {described}: max |diff| {result.max_abs_diff:.2e}, "
                  f"mask IoU {result.mask_iou:.6f} (worst image {result.min_image_iou:.6f}): "
                  f"{'ok' if result.passed else 'FAILED'}")
            if not result.passed:
                print(f"unetlite export: {source}: ONNX output differs from Keras ({result.summary()}); "
                      "nothing written", file=sys.stderr)
                return 1
        int8 = _int8(args, fp32, Path(tmp), *int8_files) if int8_files else None
        write_atomic(args.output, fp32.read_bytes())
        size = "any multiple of %d" % contract.size_multiple if contract.dynamic_size else \
            f"{contract.input_height}x{contract.input_width}"
        print(f"wrote {args.output} (fp32, {_megabytes(args.output)}, opset {args.opset}, input {size}, "
              f"converted in {seconds:.1f} s)")
        if int8:
            target = int8_path(args)
            write_atomic(target, int8.read_bytes())
            print(f"wrote {target} (int8 QDQ, {_megabytes(target)})")
    return 0


def run(args: argparse.Namespace) -> int:
    from unetlite.infer.extras import require_tensorflow

    try:
        _validate(args)
    except UsageError as exc:
        print(f"unetlite export: {exc}", file=sys.stderr)
        return 2
    require_tensorflow("export")
    from unetlite.infer.io.images import ImageReadError

    from .load import CheckpointError

    try:
        return _export(args)
    except UsageError as exc:
        print(f"unetlite export: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, ImageReadError, FileNotFoundError, Int8Error) as exc:
        print(f"unetlite export: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # writing the outputs
        print(f"unetlite export: {exc.filename or args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1

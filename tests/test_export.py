"""`unetlite export`: conversion, parity, contract, dynamic size, SavedModel/.h5, int8, failures.

Everything runs on the real tiny model (trained on real pets) and real pets images.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import PETS, pet_names
from unetlite.infer.cli import main
from unetlite.infer.engine.contract import ModelContract
from unetlite.infer.io.images import read_image
from unetlite.infer.engine.preprocess import prepare
from unetlite.infer.engine.segmenter import Segmenter

pytest.importorskip("tf2onnx")

PARITY = re.compile(r"max \|diff\| (\S+), mask IoU (\S+) \(worst image (\S+)\): (ok|FAILED)")
INT8 = re.compile(r"mask IoU (\S+) \(worst image (\S+)\), max \|diff\| (\S+)")


def _contract(path: Path) -> ModelContract:
    return ModelContract.from_metadata({p.key: p.value for p in onnx.load(str(path)).metadata_props})


def _spread(names: list[str], count: int) -> list[str]:
    """Up to `count` names evenly spread over the list (it is sorted by breed)."""
    return names[::max(1, len(names) // count)][:count]


def _linked(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / f"{n}.jpg").symlink_to(PETS / "images" / f"{n}.jpg")
    return folder


@pytest.fixture(scope="module")
def calibration_dir(pets_dir, tmp_path_factory) -> Path:
    """16 trainval images spread over the breeds (all 16 of the in-repo fixture set)."""
    return _linked(tmp_path_factory.mktemp("calib"), _spread(pet_names("trainval"), 16))


@pytest.fixture(scope="module")
def test_images_dir(pets_dir, tmp_path_factory) -> Path:
    """Up to 24 test-split images (8 in the fixture set): never seen by training or calibration."""
    return _linked(tmp_path_factory.mktemp("test_images"), _spread(pet_names("test"), 24))


def _export(capsys, *argv) -> tuple[int, str, str]:
    code = main(["export", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _parity(out: str) -> tuple[float, float, float]:
    match = PARITY.search(out)
    assert match, out
    assert match.group(4) == "ok"
    return float(match.group(1)), float(match.group(2)), float(match.group(3))


def test_export_checkpoint_parity_and_contract(tiny_keras, test_images_dir, tmp_path, capsys):
    model, saved = tiny_keras
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint = Path(shutil.copy(saved, run_dir / "best.keras"))
    run = {"data": "oxford_pets (96 trainval images, test fixture)", "config": {"epochs": 3},
           "best": {"epoch": 3, "val_loss": 0.41, "val_iou": 0.52}}
    (run_dir / "run.json").write_text(json.dumps(run))

    out_path = tmp_path / "out" / "tiny.onnx"
    code, out, err = _export(capsys, checkpoint, "-o", out_path, "--parity-images", test_images_dir,
                             "--threshold", "0.4", "--opset", "18")
    assert code == 0, err
    max_diff, iou, worst = _parity(out)
    assert iou >= 0.999 and worst >= 0.999
    assert max_diff < 1e-4  # float32 conversion noise is ~1e-7 on this model
    assert "8 images from" in out

    contract = _contract(out_path)
    assert contract.input_size == (64, 64)
    assert contract.size_multiple == 8 and not contract.dynamic_size
    assert contract.threshold == 0.4
    assert contract.training_data == run["data"]
    assert contract.metrics == run["best"]
    assert contract.quantization == "none" and contract.version and contract.export_date
    assert onnx.load(str(out_path)).opset_import[0].version == 18

    # Independent of the parity code: the engine's output on a real image equals Keras'.
    image = read_image(next(test_images_dir.iterdir()))
    x = prepare(image, contract)[None]
    seg = Segmenter(out_path, providers="cpu")
    np.testing.assert_allclose(seg.run(x), model.predict_on_batch(x)[..., 0], atol=1e-5)
    assert sorted(p.name for p in out_path.parent.iterdir()) == ["tiny.onnx"]  # no temp files left


def test_dynamic_size_runs_at_two_sizes(tiny_keras, test_images_dir, tmp_path, capsys):
    import keras

    from unetlite.train.model import UNetConfig, build_unet

    model, checkpoint = tiny_keras
    out_path = tmp_path / "dyn.onnx"
    code, out, err = _export(capsys, checkpoint, "-o", out_path, "--dynamic-size", "--parity-images", test_images_dir)
    assert code == 0, err
    _parity(out)
    contract = _contract(out_path)
    assert contract.dynamic_size and contract.size_multiple == 8 and contract.input_size == (64, 64)

    # Reference: the same weights in a Keras model built for any size.
    keras.utils.set_random_seed(0)
    reference = build_unet(UNetConfig(base_filters=4, depth=3, input_size=64), dynamic_size=True)
    reference.set_weights(model.get_weights())
    seg = Segmenter(out_path, providers="cpu")
    image = read_image(next(test_images_dir.iterdir()))
    for size in ((96, 128), (136, 72)):
        x = prepare(image, contract, size)[None]
        probs = seg.run(x)
        assert probs.shape == (1, *size)
        np.testing.assert_allclose(probs, reference.predict_on_batch(x)[..., 0], atol=1e-5)


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty", "not_saved_model", "wrong_suffix"])
def test_broken_checkpoint_one_line_error_no_output(kind, tmp_path, capsys):
    bad = {"missing": tmp_path / "nope.keras", "garbage": tmp_path / "garbage.keras",
           "empty": tmp_path / "empty.h5", "not_saved_model": tmp_path / "folder",
           "wrong_suffix": tmp_path / "model.pt"}[kind]
    if kind in ("garbage", "wrong_suffix"):
        bad.write_bytes(b"this is not a keras model\n" * 50)
    elif kind == "empty":
        bad.touch()
    elif kind == "not_saved_model":
        bad.mkdir()
    out_dir = tmp_path / "out"
    code, out, err = _export(capsys, bad, "-o", out_dir / "model.onnx")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("unetlite export:")]
    assert len(lines) == 1 and str(bad) in lines[0], err
    assert "Traceback" not in err and out == ""
    expected = {"missing": "file not found", "garbage": "not a loadable Keras model", "empty": "empty",
                "not_saved_model": "not a TF SavedModel", "wrong_suffix": "unsupported checkpoint type"}[kind]
    assert expected in lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_usage_errors(tiny_keras, tmp_path, capsys):
    _, checkpoint = tiny_keras
    cases = [
        ([], "give a CHECKPOINT or --untrained"),
        ([checkpoint, "--untrained"], "not both"),
        ([checkpoint, "--depth", "3"], "only apply with --untrained"),
        (["--untrained", "--depth", "3", "--input-size", "60"], "not a multiple"),
        ([checkpoint, "--opset", "13"], "17 or later"),
        ([checkpoint, "--int8"], "needs --calibration"),
        ([checkpoint, "--threshold", "1.5"], "between 0 and 1"),
    ]
    for argv, message in cases:
        code, out, err = _export(capsys, *argv, "-o", tmp_path / "m.onnx")
        assert code == 2 and message in err, (argv, err)
    assert not (tmp_path / "m.onnx").exists()

    from unetlite.export.cli import CALIBRATION_METHODS
    from unetlite.export.quantize import DEFAULT_METHOD, METHODS
    assert CALIBRATION_METHODS == METHODS and DEFAULT_METHOD == METHODS[0]


def test_untrained_export_uses_synthetic_parity_and_says_so(tmp_path, capsys, caplog):
    out_path = tmp_path / "untrained.onnx"
    code, out, err = _export(capsys, "--untrained", "--base-filters", "4", "--depth", "2", "--input-size", "32",
                             "-o", out_path)
    assert code == 0, err
    assert "synthetic images" in out
    assert any("synthetic" in r.getMessage() for r in caplog.records)
    _parity(out)
    contract = _contract(out_path)
    assert contract.input_size == (32, 32) and contract.size_multiple == 4
    assert contract.training_data.startswith("none (untrained")


def test_saved_model_and_h5_export(tiny_keras, test_images_dir, tmp_path, capsys):
    model, _ = tiny_keras
    saved_model = tmp_path / "saved_model"
    model.export(str(saved_model), verbose=False)
    h5 = tmp_path / "tiny.h5"
    model.save(h5)
    x = prepare(read_image(next(test_images_dir.iterdir())), ModelContract(input_height=64, input_width=64))[None]
    for source in (saved_model, h5):
        out_path = tmp_path / f"{source.stem}.onnx"
        code, out, err = _export(capsys, source, "-o", out_path, "--parity-images", test_images_dir)
        assert code == 0, (source, err)
        _parity(out)
        contract = _contract(out_path)
        assert contract.input_size == (64, 64) and contract.size_multiple == 8  # depth read from the graph
        np.testing.assert_allclose(Segmenter(out_path, providers="cpu").run(x), model.predict_on_batch(x)[..., 0],
                                   atol=1e-5)

    code, out, err = _export(capsys, saved_model, "-o", tmp_path / "dyn.onnx", "--dynamic-size")
    assert code == 2 and "signature is fixed at 64x64" in err
    assert not (tmp_path / "dyn.onnx").exists()


def test_parity_check_detects_a_different_model(tiny_keras, test_images_dir):
    """The check must be able to fail: the tiny model against a differently initialised twin."""
    from unetlite.export.convert import convert
    from unetlite.export.load import untrained
    from unetlite.export.parity import check_parity, image_files, read_images

    model, _ = tiny_keras
    images = read_images(image_files(test_images_dir)[:6])
    same = check_parity(model, convert(model)[0], images)
    assert same.passed and same.images == 6
    other, _ = convert(untrained(base_filters=4, depth=3, input_size=64, seed=1))
    result = check_parity(model, other.SerializeToString(), images)
    assert not result.passed
    assert result.max_abs_diff > 0.01


def test_split_concat_convs_is_exact(tiny_onnx):
    import onnxruntime as ort

    from unetlite.export.quantize import split_concat_convs

    original = onnx.load(str(tiny_onnx))
    split, rewritten = split_concat_convs(onnx.load(str(tiny_onnx)))
    assert rewritten == 3  # one per decoder level (depth 3), found also in a dynamic-size graph
    assert not any(n.op_type == "Concat" and "concat" in n.name for n in split.graph.node)
    onnx.checker.check_model(split)
    image = read_image(PETS / "images" / f"{pet_names('test', 1)[0]}.jpg")
    x = Segmenter(tiny_onnx, providers="cpu").prepare(image, (64, 96))[None]  # the model's own input dtype
    a = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    b = ort.InferenceSession(split.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


def test_int8_export_agrees_with_fp32(tiny_keras, calibration_dir, test_images_dir, tmp_path, capsys):
    _, checkpoint = tiny_keras
    out_path = tmp_path / "tiny.onnx"
    # Threshold 0.25: the tiny fixture (10 s of training) never outputs much above 0.5, so at 0.5
    # its "mask" is a sliver of pixels sitting on the threshold that any perturbation flips; 0.25
    # is near its best IoU against the real trimaps, where its masks are pet-shaped.
    code, out, err = _export(capsys, checkpoint, "-o", out_path, "--threshold", "0.25", "--int8",
                             "--calibration", calibration_dir, "--eval-images", test_images_dir)
    assert code == 0, err
    int8_path = tmp_path / "tiny.int8.onnx"
    assert f"wrote {int8_path}" in out
    evaluated = min(16, len(list(test_images_dir.iterdir())))  # --eval-count defaults to 16
    assert "calibrated on 16 images" in out and f"{evaluated} other images" in out
    match = INT8.search(out)
    assert match, out
    iou = float(match.group(1))
    # The mask agreement is the property; a single pixel's worst |diff| depends on how the
    # fixture happened to train (a 4-filter net has soft outputs that 8-bit activations move),
    # so the probabilities are checked on average instead. Broken calibration or a
    # preprocessing mismatch gives IoU < 0.5, empty masks or a mean |diff| of ~0.1 and more.
    assert iou >= 0.95
    from unetlite.infer.io.images import read_image
    images = [read_image(p) for p in sorted(test_images_dir.iterdir())]
    fp32, int8 = Segmenter(out_path, providers="cpu"), Segmenter(int8_path, providers="cpu")
    batch = np.stack([fp32.prepare(img) for img in images])
    assert np.abs(int8.run(batch) - fp32.run(batch)).mean() < 0.02

    fp32_contract, int8_contract = _contract(out_path), _contract(int8_path)
    assert int8_contract.quantization == "int8-qdq"
    assert asdict(int8_contract) == {**asdict(fp32_contract), "quantization": "int8-qdq"}
    graph = onnx.load(str(int8_path)).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    assert int8_path.stat().st_size < out_path.stat().st_size


def test_int8_on_dynamic_size_model(tiny_onnx, calibration_dir, tmp_path):
    from unetlite.export.parity import image_files, read_images
    from unetlite.export.quantize import compare_int8, quantize_int8

    images = read_images(image_files(calibration_dir))
    out = quantize_int8(tiny_onnx, tmp_path / "dyn.int8.onnx", images[:8], method="percentile")
    seg, fp32 = Segmenter(out, providers="cpu"), Segmenter(tiny_onnx, providers="cpu")
    assert seg.contract.dynamic_size and seg.contract.quantization == "int8-qdq"
    for size in ((64, 64), (96, 128)):  # calibrated at 64x64 only
        x = prepare(images[-1], seg.contract, size)[None]
        probs = seg.run(x)
        assert probs.shape == (1, *size)
        assert np.abs(probs - fp32.run(x)).mean() < 0.02  # measured ~0.004
    check = compare_int8(tiny_onnx, out, images[8:])
    assert check.images == 8 and check.max_abs_diff < 0.2


# ---- uint8 input, export + quantize + run (moved from tests/engine/test_engine.py: needs Keras) ----

def _images(count: int = 4) -> list[np.ndarray]:
    return [read_image(PETS / "images" / f"{n}.jpg") for n in pet_names("test", count)]


def test_uint8_export_quantize_and_run(tiny_keras, tmp_path, pets_dir):
    from unetlite.export.convert import export_onnx
    from unetlite.export.quantize import quantize_int8

    model, _ = tiny_keras
    u8, f32 = tmp_path / "u8.onnx", tmp_path / "f32.onnx"
    export_onnx(model, u8, dynamic_size=True)                       # the default for new exports
    export_onnx(model, f32, dynamic_size=True, uint8_input=False)  # what older exports look like
    assert onnx.load(str(u8)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    seg_u8, seg_f32 = Segmenter(u8, providers="cpu"), Segmenter(f32, providers="cpu")
    assert seg_u8.input_dtype == seg_u8.contract.input_dtype == "uint8"
    assert seg_f32.input_dtype == seg_f32.contract.input_dtype == "float32"

    images = _images(4)
    pixels = np.stack([seg_u8.prepare(img) for img in images])
    floats = np.stack([seg_f32.prepare(img) for img in images])
    assert pixels.dtype == np.uint8 and floats.dtype == np.float32
    reference = model.predict_on_batch(floats)[..., 0]
    for seg in (seg_u8, seg_f32):  # both feeds work on both models (old callers pass floats)
        for batch in (pixels, floats):
            np.testing.assert_allclose(seg.run(batch), reference, atol=1e-5)

    int8 = quantize_int8(u8, tmp_path / "u8.int8.onnx", _images(8)[4:], method="average")
    seg_int8 = Segmenter(u8, providers="cpu", int8=True)
    assert seg_int8.path == int8 and seg_int8.input_dtype == "uint8"
    assert seg_int8.contract.quantization == "int8-qdq" and seg_int8.contract.input_dtype == "uint8"
    probs = seg_int8.run(pixels)
    assert probs.shape == reference.shape and np.abs(probs - reference).mean() < 0.05


# ---- the Keras model rebuilt from the ONNX weights (the TensorFlow benchmark's model) -------------

BUNDLED = Path(__file__).resolve().parents[1] / "infer" / "models" / "unet_pets.onnx"


def _rebuild_parity(onnx_path: Path, size=None):
    from unetlite.export.keras_from_onnx import check_rebuild, rebuild_keras

    model = rebuild_keras(onnx_path)
    images = [read_image(p) for p in sorted((PETS / "images").glob("*.jpg"))[:8]]
    return model, check_rebuild(model, onnx_path, images, size=size)


def test_keras_rebuilt_from_the_tiny_onnx_matches_it(tiny_onnx, pets_dir):
    """tests/data/tiny_unet.onnx: uint8 input, dynamic size, depth 3, 4 filters."""
    from unetlite.export.keras_from_onnx import read_onnx_unet

    unet = read_onnx_unet(tiny_onnx)
    assert (unet.base_filters, unet.depth, unet.channels, unet.input_size) == (4, 3, 3, 64)
    assert unet.contract.input_dtype == "uint8" and unet.contract.dynamic_size
    for size in (None, (96, 128)):   # the contract's 64x64 and another multiple of 8: H, W left open
        model, check = _rebuild_parity(tiny_onnx, size)
        assert check.passed and check.max_abs_diff < 1e-4 and check.mask_iou == 1.0, check.summary()
    assert model.input_shape == (None, None, None, 3)
    assert model.count_params() == 30365


def test_keras_rebuilt_from_a_float_input_export_matches_it(tiny_keras, tmp_path, pets_dir):
    """Older exports take float32 [0, 1]; the rebuild reads the same weights either way."""
    from unetlite.export.convert import export_onnx

    source, _ = tiny_keras
    path = tmp_path / "f32.onnx"
    export_onnx(source, path, dynamic_size=True, uint8_input=False)
    model, check = _rebuild_parity(path)
    assert check.passed, check.summary()
    for a, b in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)   # the very same weights, bit for bit


def test_keras_rebuilt_from_the_bundled_model_matches_it(pets_dir):
    """The 7.8 M parameter model the TensorFlow benchmark times: the same probabilities within 1e-4."""
    model, check = _rebuild_parity(BUNDLED)
    assert model.count_params() == 7_779_385 and model.input_shape == (None, 256, 256, 3)
    assert check.passed and check.max_abs_diff < 1e-4 and check.mask_iou == 1.0, check.summary()


def test_rebuild_refuses_what_is_not_a_unetlite_unet(tmp_path):
    from onnx import TensorProto, helper

    from unetlite.export.keras_from_onnx import RebuildError, main as rebuild_main, read_onnx_unet

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 3])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(RebuildError, match="not a unetlite U-Net"):
        read_onnx_unet(path)
    assert rebuild_main([str(path), "-o", str(tmp_path / "x.keras")]) == 2
    assert not (tmp_path / "x.keras").exists()


def test_rebuild_command_writes_a_loadable_checked_model(tiny_onnx, pets_dir, tmp_path, capsys):
    import keras

    from unetlite.export.keras_from_onnx import cached_keras, main as rebuild_main

    out = tmp_path / "tiny.keras"
    assert rebuild_main([str(tiny_onnx), "-o", str(out), "--check-images", str(PETS / "images")]) == 0
    printed = capsys.readouterr().out
    assert ": ok" in printed and f"wrote {out}" in printed
    assert keras.models.load_model(out, compile=False).count_params() == 30365
    cached = cached_keras(tiny_onnx, tmp_path / "cache")
    assert cached == cached_keras(tiny_onnx, tmp_path / "cache")   # keyed by the ONNX bytes: built once
    assert keras.models.load_model(cached, compile=False).input_shape == (None, 64, 64, 3)

"""The Segmenter: backend choice, real onnxruntime/OpenVINO sessions, model validation, uint8
input, paths, TTA, provider reporting, bad models."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import PETS, pet_names
from unetlite.infer.engine.runtimes.base import (CUDA_HINT, OPENVINO_HINT, BackendChoice, BackendError, choose_backend,  # noqa: E501
                                                 gpu_present, openvino_installed, parse_backend)
from unetlite.infer.engine.runtimes.onnxruntime import cuda_problem
from unetlite.infer.cli import main
from unetlite.infer.engine.contract import ModelContract
from unetlite.infer.io.images import read_image
from unetlite.infer.pipeline.metrics import mask_iou
from unetlite.infer.engine.segmenter import ModelLoadError, Segmenter, default_model_path

# What onnxruntime reports on the two kinds of install (onnxruntime-gpu 1.31 and plain onnxruntime).
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_BUILD = ["CPUExecutionProvider"]
needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="openvino not installed (unetlite[openvino])")


def _images(count: int = 4) -> list[np.ndarray]:
    return [read_image(PETS / "images" / f"{n}.jpg") for n in pet_names("test", count)]


# ---- the choice ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ort_providers, openvino, gpu, expected", [
    (GPU_BUILD, True, True, BackendChoice("cuda", fallback="openvino")),
    (GPU_BUILD, False, True, BackendChoice("cuda", fallback="cpu")),
    (GPU_BUILD, True, False, BackendChoice("openvino")),
    (GPU_BUILD, False, False, BackendChoice("cpu")),
    (CPU_BUILD, True, True, BackendChoice("openvino", warn=True)),   # a GPU it cannot use: say so
    (CPU_BUILD, False, True, BackendChoice("cpu", warn=True)),
    (CPU_BUILD, True, False, BackendChoice("openvino")),
    (CPU_BUILD, False, False, BackendChoice("cpu")),
])
def test_auto_order_is_cuda_then_openvino_then_cpu(ort_providers, openvino, gpu, expected):
    choice = choose_backend("auto", ort_providers, openvino, gpu)
    assert (choice.backend, choice.fallback, choice.warn) == (expected.backend, expected.fallback, expected.warn)
    assert choice.reason and "\n" not in choice.reason


@pytest.mark.parametrize("ort_providers", [GPU_BUILD, CPU_BUILD])
@pytest.mark.parametrize("openvino", [True, False])
@pytest.mark.parametrize("gpu", [True, False])
def test_explicit_requests_never_fall_back(ort_providers, openvino, gpu):
    assert choose_backend("cpu", ort_providers, openvino, gpu) == BackendChoice("cpu", reason="asked for onnxruntime CPU")
    if openvino:
        assert choose_backend("openvino", ort_providers, openvino, gpu).backend == "openvino"
    else:
        with pytest.raises(BackendError, match=r"openvino package is not installed; pip install '\.\[openvino\]'"):
            choose_backend("openvino", ort_providers, openvino, gpu)
    if ort_providers is CPU_BUILD:
        with pytest.raises(BackendError, match="no CUDA provider") as info:
            choose_backend("cuda", ort_providers, openvino, gpu)
        assert CUDA_HINT in str(info.value)
    elif not gpu:
        with pytest.raises(BackendError, match="no NVIDIA GPU"):
            choose_backend("cuda", ort_providers, openvino, gpu)
    else:
        choice = choose_backend("cuda", ort_providers, openvino, gpu)
        assert choice.backend == "cuda" and choice.fallback is None


def test_choice_with_this_machines_real_lists():
    providers = ort.get_available_providers()
    choice = choose_backend("auto", providers, openvino_installed(), gpu_present())
    local = "openvino" if openvino_installed() else "cpu"
    if not gpu_present():
        assert choice.backend == local and not choice.warn and choice.fallback is None
    elif "CUDAExecutionProvider" in providers:  # a GPU and a CUDA build: CUDA, falling back to the local runtime
        assert (choice.backend, choice.fallback, choice.warn) == ("cuda", local, False)
    else:  # a GPU this onnxruntime cannot use: said loudly
        assert choice.backend == local and choice.warn and CUDA_HINT in choice.reason


@pytest.mark.parametrize("text, name", [("auto", "auto"), ("CPU", "cpu"), (" cuda ", "cuda"), ("openvino", "openvino"),
                                        ("CPUExecutionProvider", "cpu"), ("CUDAExecutionProvider", "cuda")])
def test_parse_backend_accepts_the_names(text, name):
    assert parse_backend(text) == name


@pytest.mark.parametrize("text", ["gpu", "foo", "", "cpu,cuda", "TensorrtExecutionProvider"])
def test_unknown_providers_are_usage_errors_at_parse_time(text, tmp_path, capsys):
    with pytest.raises(ValueError):
        parse_backend(text)
    code = main(["segment", str(tmp_path / "none.jpg"), "-o", str(tmp_path / "out"), "--providers", text])
    err = capsys.readouterr().err
    assert code == 2 and "--providers" in err and "expected one of auto, cpu, cuda, openvino" in err
    assert not (tmp_path / "out").exists()


# ---- real sessions ------------------------------------------------------------------------------

def test_auto_on_this_machine_is_quiet_and_says_what_runs(tiny_onnx, capfd, caplog):
    with caplog.at_level(logging.INFO, logger="unetlite.infer"):
        seg = Segmenter(tiny_onnx, providers="auto")
    if not gpu_present():
        assert seg.provider == ("OpenVINO" if openvino_installed() else "CPUExecutionProvider")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # nothing to warn about
    err = capfd.readouterr().err
    assert "onnxruntime" not in err.lower() and "libcu" not in err  # no library noise
    lines = [r.getMessage() for r in caplog.records if r.name == "unetlite.infer.engine.segmenter"]
    assert len(lines) == 1 and seg.provider in lines[0] and "fp32 precision" in lines[0]


@pytest.mark.skipif(gpu_present(), reason="a GPU is present: CUDA may load here")
def test_cuda_request_without_cuda_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(BackendError) as info:
        Segmenter(providers="cuda")
    assert "\n" not in str(info.value)
    problem = cuda_problem()  # the dynamic loader's reason, e.g. libcuda.so.1 / libcublasLt.so.13 missing
    assert problem is not None and ".so" in problem and "\n" not in problem
    image = PETS / "images" / f"{pet_names('test', 1)[0]}.jpg"
    code = main(["segment", str(image), "-o", str(tmp_path / "out"), "--providers", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cuda" in err[0].lower()


def test_cpu_session_sizes_batching_and_paths(tiny_onnx, pets_dir):
    seg = Segmenter(tiny_onnx, providers="cpu")
    assert seg.provider == "CPUExecutionProvider" and seg.precision == "fp32"
    images = _images(3)
    batched = seg.predict(images)
    for img, res in zip(images, batched):
        assert res.probability.shape == img.shape[:2] and res.probability.dtype == np.float32
        assert res.mask.shape == img.shape[:2] and set(np.unique(res.mask)) <= {0, 1}
        np.testing.assert_allclose(seg(img).probability, res.probability, atol=1e-5)
    path = PETS / "images" / f"{pet_names('test', 1)[0]}.jpg"
    np.testing.assert_array_equal(seg(path).probability, seg(str(path)).probability)
    np.testing.assert_allclose(seg(path).probability, batched[0].probability, atol=1e-5)
    assert seg.predict([]) == []


def test_tta_averages_with_the_mirror_image(tiny_onnx, pets_dir):
    seg = Segmenter(tiny_onnx, providers="cpu")
    img = _images(1)[0]
    plain, mirrored = seg(img).probability, seg(img[:, ::-1].copy()).probability[:, ::-1]
    tta = seg(img, tta=True)
    np.testing.assert_allclose(tta.probability, (plain + mirrored) / 2, atol=1e-5)
    assert not np.allclose(plain, mirrored, atol=1e-3)  # real images are not symmetric: TTA changes something
    np.testing.assert_array_equal(tta.mask, (tta.probability >= seg.contract.threshold).astype(np.uint8))


@needs_openvino
@pytest.mark.parametrize("int8", [False, True])
def test_openvino_matches_onnxruntime_on_the_bundled_model(int8, pets_dir):
    ov, cpu = Segmenter(providers="openvino", int8=int8, threads=2), Segmenter(providers="cpu", int8=int8, threads=2)
    assert ov.provider == "OpenVINO" and ov.precision == "fp32"  # f32 pinned: no silent bf16
    assert ov.path.name == ("unet_pets.int8.onnx" if int8 else "unet_pets.onnx")
    assert ov.runner.threads == 2
    images = _images(6)
    x = np.stack([cpu.prepare(img) for img in images])
    for batch in (x[:3], x[:1], x):  # dynamic batch, in any order
        ov_probs, cpu_probs = ov.run(batch), cpu.run(batch)
        assert ov_probs.shape == cpu_probs.shape == (len(batch), 256, 256)
        if not int8:
            assert np.abs(ov_probs - cpu_probs).max() <= 1e-4
    if int8:  # two int8 kernels differ slightly; both must segment like fp32
        fp32 = Segmenter(providers="cpu").run(x)
        assert mask_iou(ov.run(x) >= 0.5, fp32 >= 0.5) >= 0.95


@needs_openvino
def test_openvino_runs_the_tiny_uint8_model_and_tiles(tiny_onnx, pets_dir):
    ov, cpu = Segmenter(tiny_onnx, providers="openvino"), Segmenter(tiny_onnx, providers="cpu")
    img = _images(1)[0]
    for tile in (False, True):
        a, b = ov(img, tile=tile).probability, cpu(img, tile=tile).probability
        assert a.shape == img.shape[:2] and np.abs(a - b).max() <= 1e-4


@needs_openvino
def test_bf16_only_when_asked(pets_dir):
    with pytest.raises(BackendError, match="cpu runtime does not offer it .pass --providers openvino"):
        Segmenter(providers="cpu", precision="bf16")
    try:
        seg = Segmenter(providers="auto", precision="bf16")  # bf16 implies OpenVINO
    except BackendError as exc:
        assert "no bf16 support" in str(exc)
        return
    assert seg.provider == "OpenVINO" and seg.precision == "bf16" and "bf16 precision" in seg.describe()


def test_int8_flag_picks_the_twin(tiny_onnx, tmp_path):
    seg = Segmenter(providers="cpu", int8=True)
    assert seg.path == default_model_path().with_name("unet_pets.int8.onnx")
    assert seg.contract.quantization == "int8-qdq" and "int8-qdq" in seg.describe()
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(tiny_onnx, lonely)
    with pytest.raises(ModelLoadError, match=r"lonely.int8.onnx: int8 model not found"):
        Segmenter(lonely, providers="cpu", int8=True)


# ---- model validation ---------------------------------------------------------------------------

def _graph(tmp_path, name, nodes, inputs, outputs, inits=()) -> str:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return str(path)


def _value(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_models_that_are_not_image_to_mask_are_refused(tmp_path):
    f = TensorProto.FLOAT
    identity = _graph(tmp_path, "identity", [helper.make_node("Identity", ["x"], ["y"])],
                      [_value("x", f, ["N", "H", "W", 3])], [_value("y", f, ["N", "H", "W", 3])])
    classifier = _graph(tmp_path, "classifier", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, 2], keepdims=0)],
                        [_value("x", f, ["N", 64, 64, 3])], [_value("y", f, ["N", 3])])
    vector = _graph(tmp_path, "vector", [helper.make_node("Sigmoid", ["x"], ["y"])],
                    [_value("x", f, ["N", 10])], [_value("y", f, ["N", 10])])
    cases = {identity: "found 'y' float32 [?, ?, ?, 3]", classifier: "found 'y' float32 [?, 3]",
             vector: "found 'x' float32 [?, 10]"}
    backends = ["cpu", "openvino"] if openvino_installed() else ["cpu"]
    for path, found in cases.items():
        for backend in backends:
            with pytest.raises(ModelLoadError) as info:
                Segmenter(path, providers=backend)
            message = str(info.value)
            assert message.startswith(path) and "expected" in message and found in message and "\n" not in message


def test_nchw_model_is_accepted(tmp_path, pets_dir):
    """A 1x1 conv + sigmoid in NCHW: a (trivial) image-to-mask model in the other layout."""
    f = TensorProto.FLOAT
    weights = numpy_helper.from_array(np.array([1.0, -1.0, 0.5], np.float32).reshape(1, 3, 1, 1), "w")
    path = _graph(tmp_path, "nchw", [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])],
                  [_value("x", f, ["N", 3, 64, 64])], [_value("y", f, ["N", 1, 64, 64])], [weights])
    seg = Segmenter(path, providers="cpu")
    assert seg.layout == "NCHW" and seg.contract.input_size == (64, 64)  # no contract: the graph's size
    img = _images(1)[0]
    x = seg.prepare(img, (64, 64))
    expected = 1 / (1 + np.exp(-(x @ np.array([1.0, -1.0, 0.5], np.float32))))
    np.testing.assert_allclose(seg.run(x[None])[0], expected, atol=1e-5)
    assert seg(img).probability.shape == img.shape[:2]


def test_model_without_metadata_runs_with_defaults(tiny_onnx, tmp_path, pets_dir):
    model = onnx.load(tiny_onnx)
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, bare)
    seg = Segmenter(bare, providers="cpu")
    assert seg.contract == ModelContract()
    img = _images(1)[0]
    assert seg(img).probability.shape == img.shape[:2]  # fed at the default 256x256


def test_contract_comes_from_model_metadata(tiny_onnx):
    seg = Segmenter(tiny_onnx, providers="cpu")
    meta = {p.key: p.value for p in onnx.load(tiny_onnx).metadata_props}
    assert seg.contract == ModelContract.from_metadata(meta)
    assert seg.contract.input_size == (64, 64) and seg.contract.size_multiple == 8 and seg.contract.dynamic_size


def test_bad_model_files_give_one_line_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="missing.onnx: model file not found"):
        Segmenter(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    for backend in ["cpu", "openvino"] if openvino_installed() else ["cpu"]:
        with pytest.raises(ModelLoadError) as info:
            Segmenter(junk, providers=backend)
        assert str(junk) in str(info.value) and "\n" not in str(info.value)


def test_segment_cli_with_identity_model_exits_2_with_one_line(tmp_path, pets_dir):
    f = TensorProto.FLOAT
    identity = _graph(tmp_path, "identity", [helper.make_node("Identity", ["x"], ["y"])],
                      [_value("x", f, ["N", "H", "W", 3])], [_value("y", f, ["N", "H", "W", 3])])
    image = PETS / "images" / f"{pet_names('test', 1)[0]}.jpg"
    proc = subprocess.run([sys.executable, "-m", "unetlite.infer.cli", "segment", str(image), "-o",
                           str(tmp_path / "out"), "--model", identity, "--providers", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not an image-to-mask model" in lines[0] and "Traceback" not in proc.stderr

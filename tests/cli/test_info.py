"""`unetlite info`: contract, shapes, opset, parameter count; errors; no TensorFlow or onnx needed;
`unetlite --version`; a closed pipe ends quietly."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import PETS, pet_names
from unetlite.infer.cli import main
from unetlite.infer.engine.segmenter import Segmenter


def _info(capsys, *argv) -> tuple[int, str, str]:
    code = main(["info", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def int8_model(tiny_onnx, tmp_path_factory) -> Path:
    from unetlite.export.parity import read_images
    from unetlite.export.quantize import quantize_int8

    images = read_images([PETS / "images" / f"{n}.jpg" for n in pet_names("trainval")[::40]])
    return quantize_int8(tiny_onnx, tmp_path_factory.mktemp("int8") / "tiny.int8.onnx", images)


def test_info_text_and_json(tiny_record, tiny_onnx, capsys):
    parameters = tiny_record["parameters"]  # Keras count_params() of the committed model, recorded when it was made
    contract = Segmenter(tiny_onnx, providers="cpu").contract

    code, out, err = _info(capsys, tiny_onnx)
    assert code == 0, err
    assert f"parameters  {parameters:,}" in out
    assert "opset       17" in out
    assert "input       image  uint8  [?, ?, ?, 3]" in out      # new exports take uint8 pixels
    assert "output      probability  float  [?, ?, ?, 1]" in out
    assert "input_dtype     uint8" in out
    assert "dynamic_size    True" in out and "size_multiple   8" in out
    assert f"training_data   {contract.training_data}" in out
    assert f"({tiny_onnx.stat().st_size / 1e6:.2f} MB)" in out

    code, out, err = _info(capsys, tiny_onnx, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["parameters"] == parameters
    assert data["opset"] == 17 and data["file_bytes"] == tiny_onnx.stat().st_size
    assert data["contract"] == json.loads(json.dumps(asdict(contract)))
    assert [i["name"] for i in data["inputs"]] == ["image"] and data["inputs"][0]["shape"][3] == 3
    assert data["op_counts"]["Conv"] == 15 and data["inputs"][0]["type"] == "uint8"


def test_int8_counts_the_same_parameters(tiny_record, int8_model, capsys):
    code, out, err = _info(capsys, int8_model, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["parameters"] == tiny_record["parameters"]  # scales and zero points are not parameters
    assert data["contract"]["quantization"] == "int8-qdq"
    assert data["op_counts"]["QuantizeLinear"] > 0


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "jpeg"])
def test_bad_files_one_line_error(kind, tmp_path, capsys):
    path = {"missing": tmp_path / "nope.onnx", "directory": tmp_path, "text": tmp_path / "notes.onnx",
            "jpeg": tmp_path / "photo.onnx"}[kind]
    if kind == "text":
        path.write_text("not a model\n" * 20)
    elif kind == "jpeg":
        path.write_bytes((PETS / "images" / f"{pet_names('test', 1)[0]}.jpg").read_bytes())
    code, out, err = _info(capsys, path)
    assert code == 2 and out == ""  # like every other command's bad --model
    assert len(err.strip().splitlines()) == 1 and str(path) in err and "Traceback" not in err


_SUBPROCESS = """
import json, sys
for name in ("onnx", "tensorflow", "keras"):
    sys.modules[name] = None  # import -> ImportError, as on a base install
from unetlite.infer.cli import main
code = main(["info", *sys.argv[1:]])
print(json.dumps({"code": code, "loaded": [m for m in ("onnx", "tensorflow", "keras") if sys.modules.get(m)]}))
"""


def _info_base_install(*argv) -> tuple[dict, str]:
    result = subprocess.run([sys.executable, "-c", _SUBPROCESS, *map(str, argv)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    *text, status = result.stdout.strip().splitlines()
    return json.loads(status), "\n".join(text)


def test_info_needs_neither_tensorflow_nor_onnx(tiny_onnx, tiny_record):
    status, text = _info_base_install(tiny_onnx)
    assert status == {"code": 0, "loaded": []}
    assert "input       image  uint8  [?, ?, ?, 3]" in text and "size_multiple   8" in text
    assert "opset       17" in text and f"parameters  {tiny_record['parameters']:,}" in text


def test_info_without_argument_describes_the_bundled_model():
    from unetlite.infer.engine.segmenter import default_model_path

    status, text = _info_base_install()
    assert status == {"code": 0, "loaded": []}
    path = default_model_path()
    assert f"model       {path} ({path.stat().st_size / 1e6:.2f} MB)" in text
    assert "opset       17" in text
    import numpy as np
    import onnx

    # Float tensors, counted independently by the onnx package; rank-0 constants (the uint8 input's
    # 1/255 scale) are not learned weights.
    initializers = onnx.load(str(path)).graph.initializer
    weights = sum(int(np.prod(i.dims)) for i in initializers if i.data_type == 1 and i.dims)
    assert f"parameters  {weights:,}" in text
    assert "input       image  uint8  [?, 256, 256, 3]" in text  # the bundled model takes raw pixels


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"unetlite {version('unetlite')}"


def test_closed_pipe_ends_quietly():
    """`unetlite info | head -0`: the reader is gone before anything is written."""
    proc = subprocess.Popen([sys.executable, "-m", "unetlite.infer.cli", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child has imported anything, so its first write hits a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""

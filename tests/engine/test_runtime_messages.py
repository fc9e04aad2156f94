"""What users read when a runtime refuses a model: one line, no native-library noise."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from unetlite.infer.errors import library_reason


def test_openvino_source_locations_are_not_the_reason():
    exc = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\n"
                       "Exception from src/inference/src/model_reader.cpp:148:\n"
                       "Unable to read the model: \"m.onnx\" Please check that model format is supported\n")
    assert library_reason(exc).startswith("Unable to read the model")


def test_a_junk_model_on_openvino_is_one_line_without_absl_chatter(tmp_path, pets_dir):
    pytest.importorskip("openvino")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 4)
    proc = subprocess.run([sys.executable, "-m", "unetlite.infer.cli", "segment", str(pets_dir / "images"),
                           "-o", str(tmp_path / "out"), "--model", str(junk), "--providers", "openvino"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(junk) in lines[0] and "not an ONNX model" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()

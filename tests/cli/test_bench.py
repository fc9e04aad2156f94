"""`unetlite bench` and benchmarks/run.py: the report's structure and consistency with tiny
settings. No timing targets: speed is measured on a quiet machine, never asserted."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PETS, REPO, pet_names
from unetlite.infer.engine.runtimes import openvino_installed
from unetlite.infer.pipeline.bench import FP32, INT8, OV_FP32, OV_INT8, TF
from unetlite.infer.cli import main

ONNX_ENGINES = {FP32, INT8} | ({OV_FP32, OV_INT8} if openvino_installed() else set())
TINY = ["--rounds", "2", "--runs", "3", "--warmup", "1", "--threads", "2"]


@pytest.fixture(scope="module")
def models(tiny_onnx, tmp_path_factory) -> tuple[Path, Path]:
    """(fp32 model with its int8 twin beside it as <stem>.int8.onnx, the int8 twin). Needs no TensorFlow."""
    from unetlite.export.parity import read_images
    from unetlite.export.quantize import quantize_int8

    folder = tmp_path_factory.mktemp("bench")
    fp32 = folder / "tiny.onnx"
    shutil.copy(tiny_onnx, fp32)
    images = read_images([PETS / "images" / f"{n}.jpg" for n in pet_names("trainval", 8)])
    int8 = quantize_int8(fp32, folder / "tiny.int8.onnx", images)
    return fp32, int8


@pytest.fixture(scope="module")
def clip(video_dir) -> Path:
    path = video_dir / "vtest_people_short_384x288.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_bench_json_report(models, tiny_keras, clip, capsys):
    (fp32, _), (_, keras_path) = models, tiny_keras
    code = main(["bench", "--model", str(fp32), "--keras", str(keras_path), *TINY, "--batch-sizes", "1,2",
                 "--json", "--video", str(clip), "--video-frames", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert set(report["engines"]) == {TF} | ONNX_ENGINES
    pids = {e["pid"] for e in report["engines"].values()}
    assert len(pids) == len(report["engines"]) and os.getpid() not in pids   # each engine in its own process
    for name, e in report["engines"].items():
        assert 0 < e["p50_ms"] <= e["p95_ms"] <= e["p99_ms"], name
        assert e["runs"] == 3 and len(e["rounds"]) == 2 and e["throughput"]["2"] > 0
        assert e["threads"] == 2, name                                      # same thread count for all
    assert report["engines"][INT8]["model"].endswith("tiny.int8.onnx")     # found next to the model
    assert report["engines"][FP32]["provider"] == "CPUExecutionProvider"
    assert report["engines"][FP32]["input_dtype"] == "uint8"                # new exports take pixels
    p50 = {name: e["p50_ms"] for name, e in report["engines"].items()}
    expected = {"onnxruntime_fp32_vs_tensorflow", "onnxruntime_int8_vs_onnxruntime_fp32"}
    if openvino_installed():
        expected |= {"openvino_fp32_vs_onnxruntime_fp32", "openvino_int8_vs_onnxruntime_fp32"}
        assert report["engines"][OV_FP32]["provider"] == "OpenVINO"
        assert report["engines"][OV_FP32]["precision"] == "fp32"
        assert report["parity"][f"{OV_FP32}_vs_{FP32}_max_abs"] <= 1e-4
    assert set(report["ratios"]) == expected
    for name, value in report["ratios"].items():
        a, b = name.split("_vs_")
        assert value == pytest.approx(p50[a] / p50[b])
        spread = report["ratio_rounds"][name]
        assert len(spread["rounds"]) == 2
        assert spread["min"] - 1e-9 <= value <= spread["max"] + 1e-9      # 2 rounds: the ratio of medians lies between
    assert set(report["video_fps"]) == ONNX_ENGINES and min(report["video_fps"].values()) > 0
    assert report["video"]["size"] == "640x480" and report["video"]["source_size"] == "384x288"
    assert report["threads"] == 2 and report["rounds"] == 2
    assert {"cpu", "cpu_count", "usable_cpus", "isa"} <= set(report["machine"])
    assert {"onnxruntime", "tensorflow", "numpy", "opencv"} <= set(report["versions"])
    assert report["parity"][f"{TF}_vs_{FP32}_max_abs"] < 1e-4   # the same network in both engines
    assert report["parity"][f"{INT8}_vs_{FP32}_max_abs"] < 0.3


def test_bench_table_without_tensorflow_or_video(models, capsys):
    fp32, _ = models
    code = main(["bench", "--model", str(fp32), *TINY, "--batch-sizes", "1", "--no-openvino", "--no-tensorflow"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "TensorFlow skipped: --no-tensorflow" in err and "video skipped" in err
    assert "openvino skipped: --no-openvino" in err
    assert FP32 in out and INT8 in out and TF not in out
    assert "p50 ms" in out and "onnxruntime_int8_vs_onnxruntime_fp32" in out and "own process" in out


def test_bench_bad_inputs(models, tmp_path, capsys):
    fp32, _ = models
    assert main(["bench", "--model", str(fp32), "--video", str(tmp_path / "none.mp4")]) == 2
    assert "none.mp4: video file not found" in capsys.readouterr().err
    assert main(["bench", "--model", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx: model file not found" in capsys.readouterr().err
    assert main(["bench", "--model", str(fp32), "--batch-sizes", "2,4"]) == 2   # latency needs batch 1
    assert "including 1" in capsys.readouterr().err
    not_video = tmp_path / "frame.mp4"
    shutil.copy(PETS / "images" / f"{pet_names('test', 1)[0]}.jpg", not_video)
    assert main(["bench", "--model", str(fp32), *TINY, "--video", str(not_video)]) == 2
    assert "frame.mp4" in capsys.readouterr().err


def test_bench_bad_keras_checkpoint(models, tmp_path, capsys):
    pytest.importorskip("keras")  # without TensorFlow the Keras engine is skipped before loading anything
    fp32, _ = models
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    assert main(["bench", "--model", str(fp32), "--keras", str(bad), "--no-openvino", *TINY]) == 2
    assert "bad.keras: not a loadable Keras model" in capsys.readouterr().err


def test_bench_runs_without_tensorflow(models, tmp_path):
    fp32, _ = models
    keras_path = tmp_path / "tiny.keras"  # never loaded: without TensorFlow the engine is skipped first
    keras_path.write_bytes(b"placeholder")
    code = ("import sys; sys.modules['tensorflow'] = None; "
            "from unetlite.infer.cli import main; "
            f"rc = main(['bench', '--model', {str(fp32)!r}, '--keras', {str(keras_path)!r}, '--rounds', '1', "
            "'--runs', '2', '--warmup', '0', '--batch-sizes', '1', '--no-openvino', '--json']); "
            "assert sys.modules['tensorflow'] is None; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["engines"]) == {FP32, INT8} and set(report["ratios"]) == {"onnxruntime_int8_vs_onnxruntime_fp32"}
    skipped = [line for line in proc.stderr.splitlines() if "TensorFlow skipped" in line]
    assert len(skipped) == 1 and "not installed" in skipped[0]


def test_benchmarks_run_writes_json_with_targets(models, tmp_path):
    fp32, _ = models
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--out", str(out), "--model", str(fp32),
                           "--no-tensorflow", "--video", str(tmp_path / "absent.mp4"),
                           *TINY, "--batch-sizes", "1", "--no-openvino"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["targets"]) >= {"onnxruntime_fp32_vs_tensorflow", "openvino_int8_vs_onnxruntime_fp32"}
    assert report["targets"]["onnxruntime_fp32_vs_tensorflow"] == {"value": None, "target": "<= 0.9", "met": None}
    assert "TensorFlow skipped: --no-tensorflow" in proc.stderr and "absent.mp4 not found" in proc.stderr
    assert report["command"].startswith(Path(sys.executable).name + " benchmarks/run.py")
    assert f"wrote {out}" in proc.stdout


def test_bench_tensorflow_on_the_keras_model_rebuilt_from_the_onnx(models, capsys):
    """No --keras: TensorFlow times the network rebuilt from the fp32 ONNX file's own weights."""
    pytest.importorskip("tensorflow")
    fp32, _ = models
    code = main(["bench", "--model", str(fp32), *TINY, "--batch-sizes", "1", "--providers", "cpu", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert set(report["engines"]) == {TF, FP32, INT8}
    assert report["engines"][TF]["keras"] == "rebuilt from tiny.onnx"
    assert report["parity"][f"{TF}_vs_{FP32}_max_abs"] < 1e-4
    assert "onnxruntime_fp32_vs_tensorflow" in report["ratios"]


def test_bench_engines_come_from_the_runtime_registry(models, monkeypatch):
    """A registered runtime is timed by bench with no change to bench; --providers picks among them."""
    from unetlite.infer.engine import runtimes
    from unetlite.infer.pipeline.bench import BenchConfig, engine_specs, ratio_pairs

    fp32, int8 = models
    notes: list[str] = []
    specs = engine_specs(BenchConfig(model=fp32, tensorflow=False), notes)
    timed = {s.providers for s in specs}
    for name in runtimes.names():
        assert name in timed or any(note.startswith(f"{name} skipped: ") for note in notes), (name, notes)
    assert specs[0].name == FP32 and specs[1].name == INT8

    fake = runtimes.Runtime("fake", runtimes.REGISTRY["cpu"].open, summary="a test runtime")
    monkeypatch.setitem(runtimes.REGISTRY, "fake", fake)
    specs = engine_specs(BenchConfig(model=fp32, tensorflow=False, providers=("cpu", "fake")), [])
    assert [(s.name, s.providers, s.variant) for s in specs] == [
        (FP32, "cpu", "fp32"), (INT8, "cpu", "int8"), ("fake_fp32", "fake", "fp32"), ("fake_int8", "fake", "int8")]
    assert ratio_pairs(specs) == {"onnxruntime_int8_vs_onnxruntime_fp32": (INT8, FP32),
                                  "fake_fp32_vs_onnxruntime_fp32": ("fake_fp32", FP32),
                                  "fake_int8_vs_onnxruntime_fp32": ("fake_int8", FP32)}


def test_bench_explicit_runtime_that_cannot_run_fails_loudly(models, capsys):
    from unetlite.infer.engine.runtimes.base import gpu_present
    if gpu_present():
        pytest.skip("this machine has a GPU: cuda may run")
    fp32, _ = models
    assert main(["bench", "--model", str(fp32), "--providers", "cuda", "--no-tensorflow", *TINY]) == 2
    assert "--providers cuda:" in capsys.readouterr().err
    assert main(["bench", "--providers", "nonesuch"]) == 2
    assert "'nonesuch': expected one of" in capsys.readouterr().err

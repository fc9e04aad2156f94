"""`unetlite bench`: functional checks only (the report's shape and consistency), no timing targets."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PETS, REPO, VIDEO, pet_names
from unetlite.infer.bench import FP32, INT8, TF, interleaved
from unetlite.infer.cli import main

SHORT_VIDEO = VIDEO / "vtest_people_short_384x288.mp4"


def _quantize(src: Path, dst: Path) -> None:
    """Static QDQ int8 with real pet images as calibration data (what an int8 export does)."""
    quant = pytest.importorskip("onnxruntime.quantization")
    from unetlite.infer.imageio import read_image
    from unetlite.infer.preprocess import prepare
    from unetlite.infer.session import Segmenter

    contract = Segmenter(src, providers="cpu").contract
    batches = iter([{"image": prepare(read_image(PETS / "images" / f"{n}.jpg"), contract)[None]}
                    for n in pet_names("trainval", 8)])

    class Reader(quant.CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quant.quantize_static(str(src), str(dst), Reader(), quant_format=quant.QuantFormat.QDQ, per_channel=True)


@pytest.fixture(scope="module")
def models(tiny_onnx, tiny_keras, tmp_path_factory) -> tuple[Path, Path]:
    """(fp32 model with its int8 twin beside it as <stem>.int8.onnx, Keras checkpoint)."""
    folder = tmp_path_factory.mktemp("bench")
    fp32 = folder / "tiny.onnx"
    shutil.copy(tiny_onnx, fp32)
    _quantize(fp32, folder / "tiny.int8.onnx")
    return fp32, tiny_keras[1]


def test_interleaved_gives_every_engine_the_same_rounds():
    order = []
    out = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b"),
                       "c": lambda: order.append("c")}, runs=6, warmup=2)
    assert {k: len(v) for k, v in out.items()} == {"a": 6, "b": 6, "c": 6}
    rounds = [order[i:i + 3] for i in range(0, len(order), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)   # one call of each per round
    assert len({tuple(r) for r in rounds}) > 1                  # order shuffled between rounds
    frames = iter(range(4))
    out = interleaved({"x": lambda: next(frames, None) is not None, "y": lambda: True}, runs=10, warmup=1)
    assert len(out["x"]) == len(out["y"]) <= 3                  # stops when a source runs out


def test_bench_json_report(models, capsys):
    if not SHORT_VIDEO.is_file():
        pytest.skip(f"{SHORT_VIDEO} not found")
    fp32, keras_path = models
    code = main(["bench", "--model", str(fp32), "--keras", str(keras_path), "--runs", "5", "--warmup", "1",
                 "--batch-sizes", "1,2", "--json", "--video", str(SHORT_VIDEO), "--video-frames", "8",
                 "--providers", "cpu", "--threads", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert {"engines", "ort_vs_tf_p50", "int8_speedup", "video_fps", "provider", "threads", "machine",
            "versions"} <= set(report)
    assert set(report["engines"]) == {TF, FP32, INT8}
    for name, e in report["engines"].items():
        assert 0 < e["p50_ms"] <= e["p95_ms"] <= e["p99_ms"], name
        assert e["runs"] == 5
        assert e["throughput"]["2"] > 0
    p50 = {name: e["p50_ms"] for name, e in report["engines"].items()}
    assert report["ort_vs_tf_p50"] == pytest.approx(p50[FP32] / p50[TF])
    assert report["int8_speedup"] == pytest.approx(p50[FP32] / p50[INT8])
    assert report["engines"][INT8]["model"].endswith("tiny.int8.onnx")   # found next to the model
    assert set(report["video_fps"]) == {FP32, INT8} and min(report["video_fps"].values()) > 0
    assert report["video"]["size"] == "640x480" and report["video"]["frames"] == 8
    assert report["provider"] == "CPUExecutionProvider" and report["threads"] == 2
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert {"onnxruntime", "tensorflow", "numpy"} <= set(report["versions"])
    # the same network in both engines: TF and ORT fp32 agree, int8 stays close
    assert report["parity"][f"{TF}_vs_{FP32}_max_abs"] < 1e-4
    assert report["parity"][f"{TF}_vs_{INT8}_max_abs"] < 0.2


def test_bench_table_without_keras_or_video(models, capsys):
    fp32, _ = models
    code = main(["bench", "--model", str(fp32), "--int8", str(fp32), "--runs", "3", "--warmup", "0",
                 "--batch-sizes", "1", "--providers", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "TensorFlow skipped: no --keras" in err and "video skipped" in err
    assert FP32 in out and INT8 in out and TF not in out
    assert "p50 ms" in out and "int8 speedup" in out


def test_bench_bad_inputs(models, tmp_path, capsys):
    fp32, _ = models
    assert main(["bench", "--model", str(fp32), "--video", str(tmp_path / "none.mp4")]) == 2
    assert "none.mp4: video file not found" in capsys.readouterr().err
    assert main(["bench", "--model", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx: model file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    assert main(["bench", "--model", str(fp32), "--keras", str(bad), "--runs", "1"]) == 2
    assert "bad.keras: not a loadable Keras model" in capsys.readouterr().err
    not_video = tmp_path / "frame.mp4"
    shutil.copy(PETS / "images" / f"{pet_names('test', 1)[0]}.jpg", not_video)
    assert main(["bench", "--model", str(fp32), "--int8", str(fp32), "--runs", "1", "--warmup", "0",
                 "--video", str(not_video)]) == 2
    assert "frame.mp4" in capsys.readouterr().err


def test_bench_runs_without_tensorflow(models):
    fp32, keras_path = models
    code = ("import sys; sys.modules['tensorflow'] = None; "
            "from unetlite.infer.cli import main; "
            f"rc = main(['bench', '--model', {str(fp32)!r}, '--keras', {str(keras_path)!r}, '--runs', '3', "
            "'--warmup', '0', '--batch-sizes', '1', '--providers', 'cpu', '--json']); "
            "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["engines"]) == {FP32, INT8}
    assert report["ort_vs_tf_p50"] is None and report["int8_speedup"] > 0
    skipped = [line for line in proc.stderr.splitlines() if "TensorFlow skipped" in line]
    assert len(skipped) == 1 and "not installed" in skipped[0]
    assert np.isfinite(report["engines"][FP32]["p50_ms"])

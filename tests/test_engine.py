"""The Segmenter: provider reporting, sizes, batching, contract, bad models."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest

from conftest import PETS, pet_names
from unetlite.infer.contract import ModelContract
from unetlite.infer.imageio import read_image
from unetlite.infer.session import ModelLoadError, Segmenter


def test_auto_providers_fall_back_to_cpu_quietly_with_one_clear_line(tiny_onnx, capfd, caplog):
    with caplog.at_level(logging.INFO, logger="unetlite.infer.session"):
        seg = Segmenter(tiny_onnx, providers="auto")
    assert seg.provider == "CPUExecutionProvider"  # no GPU on this machine / CI
    err = capfd.readouterr().err
    assert "onnxruntime" not in err.lower() and "libcu" not in err  # the CUDA load noise is silenced
    assert any("CPUExecutionProvider" in r.getMessage() for r in caplog.records)


def test_predict_returns_original_sizes_and_batching_matches_single(tiny_onnx, pets_dir):
    seg = Segmenter(tiny_onnx, providers="cpu")
    images = [read_image(PETS / "images" / f"{n}.jpg") for n in pet_names("test", 3)]
    batched = seg.predict(images)
    for img, res in zip(images, batched):
        assert res.probability.shape == img.shape[:2] and res.probability.dtype == np.float32
        assert res.mask.shape == img.shape[:2] and set(np.unique(res.mask)) <= {0, 1}
        single = seg(img)
        np.testing.assert_allclose(single.probability, res.probability, atol=1e-5)
    assert seg.predict([]) == []


def test_contract_comes_from_model_metadata(tiny_onnx):
    seg = Segmenter(tiny_onnx, providers="cpu")
    meta = {p.key: p.value for p in onnx.load(tiny_onnx).metadata_props}
    assert seg.contract == ModelContract.from_metadata(meta)
    assert seg.contract.input_size == (64, 64) and seg.contract.size_multiple == 8 and seg.contract.dynamic_size


def test_model_without_metadata_runs_with_defaults(tiny_onnx, tmp_path, pets_dir):
    model = onnx.load(tiny_onnx)
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, bare)
    seg = Segmenter(bare, providers="cpu")
    assert seg.contract == ModelContract()
    img = read_image(PETS / "images" / f"{pet_names('test', 1)[0]}.jpg")
    assert seg(img).probability.shape == img.shape[:2]  # fed at the default 256x256


def test_bad_model_files_give_one_line_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="missing.onnx: model file not found"):
        Segmenter(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelLoadError) as info:
        Segmenter(junk)
    assert str(junk) in str(info.value) and "\n" not in str(info.value)

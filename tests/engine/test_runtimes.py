"""The runtime registry: one contract every registered runtime keeps, and a new runtime is one
module-like object plus one registry line, picked up by --providers and segment."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from unetlite.infer.engine import runtimes
from unetlite.infer.engine.runtimes.base import Runtime, RunnerOptions
from unetlite.infer.engine.segmenter import Segmenter


# One parameter per registered runtime, always (never an empty parameter set): whether it can run
# here is decided at set-up, from the registry's own choice rules, and a runtime that cannot is a
# clean skip saying why. CUDA carries ``requires_cuda`` (tests/engine/conftest.py).
RUNTIMES = [pytest.param(name, marks=[pytest.mark.requires_cuda] if name == "cuda" else [], id=name)
            for name in runtimes.REGISTRY]


@pytest.fixture
def name(request):
    """The registered runtime under test; skipped (with the registry's reason) where it cannot run."""
    runtime = request.param
    try:
        runtimes.choose(runtime, runtimes.machine_facts(), runtimes.names())
    except runtimes.BackendError as exc:
        pytest.skip(f"{runtime} cannot run here: {exc}")
    return runtime


def test_the_contract_covers_every_registered_runtime():
    assert [p.id for p in RUNTIMES] == list(runtimes.REGISTRY) and RUNTIMES


@pytest.fixture(scope="module")
def reference(tiny_onnx, pets_dir):
    seg = Segmenter(tiny_onnx, providers="cpu", threads=1)
    from unetlite.infer.io.images import read_image
    images = [read_image(p) for p in sorted((pets_dir / "images").glob("*.jpg"))[:3]]
    batch = np.stack([seg.prepare(img) for img in images])
    return batch, seg.run(batch)


@pytest.mark.parametrize("name", RUNTIMES, indirect=True)
class TestRuntimeContract:
    """What every runtime in the registry promises the Segmenter."""

    def test_opens_and_reports_what_runs(self, name, tiny_onnx):
        seg = Segmenter(tiny_onnx, providers=name, threads=1)
        assert seg.provider and seg.precision == "fp32" and seg.runner.threads >= 1
        assert seg.runner.version and seg.describe().startswith(seg.provider)
        assert seg.runner.n_inputs == 1 and seg.layout == "NHWC"

    def test_probabilities_match_onnxruntime_cpu(self, name, tiny_onnx, reference):
        batch, expected = reference
        seg = Segmenter(tiny_onnx, providers=name, threads=1)
        out = seg.run(batch)
        assert out.shape == expected.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        np.testing.assert_allclose(out, expected, atol=2e-3)

    def test_batches_agree_with_single_images(self, name, tiny_onnx, reference):
        batch, _ = reference
        seg = Segmenter(tiny_onnx, providers=name, threads=1)
        whole = seg.run(batch)
        for i in range(len(batch)):
            np.testing.assert_allclose(seg.run(batch[i:i + 1])[0], whole[i], atol=1e-5)

    def test_precision_choices_come_from_the_registry(self, name):
        assert set(runtimes.REGISTRY[name].precisions) <= set(runtimes.precisions())


@pytest.mark.requires_cuda
def test_cuda_uses_the_gpu(tiny_onnx):
    seg = Segmenter(tiny_onnx, providers="cuda", threads=1)
    assert seg.provider == "CUDAExecutionProvider"


def test_choices_come_from_the_registry():
    assert runtimes.choices() == ("auto", *runtimes.REGISTRY)
    assert runtimes.for_precision("bf16") == "openvino"


def _fake_module():
    """A new runtime as a module would define it: a Runtime whose runner is onnxruntime CPU, renamed."""
    from unetlite.infer.engine.runtimes.onnxruntime import OrtRunner

    def open_fake(path: Path, options: RunnerOptions):
        runner = OrtRunner(path, cuda=False, threads=options.threads, spin=options.spin)
        runner.provider, runner.version = "FakeProvider", "fake 1.0"
        return runner

    return types.SimpleNamespace(RUNTIME=Runtime("fake", open_fake, summary="a test runtime"))


def test_a_new_runtime_is_one_module_and_one_registry_line(tiny_onnx, pets_dir, tmp_path, monkeypatch):
    from unetlite.infer.cli import build_parser
    from unetlite.infer.engine.options import EngineOptions
    from unetlite.infer.pipeline.items import SegmentSettings
    from unetlite.infer.pipeline.segment_run import SegmentRequest, segment

    fake = _fake_module()
    monkeypatch.setitem(runtimes.REGISTRY, "fake", fake.RUNTIME)   # the one registry line

    args = build_parser().parse_args(["segment", "x.jpg", "-o", "out", "--providers", "fake"])
    assert args.providers == "fake"
    image = sorted((pets_dir / "images").glob("*.jpg"))[0]
    result = segment(SegmentRequest((str(image),), str(tmp_path / "out"), SegmentSettings(),
                                    EngineOptions(model=tiny_onnx, providers="fake"), progress=False))
    assert result.ran == "FakeProvider" and result.summary.done == 1 and result.exit_code == 0

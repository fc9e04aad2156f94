"""video's shared-pipeline options: --clean, --tta, --max-pixels, and the composite/cutout names."""
from __future__ import annotations

import numpy as np
import pytest

from unetlite.infer.cli import main
from unetlite.infer.engine.postprocess import clean_mask
from unetlite.infer.engine.segmenter import Segmenter
from unetlite.infer.io.sources import SourceError
from unetlite.infer.pipeline.frames import FramePipeline, VideoOptions, process_video, video_format

SHORT_NAME = "vtest_people_short_384x288.mp4"


@pytest.fixture(scope="module")
def short(video_dir):
    return video_dir / SHORT_NAME


@pytest.fixture(scope="module")
def segmenter(tiny_onnx):
    return Segmenter(tiny_onnx, providers="cpu", spin=False)


def _masks(segmenter, short, **options) -> tuple[object, list[np.ndarray]]:
    frames: list = []
    summary = process_video(segmenter, str(short), None, VideoOptions(fmt="mask", max_frames=4, **options),
                            on_frame=lambda result: frames.append(result))
    return summary, frames


def test_clean_runs_the_shared_post_processing(segmenter, short):
    summary, frames = _masks(segmenter, short, clean=True)
    assert summary.frames_segmented == 4 and summary.exit_code == 0
    for frame in frames:
        assert np.array_equal(frame.mask, clean_mask(frame.mask))


def test_tta_averages_with_the_mirrored_frame(segmenter, short):
    _, plain = _masks(segmenter, short)
    summary, flipped = _masks(segmenter, short, tta=True)
    assert summary.frames_segmented == 4
    pipeline = FramePipeline(segmenter, VideoOptions(tta=True))
    seg = pipeline.segment(plain[0].image)
    np.testing.assert_allclose(seg.probability, flipped[0].probability, atol=1e-6)
    assert not np.array_equal(plain[0].probability, flipped[0].probability)


def test_frames_over_max_pixels_are_refused(segmenter, short):
    with pytest.raises(SourceError, match="over the limit of 1000 pixels"):
        process_video(segmenter, str(short), None, VideoOptions(max_pixels=1000, max_frames=2))


def test_max_pixels_on_the_command_line_is_one_line_and_exit_2(tiny_onnx, short, tmp_path, capsys):
    code = main(["video", str(short), "-o", str(tmp_path / "o.mp4"), "--max-pixels", "1000", "--model",
                 str(tiny_onnx), "--providers", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err == f"unetlite video: {short}: 384x288 frames are over the limit of 1000 pixels (--max-pixels)"
    assert not (tmp_path / "o.mp4").exists()


def test_video_keeps_the_old_cutout_spelling():
    assert video_format("cutout") == "composite" and video_format("overlay") == "overlay"
    with pytest.raises(ValueError, match="unknown video format"):
        video_format("gif")

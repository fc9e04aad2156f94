"""The output-format registry: every front end takes its formats from it; a new format is one entry
plus its render function."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from unetlite.infer.io import formats


def test_every_format_is_complete():
    for name, fmt in formats.FORMATS.items():
        assert fmt.name == name and fmt.extension in formats.MEDIA_TYPES and fmt.writer_bytes_per_pixel > 0
        picture = fmt.render(np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.float32), np.ones((4, 6), np.uint8),
                             formats.Style())
        assert picture.dtype == np.uint8 and picture.shape[0] == 4


def test_video_and_segment_use_distinct_names_for_distinct_pictures():
    assert "composite" in formats.video_formats() and "cutout" not in formats.video_formats()  # RGBA: no video
    assert formats.VIDEO_ALIASES["cutout"] == "composite"
    assert formats.render("cutout", np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.float32),
                          np.ones((2, 2), np.uint8)).shape[2] == 4


def test_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match="choose from mask"):
        formats.get("gif")


def test_a_new_format_is_one_entry_and_segment_offers_it(tiny_onnx, pets_dir, tmp_path, monkeypatch):
    from unetlite.infer.cli import build_parser
    from unetlite.infer.engine.options import EngineOptions
    from unetlite.infer.pipeline.items import SegmentSettings
    from unetlite.infer.pipeline.segment_run import SegmentRequest, segment

    def invert(pixels, probability, mask, style):
        return np.where(mask > 0, 0, 255).astype(np.uint8)

    monkeypatch.setitem(formats.FORMATS, "inverse", formats.OutputFormat("inverse", ".png", False, 8, invert,
                                                                          "255 where background"))
    args = build_parser().parse_args(["segment", "x.jpg", "-o", "o", "--format", "inverse"])
    assert args.fmt == "inverse"
    image = tmp_path / "photo.jpg"   # outside the repository: the output keeps its bare name
    shutil.copy(sorted((pets_dir / "images").glob("*.jpg"))[0], image)
    out = tmp_path / "out"
    result = segment(SegmentRequest((str(image),), str(out), SegmentSettings("inverse"),
                                    EngineOptions(model=tiny_onnx, providers="cpu"), progress=False))
    assert result.summary.done == 1
    import cv2
    written = cv2.imread(str(out / (image.name + ".png")), cv2.IMREAD_UNCHANGED)
    assert written.ndim == 2 and set(np.unique(written)) <= {0, 255}

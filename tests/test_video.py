"""`unetlite video` on real footage with the tiny real model: files, formats, smoothing,
live-mode frame dropping, bad sources, headless --show, Ctrl-C."""
from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import VIDEO
from unetlite.infer.cli import main
from unetlite.infer.session import Segmenter
from unetlite.infer.stream import LatestFrameReader, QueuedFrameReader, is_live, open_source
from unetlite.infer.video import VideoOptions, process_video

LONG = VIDEO / "vtest_people_768x576.mp4"    # H.264, 795 frames
SHORT = VIDEO / "vtest_people_short_384x288.mp4"  # mp4v, 100 frames


@pytest.fixture(scope="module")
def videos():
    if not (LONG.is_file() and SHORT.is_file()):
        pytest.skip(f"test videos not found in {VIDEO}")


@pytest.fixture(scope="module")
def segmenter(tiny_onnx):
    return Segmenter(tiny_onnx, providers="cpu", spin=False)


def source_props(path: Path) -> dict:
    cap = cv2.VideoCapture(str(path))
    props = {"fps": cap.get(cv2.CAP_PROP_FPS), "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
             "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    cap.release()
    return props


def decode_all(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Every frame a fresh cv2.VideoCapture decodes (the proof that a file is playable)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("source, max_frames, expected", [(LONG, 60, 60), (SHORT, None, 100)],
                         ids=["h264-long-60", "mp4v-short-all"])
def test_file_round_trip_keeps_count_size_and_fps(videos, tiny_onnx, tmp_path, capsys, source, max_frames, expected):
    out = tmp_path / "out.mp4"
    argv = ["video", str(source), "-o", str(out), "--model", str(tiny_onnx), "--providers", "cpu"]
    if max_frames:
        argv += ["--max-frames", str(max_frames)]
    assert main(argv) == 0
    frames = decode_all(out)
    src = source_props(source)
    assert len(frames) == expected
    assert frames[0].shape == (src["height"], src["width"], 3)
    assert source_props(out)["fps"] == pytest.approx(src["fps"])
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    assert f"{expected} frames read, {expected} segmented, 0 dropped" in line and str(out) in line
    assert leftovers(tmp_path) == []  # the temporary file was renamed, not left behind


def test_video_probability_matches_image_inference(videos, segmenter):
    """The video path (BGR frames, contract with flipped channels) feeds the model the same
    pixels as Segmenter.predict on the RGB frame."""
    seen = []
    process_video(segmenter, str(SHORT), options=VideoOptions(max_frames=3), on_frame=seen.append)
    assert [r.index for r in seen] == [0, 1, 2]
    for result in seen:
        expected = segmenter(cv2.cvtColor(result.image, cv2.COLOR_BGR2RGB)).probability
        np.testing.assert_allclose(result.probability, expected, atol=1e-5)


@pytest.mark.parametrize("fmt", ["overlay", "mask", "prob", "cutout", "side-by-side"])
def test_each_format_renders_and_encodes(videos, segmenter, tmp_path, fmt):
    first = decode_all(SHORT, 1)[0]
    # a threshold at the median of the first frame's probability gives both classes, whatever the model
    threshold = float(np.median(segmenter(cv2.cvtColor(first, cv2.COLOR_BGR2RGB)).probability))
    background = (255, 0, 255)
    seen = []
    out = tmp_path / f"{fmt}.avi"
    summary = process_video(segmenter, str(SHORT), out, VideoOptions(fmt=fmt, threshold=threshold, max_frames=8,
                                                                     background=background), on_frame=seen.append)
    assert summary.frames_segmented == 8 and summary.output == out
    r = seen[0]
    mask = r.probability >= threshold
    assert 0 < mask.mean() < 1
    height, width = first.shape[:2]
    if fmt == "overlay":
        assert np.array_equal(r.output[~mask], r.image[~mask])
        assert not np.array_equal(r.output[mask], r.image[mask])
    elif fmt == "mask":
        assert np.array_equal(r.output[..., 0], mask.astype(np.uint8) * 255)
    elif fmt == "prob":
        assert np.abs(r.output[..., 0].astype(float) - r.probability * 255).max() <= 1
    elif fmt == "cutout":
        assert np.array_equal(r.output[mask], r.image[mask])
        assert (r.output[~mask] == background[::-1]).all()  # written BGR
    else:
        assert r.output.shape == (height, 3 * width, 3)
        assert np.array_equal(r.output[:, :width], r.image)
    decoded = decode_all(out)
    assert len(decoded) == 8 and decoded[0].shape == r.output.shape
    # lossy codec: the file shows the rendered frame, not something else
    error = np.abs(decoded[0].astype(float) - r.output).mean()
    assert error < np.abs(decoded[0].astype(float) - decoded[0].mean()).mean() / 4


def test_smoothing_cuts_frame_to_frame_change(videos, segmenter):
    def probabilities(alpha: float) -> list[np.ndarray]:
        seen = []
        process_video(segmenter, str(SHORT), options=VideoOptions(smooth=alpha, max_frames=40), on_frame=seen.append)
        return [r.probability for r in seen]

    def flicker(probs: list[np.ndarray]) -> float:
        return float(np.mean([np.abs(b - a).mean() for a, b in zip(probs, probs[1:])]))

    raw, smooth = probabilities(0.0), probabilities(0.7)
    assert flicker(raw) > 0
    assert flicker(smooth) < 0.7 * flicker(raw)
    # it is the EMA p_t = a p_{t-1} + (1-a) p_new (bilinear resizing is linear, so it commutes)
    ema = raw[0]
    for new, got in zip(raw[1:], smooth[1:]):
        ema = 0.7 * ema + 0.3 * new
        np.testing.assert_allclose(got, ema, atol=1e-4)


def test_latest_frame_reader_gives_only_newer_frames_and_drops_stale_ones(videos):
    hashes = [hashlib.sha1(f.tobytes()).hexdigest() for f in decode_all(SHORT)]
    cap = open_source(str(SHORT))
    reader = LatestFrameReader(cap)  # a file read as fast as it decodes: faster than the consumer
    seen = []
    with reader:
        for index, frame in reader:
            assert reader.buffered <= 1
            assert hashlib.sha1(frame.tobytes()).hexdigest() == hashes[index]  # the index is honest
            seen.append(index)
            time.sleep(0.01)  # a slow model
    cap.release()
    assert all(b > a for a, b in zip(seen, seen[1:]))
    assert reader.frames_read == len(hashes)
    assert reader.dropped > 0 and reader.dropped + len(seen) == reader.frames_read
    assert seen[-1] == len(hashes) - 1  # the newest frame is never lost


@pytest.mark.parametrize("reader_class", [LatestFrameReader, QueuedFrameReader])
def test_readers_keep_memory_bounded_with_a_slow_consumer(videos, reader_class):
    cap = open_source(str(LONG))
    frame_bytes = 768 * 576 * 3
    limit = 100  # 100 frames held at once would be ~130 MB
    delay = 0.01  # a consumer slower than decoding
    tracemalloc.start()
    try:
        reader = reader_class(cap, limit=limit)
        seen = []
        with reader:
            for index, _ in reader:
                seen.append(index)
                time.sleep(delay)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        cap.release()
    assert reader.frames_read == limit
    assert peak < 10 * frame_bytes
    if reader_class is QueuedFrameReader:  # files: every frame, in order
        assert seen == list(range(limit)) and reader.dropped == 0
    else:
        assert reader.dropped > 0


def test_live_mode_on_a_file_is_paced_and_segments_newest_frames(videos, segmenter, tmp_path):
    out = tmp_path / "live.mp4"
    seen = []
    summary = process_video(segmenter, str(SHORT), out, VideoOptions(live=True, max_frames=5), on_frame=seen.append)
    assert summary.live and summary.frames_segmented == 5
    indices = [r.index for r in seen]
    assert all(b > a for a, b in zip(indices, indices[1:]))
    assert summary.frames_read == summary.frames_segmented + summary.dropped
    # paced at the file's 10 fps: 5 frames cannot take much less than 0.4 s
    assert summary.seconds >= 4 / source_props(SHORT)["fps"] * 0.9
    assert len(decode_all(out)) == 5


@pytest.mark.parametrize("spec, live", [("0", True), ("12", True), ("rtsp://cam.local/stream", True),
                                        ("https://example.org/a.mp4", True), ("clip.mp4", False),
                                        ("file:///tmp/clip.mp4", False), ("C:/videos/a.mp4", False)])
def test_source_kind(spec, live):
    assert is_live(spec) is live


@pytest.mark.parametrize("kind", ["missing", "not-a-video", "camera"])
def test_bad_source_is_one_line_exit_2(videos, tiny_onnx, tmp_path, capsys, kind):
    if kind == "missing":
        source = str(tmp_path / "nope.mp4")
    elif kind == "not-a-video":
        source = str(tmp_path / "notes.mp4")
        Path(source).write_text("this is text, not a video\n")
    else:
        source = "97"  # no machine has camera 97
    out = tmp_path / "out.mp4"
    assert main(["video", source, "-o", str(out), "--model", str(tiny_onnx)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and source in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_show_without_a_display_says_so(videos, tiny_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("headless detection by DISPLAY is Linux-only")
    base = ["video", str(SHORT), "--model", str(tiny_onnx), "--show", "--max-frames", "3"]
    assert main(base) == 2  # --show was the only output
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--show" in err and "display" in err.lower()
    out = tmp_path / "out.mp4"
    assert main(base + ["-o", str(out)]) == 0  # goes on writing the file
    captured = capsys.readouterr()
    assert "--show" in captured.err and "3 segmented" in captured.out
    assert len(decode_all(out)) == 3


def test_interrupt_mid_run_saves_a_playable_file(videos, segmenter, tmp_path):
    out = tmp_path / "cut.mp4"

    def ctrl_c_after_7(result):
        if result.index == 6:
            raise KeyboardInterrupt

    summary = process_video(segmenter, str(LONG), out, on_frame=ctrl_c_after_7)
    assert summary.interrupted and summary.frames_segmented == 7 and summary.output == out
    frames = decode_all(out)
    assert len(frames) == 7 and frames[0].shape == (576, 768, 3)
    assert leftovers(tmp_path) == []


def test_crash_mid_run_leaves_no_file(videos, segmenter, tmp_path):
    out = tmp_path / "crash.mp4"

    def fail_at_3(result):
        if result.index == 3:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        process_video(segmenter, str(SHORT), out, on_frame=fail_at_3)
    assert list(tmp_path.iterdir()) == []


def test_real_ctrl_c_exits_130_with_the_frames_done(videos, tiny_onnx, tmp_path):
    """SIGINT to a real process, in live mode (paced at the file's 10 fps like a camera, so the run
    lasts 80 s whatever the machine's speed, and Ctrl-C mostly lands while waiting for a frame)."""
    out = tmp_path / "sigint.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "unetlite.infer.cli", "video", str(LONG), "-o", str(out),
                             "--model", str(tiny_onnx), "--providers", "cpu", "--live"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the temporary file appears with the first frame
    time.sleep(0.5)  # a few more frames
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    done = int(re.search(r"(\d+) segmented", stdout).group(1))
    assert "(interrupted)" in stdout and 0 < done < 795
    assert len(decode_all(out)) == done
    assert leftovers(tmp_path) == []


def test_output_extension_and_missing_output_are_usage_errors(videos, tiny_onnx, tmp_path, capsys):
    assert main(["video", str(SHORT), "-o", str(tmp_path / "a.gif"), "--model", str(tiny_onnx)]) == 2
    assert main(["video", str(SHORT), "--model", str(tiny_onnx)]) == 2
    assert "-o OUT" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

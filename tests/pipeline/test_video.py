"""`unetlite video` on real footage with the tiny real model: files, formats, smoothing,
live-mode frame dropping and wall-time writing, bad sources and outputs, a full disk,
signals, killed runs, truncated files and a network stream that drops (real loopback server).

Every video comes from the `video_dir` fixture (the 100-frame clip is always there); tests on
the long H.264 clip need the full shared data and skip without it.
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetlite.infer.cli import main
from unetlite.infer.engine.segmenter import Segmenter
from unetlite.infer.io.sources import LatestFrameReader, QueuedFrameReader, is_live, open_source, reconnect_delays
from unetlite.infer.pipeline.frames import FramePipeline, VideoOptions, process_video

from pipeline.mjpeg import MjpegServer, jpeg

SHORT_NAME = "vtest_people_short_384x288.mp4"  # mp4v, 100 frames, 10 fps: always in the fixture set
LONG_NAME = "vtest_people_768x576.mp4"         # H.264, 795 frames, moov before mdat: full data only
CLI = [sys.executable, "-m", "unetlite.infer.cli", "video"]


@pytest.fixture(scope="module")
def short(video_dir) -> Path:
    return video_dir / SHORT_NAME


@pytest.fixture
def long(full_data, video_dir) -> Path:
    return video_dir / LONG_NAME


@pytest.fixture(scope="module")
def segmenter(tiny_onnx):
    return Segmenter(tiny_onnx, providers="cpu", spin=False)


def source_props(path: Path) -> dict:
    cap = cv2.VideoCapture(str(path))
    props = {"fps": cap.get(cv2.CAP_PROP_FPS), "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
             "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), "count": int(cap.get(cv2.CAP_PROP_FRAME_COUNT))}
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


def wait_for_frames_on_disk(proc: subprocess.Popen, folder: Path, timeout: float = 60) -> None:
    """Until the run's temp video holds data (the empty probe file made at start-up does not count)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in folder.iterdir() if p.name.startswith(".")):
            return
        time.sleep(0.02)
    raise AssertionError(f"no frames written within {timeout} s (exit code {proc.poll()})")


def written_frames(stdout: str) -> int:
    """The live summary's '(N frames at F fps = S s, wall time)'."""
    return int(re.search(r"\((\d+) frames at", stdout).group(1))


# ---------------------------------------------------------------- files, formats, smoothing

@pytest.mark.parametrize("name, max_frames, expected", [
    pytest.param(LONG_NAME, 60, 60, marks=pytest.mark.full_data, id="h264-long-60"),
    pytest.param(SHORT_NAME, None, 100, id="mp4v-short-all")])
def test_file_round_trip_keeps_count_size_and_fps(video_dir, tiny_onnx, tmp_path, capsys, name, max_frames, expected):
    source = video_dir / name
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
    assert "declared" not in line  # a complete file is not reported as short
    assert leftovers(tmp_path) == []  # the temporary file was renamed, not left behind


def test_video_uses_the_shared_postprocessing(short, segmenter):
    """The video path (BGR frames, contract with flipped channels, shared postprocess) gives the
    same probability and mask as Segmenter on the RGB frame."""
    seen = []
    process_video(segmenter, str(short), options=VideoOptions(max_frames=3), on_frame=seen.append)
    assert [r.index for r in seen] == [0, 1, 2]
    for result in seen:
        expected = segmenter(cv2.cvtColor(result.image, cv2.COLOR_BGR2RGB))
        np.testing.assert_allclose(result.probability, expected.probability, atol=1e-5)
        assert result.mask.shape == result.image.shape[:2]
        # identical wherever the probability is not within float noise of the threshold
        clear = np.abs(expected.probability - expected.threshold) > 1e-4
        assert np.array_equal(result.mask[clear], expected.mask[clear])


@pytest.mark.parametrize("edge", ["hard", "soft"])
@pytest.mark.parametrize("fmt", ["overlay", "mask", "prob", "cutout", "side-by-side"])
def test_each_format_renders_and_encodes(short, segmenter, tmp_path, fmt, edge):
    first = decode_all(short, 1)[0]
    # a threshold at the median of the first frame's probability gives both classes, whatever the model
    threshold = float(np.median(segmenter(cv2.cvtColor(first, cv2.COLOR_BGR2RGB)).probability))
    background = (255, 0, 255)
    seen = []
    out = tmp_path / f"{fmt}.avi"
    summary = process_video(segmenter, str(short), out, VideoOptions(fmt=fmt, threshold=threshold, max_frames=8,
                                                                     background=background, edge=edge),
                            on_frame=seen.append)
    assert summary.frames_segmented == 8 and summary.output == out
    r = seen[0]
    mask = r.probability >= threshold
    assert np.array_equal(r.mask, mask)
    assert 0 < mask.mean() < 1
    height, width = first.shape[:2]
    if edge == "soft" and fmt in ("overlay", "cutout"):  # guided-filter alpha: hard far from the edge, blended near it
        from unetlite.infer.engine.alpha import soft_alpha
        alpha = soft_alpha(r.image, r.mask)
        mask, inside = alpha > 0, alpha == 1
        assert 0.001 < ((alpha > 0) & (alpha < 1)).mean() < 0.5
    else:
        inside = mask
    if fmt == "overlay":
        assert np.array_equal(r.output[~mask], r.image[~mask])
        assert not np.array_equal(r.output[inside], r.image[inside])
    elif fmt == "mask":
        assert np.array_equal(r.output[..., 0], mask.astype(np.uint8) * 255)
    elif fmt == "prob":
        assert np.abs(r.output[..., 0].astype(float) - r.probability * 255).max() <= 1
    elif fmt == "cutout":
        assert np.array_equal(r.output[inside], r.image[inside])
        assert (r.output[~mask] == background[::-1]).all()  # written BGR
    else:
        assert r.output.shape == (height, 3 * width, 3)
        assert np.array_equal(r.output[:, :width], r.image)
    decoded = decode_all(out)
    assert len(decoded) == 8 and decoded[0].shape == r.output.shape
    # lossy codec: the file shows the rendered frame, not something else
    error = np.abs(decoded[0].astype(float) - r.output).mean()
    assert error < np.abs(decoded[0].astype(float) - decoded[0].mean()).mean() / 4


def test_smoothing_cuts_frame_to_frame_change(short, segmenter):
    def probabilities(alpha: float) -> list[np.ndarray]:
        seen = []
        process_video(segmenter, str(short), options=VideoOptions(smooth=alpha, max_frames=40), on_frame=seen.append)
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


# ---------------------------------------------------------------- readers and live mode

def test_latest_frame_reader_gives_only_newer_frames_and_drops_stale_ones(short):
    hashes = [hashlib.sha1(f.tobytes()).hexdigest() for f in decode_all(short)]
    cap = open_source(str(short))
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
def test_readers_keep_memory_bounded_with_a_slow_consumer(short, reader_class):
    cap = open_source(str(short))
    frame_bytes = 384 * 288 * 3
    limit = 100  # 100 frames held at once would be ~33 MB
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


def test_frames_reach_the_model_in_its_own_input_type(short, segmenter, monkeypatch):
    """A uint8-input model gets uint8 pixels (no float round trip), and a BGR frame gives exactly
    what Segmenter.predict gives for the same picture in RGB."""
    cap = cv2.VideoCapture(str(short))
    ok, bgr = cap.read()
    cap.release()
    assert ok and segmenter.input_dtype == "uint8"  # the fixture model is a current (uint8-input) export
    expected = segmenter.predict([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])[0]
    fed, run = [], segmenter.run
    monkeypatch.setattr(segmenter, "run", lambda batch, tta=False: fed.append(batch.dtype) or run(batch, tta=tta))
    seg = FramePipeline(segmenter, VideoOptions(fmt="mask")).segment(bgr)
    assert fed == [np.uint8]
    np.testing.assert_array_equal(seg.probability, expected.probability)
    np.testing.assert_array_equal(seg.mask, expected.mask)


def test_live_mode_on_a_file_is_paced_and_segments_newest_frames(short, segmenter, tmp_path):
    out = tmp_path / "live.mp4"
    seen = []
    summary = process_video(segmenter, str(short), out, VideoOptions(live=True, max_frames=5), on_frame=seen.append)
    assert summary.live and summary.frames_segmented == 5
    indices = [r.index for r in seen]
    assert all(b > a for a, b in zip(indices, indices[1:]))
    assert summary.frames_read == summary.frames_segmented + summary.dropped
    # paced at the file's 10 fps: 5 frames cannot take much less than 0.4 s
    assert summary.seconds >= 4 / source_props(short)["fps"] * 0.9
    # the file holds every wall-time slot written; how many there are depends on when the first
    # frame came out of the model (a slow first inference shortens the span), so only >= 1 is certain
    assert len(decode_all(out)) == summary.frames_written >= 1


def test_live_file_lasts_as_long_as_the_capture_whatever_was_dropped(short, segmenter, tmp_path):
    """A model far slower than the source (a 0.25 s step at 10 fps) drops most frames; the file is
    still written by wall time: its duration matches the time the capture ran, not the frames kept."""
    out = tmp_path / "live.mp4"
    fps = source_props(short)["fps"]
    times: list[float] = []

    def slow_model(result) -> None:
        times.append(time.monotonic())
        time.sleep(0.25)

    summary = process_video(segmenter, str(short), out, VideoOptions(live=True), on_frame=slow_model)
    returned = time.monotonic()
    written = len(decode_all(out))
    assert written == summary.frames_written
    assert summary.dropped > summary.frames_segmented  # most frames were dropped...
    assert summary.frames_segmented < 0.6 * written     # ...and would have made a file far too short
    duration = written / fps
    # the file spans from the first frame's write to the end of the run, within a frame slot or two
    assert times[-1] + 0.25 - times[0] - 2 / fps <= duration <= returned - times[0] + 2 / fps
    assert source_props(out)["fps"] == pytest.approx(fps)


@pytest.mark.parametrize("spec, live", [("0", True), ("12", True), ("rtsp://cam.local/stream", True),
                                        ("https://example.org/a.mp4", True), ("clip.mp4", False),
                                        ("file:///tmp/clip.mp4", False), ("C:/videos/a.mp4", False)])
def test_source_kind(spec, live):
    assert is_live(spec) is live


# ---------------------------------------------------------------- bad sources, bad outputs

@pytest.mark.parametrize("kind", ["missing", "not-a-video", "camera", "cut-mp4-without-index"])
def test_bad_source_is_one_line_exit_2(short, tiny_onnx, tmp_path, capsys, kind):
    if kind == "missing":
        source = str(tmp_path / "nope.mp4")
    elif kind == "not-a-video":
        source = str(tmp_path / "notes.mp4")
        Path(source).write_text("this is text, not a video\n")
    elif kind == "camera":
        source = "97"  # no machine has camera 97
    else:  # this clip keeps its index (moov) at the end: cut short, nothing can play it
        source = str(tmp_path / "cut.mp4")
        data = short.read_bytes()
        Path(source).write_bytes(data[:len(data) // 2])
    out = tmp_path / "out.mp4"
    assert main(["video", source, "-o", str(out), "--model", str(tiny_onnx)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and source in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_output_extension_missing_output_folder_and_folder_as_output_are_usage_errors(short, tiny_onnx, tmp_path,
                                                                                     capsys):
    model = ["--model", str(tiny_onnx)]
    assert main(["video", str(short), "-o", str(tmp_path / "a.wmv")] + model) == 2
    assert main(["video", str(short)] + model) == 2
    assert "-o OUT" in capsys.readouterr().err
    assert main(["video", str(short), "-o", str(tmp_path / "missing" / "out.mp4")] + model) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "taken.mp4").mkdir()
    assert main(["video", str(short), "-o", str(tmp_path / "taken.mp4")] + model) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.mp4"]


def private_tmpfs_works() -> bool:
    """A private mount namespace (unshare -Urm) lets a test mount a tiny or read-only file system
    without changing the machine; no root needed where user namespaces are enabled."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode == 0


def run_on_private_tmpfs(options: str, folder: Path, argv: list[str]) -> tuple[int, str, str, list[str]]:
    """Run argv with a fresh tmpfs (mount ``options``) on ``folder``; returns the exit code, stdout,
    stderr and what the folder held afterwards (the mount vanishes with the namespace)."""
    script = ('opts=$0; dir=$1; shift; mount -t tmpfs -o "$opts" tmpfs "$dir" || exit 99; '
              '"$@"; rc=$?; echo "LISTING:$(ls -A "$dir" | tr "\\n" "/")"; exit $rc')
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script, options, str(folder)] + argv,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 99, proc.stderr
    body, _, listing = proc.stdout.rpartition("LISTING:")
    return proc.returncode, body, proc.stderr, [n for n in listing.strip().split("/") if n]


def test_output_into_a_read_only_folder_is_one_line_exit_2(short, tiny_onnx, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    argv = CLI + [str(short), "-o", str(folder / "out.mp4"), "--model", str(tiny_onnx)]
    if os.geteuid() != 0:  # permission bits stop everyone but root
        folder.chmod(0o555)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        finally:
            folder.chmod(0o755)
        code, err, listing = proc.returncode, proc.stderr, os.listdir(folder)
    elif private_tmpfs_works():  # root: a read-only mount
        code, _, err, listing = run_on_private_tmpfs("ro", folder, argv)
    else:
        pytest.skip("running as root and cannot mount a read-only file system here (unshare -Urm failed)")
    assert code == 2, err
    err = err.strip()
    assert len(err.splitlines()) == 1 and "out.mp4" in err and "Traceback" not in err
    assert listing == []


def test_full_disk_by_file_size_limit_is_exit_1_and_no_file(short, tiny_onnx, tmp_path):
    """RLIMIT_FSIZE makes every write past 150 kB fail (EFBIG) exactly as a full disk fails them;
    the ~360 kB video cannot be finished. Before the fix this exited 0 with an unplayable file."""
    limit = 150_000

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out.mp4"
    proc = subprocess.run(CLI + [str(short), "-o", str(out), "--model", str(tiny_onnx), "--providers", "cpu"],
                          capture_output=True, text=True, timeout=300, preexec_fn=small_disk)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "disk full?" in err and "Traceback" not in err
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing under the final name, no temp file


def test_full_file_system_is_exit_1_and_no_file(short, tiny_onnx, tmp_path):
    """A real 60 kB tmpfs (private mount namespace): ENOSPC while the video is written (the whole
    H.264 clip takes about 150 kB)."""
    if not private_tmpfs_works():
        pytest.skip("cannot mount a private tmpfs here (unshare -Urm failed); the RLIMIT_FSIZE test covers it")
    folder = tmp_path / "small"
    folder.mkdir()
    out = folder / "out.mp4"
    code, stdout, err, listing = run_on_private_tmpfs(
        "size=60k", folder, CLI + [str(short), "-o", str(out), "--model", str(tiny_onnx), "--providers", "cpu"])
    assert code == 1, err
    assert re.fullmatch(rf"unetlite video: {re.escape(str(out))}: the written video "
                        r"(could not be reopened|holds \d+ of the \d+ frames written) \(disk full\?\)", err.strip())
    assert stdout == "" and listing == []


def test_truncated_source_reports_decoded_against_declared_and_exits_1(short, tiny_onnx, tmp_path, capsys):
    """A file cut in half whose container keeps its index before the cut (Matroska made from the
    real clip): it opens and declares 100 frames, but only about half decode."""
    full = tmp_path / "clip.mkv"
    frames = decode_all(short)
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"mp4v"), 10, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    check_truncated_run(cut, tiny_onnx, tmp_path, capsys)


def test_truncated_h264_mp4_reports_decoded_against_declared(long, tiny_onnx, tmp_path, capsys):
    """The H.264 MP4 keeps its index (moov) at the start: cut to a fifth, it opens and declares 795."""
    cut = tmp_path / "cut.mp4"
    data = long.read_bytes()
    cut.write_bytes(data[:len(data) // 5])
    check_truncated_run(cut, tiny_onnx, tmp_path, capsys)


def check_truncated_run(cut: Path, tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    declared = source_props(cut)["count"]
    decodable = len(decode_all(cut))
    assert 0 < decodable < 0.9 * declared  # the premise: a really truncated file
    out = tmp_path / "out.mp4"
    assert main(["video", str(cut), "-o", str(out), "--model", str(tiny_onnx), "--format", "mask"]) == 1
    line = capsys.readouterr().out.strip()
    assert f"decoded {decodable} of {declared} frames the container declared" in line
    assert len(decode_all(out)) == decodable  # what could be decoded is saved and playable


# ---------------------------------------------------------------- signals and killed runs

def test_interrupt_mid_run_saves_a_playable_file(short, segmenter, tmp_path):
    out = tmp_path / "cut.mp4"

    def ctrl_c_after_7(result):
        if result.index == 6:
            raise KeyboardInterrupt

    summary = process_video(segmenter, str(short), out, on_frame=ctrl_c_after_7)
    assert summary.interrupted and summary.frames_segmented == 7 and summary.output == out
    assert summary.exit_code == 130
    frames = decode_all(out)
    assert len(frames) == 7 and frames[0].shape == (288, 384, 3)
    assert leftovers(tmp_path) == []


def test_crash_mid_run_leaves_no_file(short, segmenter, tmp_path):
    out = tmp_path / "crash.mp4"

    def fail_at_3(result):
        if result.index == 3:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        process_video(segmenter, str(short), out, on_frame=fail_at_3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_real_signal_saves_a_playable_file_and_exits_128_plus_signal(short, tiny_onnx, tmp_path, signum):
    """A real signal to a real process, in live mode (paced at the file's 10 fps like a camera, so
    the run lasts 10 s whatever the machine's speed). SIGTERM (service stop) and SIGHUP (terminal
    closed) must finish like Ctrl-C: before the fix they killed the run and left only a temp file."""
    out = tmp_path / "sig.mp4"

    def default_signals() -> None:  # a test runner started with nohup or in the background ignores them
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    proc = subprocess.Popen(CLI + [str(short), "-o", str(out), "--model", str(tiny_onnx), "--providers", "cpu",
                                   "--live"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    wait_for_frames_on_disk(proc, tmp_path)
    time.sleep(0.5)  # a few more frames
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert "(interrupted" in stdout
    done = int(re.search(r"(\d+) segmented", stdout).group(1))
    assert 0 < done < 100
    assert len(decode_all(out)) == written_frames(stdout) > 0
    assert leftovers(tmp_path) == []


def test_next_run_removes_the_temp_file_of_a_killed_run(short, tiny_onnx, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(CLI + [str(short), "-o", str(out), "--model", str(tiny_onnx), "--providers", "cpu",
                                   "--live"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_frames_on_disk(proc, tmp_path)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.wait(timeout=60)
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and not out.exists()
    # a user's hidden file and the temp of a run still going (this process) must survive
    mine = tmp_path / ".out.mp4.notes"
    mine.write_text("not ours")
    running = tmp_path / f".other.mp4.unetlite-{os.getpid()}-abcdefgh.tmp.mp4"
    running.write_bytes(b"in progress")
    assert main(["video", str(short), "-o", str(out), "--model", str(tiny_onnx), "--max-frames", "3"]) == 0
    assert sorted(leftovers(tmp_path)) == sorted([mine.name, running.name])
    assert len(decode_all(out)) == 3


# ---------------------------------------------------------------- network stream that drops

def next_frames_per_connection(frames: list[np.ndarray], per_connection: int, good: int) -> list[list[bytes]]:
    """Each of the first ``good`` connections gets the next ``per_connection`` frames of the clip (looping)."""
    jpegs = [jpeg(f) for f in frames]
    return [[jpegs[(k * per_connection + i) % len(jpegs)] for i in range(per_connection)] for k in range(good)]


def test_reconnect_delays_double_up_to_a_cap():
    assert reconnect_delays(5, first=0.5, cap=4.0) == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert reconnect_delays(0) == []


def test_stream_that_drops_is_reconnected_then_reported_as_ended(short, tiny_onnx, tmp_path):
    out = tmp_path / "stream.mp4"
    with MjpegServer(next_frames_per_connection(decode_all(short), per_connection=25, good=2)) as server:
        proc = subprocess.run(CLI + [server.url, "-o", str(out), "--model", str(tiny_onnx), "--providers", "cpu",
                                     "--reconnect", "2"], capture_output=True, text=True, timeout=120)
        requests = server.requests
    assert proc.returncode == 1, proc.stderr
    line = proc.stdout.strip()
    assert len(line.splitlines()) == 1
    got = re.search(r"stream ended after (\d+) frames; reconnected (\d+) times", line)
    assert got, line
    frames, reconnects = int(got.group(1)), int(got.group(2))
    assert reconnects == 1                  # the second connection was taken up...
    assert 25 < frames <= 50                # ...and delivered frames the first one never sent
    assert requests == 1 + 1 + 2            # first open, one good reconnection, two failed attempts
    assert "Traceback" not in proc.stderr
    assert len(decode_all(out)) == written_frames(line) > 0  # what came in is saved and playable

"""Backgrounds, soft edges, PyAV output (H.264 mp4, VP9 webm with alpha, GIF/WebP), several streams,
pipes, and the video items of the hostile-input round (frame-size limit, a stream that changes
resolution), on real footage with the tiny real model. Each output is decoded back and checked.
"""
from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("av")

from unetlite.infer.engine.alpha import blend, guided_filter, soft_alpha  # noqa: E402
from unetlite.infer.engine.segmenter import Segmenter  # noqa: E402
from unetlite.infer.io import video_av  # noqa: E402
from unetlite.infer.pipeline.backgrounds import BackgroundSpec, blurred, cover, parse_background  # noqa: E402
from unetlite.infer.pipeline.frames import VideoOptions, process_video  # noqa: E402

from pipeline.mjpeg import MjpegServer, jpeg  # noqa: E402

SHORT_NAME = "vtest_people_short_384x288.mp4"
CLI = [sys.executable, "-m", "unetlite.infer.cli", "video"]


@pytest.fixture(scope="module")
def short(video_dir) -> Path:
    return video_dir / SHORT_NAME


@pytest.fixture(scope="module")
def segmenter(tiny_onnx):
    return Segmenter(tiny_onnx, providers="cpu", spin=False)


@pytest.fixture(scope="module")
def backdrop(tmp_path_factory, pets_dir) -> Path:
    """A real photo (a fixture pet) used as the replacement background."""
    image = sorted((pets_dir / "images").glob("*.jpg"))[0]
    path = tmp_path_factory.mktemp("bg") / "backdrop.jpg"
    shutil.copyfile(image, path)
    return path


def ffmpeg_binary() -> str | None:
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except ImportError:
        return None


def run_collect(segmenter, source, out, options) -> tuple[list, object]:
    results = []
    summary = process_video(segmenter, str(source), out, options,
                            on_frame=lambda r: results.append((r.image.copy(), r.mask.copy())))
    return results, summary


# ---------------------------------------------------------------- soft edges

def test_guided_filter_follows_the_picture_edge_and_is_exact_far_from_it():
    """The model's edge is 4 px off the picture's (either way): the alpha's step moves to the picture's edge."""
    h, w = 120, 160
    picture = np.zeros((h, w), np.uint8)
    picture[:, 80:] = 255                    # the real edge at x = 80
    for model_edge in (84, 76):
        mask = np.zeros((h, w), np.uint8)
        mask[:, model_edge:] = 1
        alpha = soft_alpha(picture, mask, radius=6, eps=1e-4)
        assert alpha[:, :50].max() == 0.0 and alpha[:, 110:].min() == 1.0    # exact away from the edge
        steps = np.diff(alpha[0])
        assert steps.argmax() + 1 == 80 and steps.max() > 0.3                # the biggest step is the picture's
        assert abs(steps[model_edge - 1]) < 0.1                              # not the mask's


def test_fast_guided_filter_matches_the_full_resolution_one(short):
    cap = cv2.VideoCapture(str(short))
    ok, frame = cap.read()
    cap.release()
    big = cv2.resize(frame, (1280, 960))
    mask = np.zeros(big.shape[:2], np.uint8)
    cv2.ellipse(mask, (640, 480), (300, 200), 0, 0, 360, 1, -1)
    grey = cv2.cvtColor(big, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    exact = np.clip(guided_filter(grey, mask.astype(np.float32), 8, work_side=None), 0, 1)
    fast = soft_alpha(big, mask, radius=8)
    assert np.abs(fast - exact).mean() < 0.005


def test_blend_is_exactly_background_and_foreground_where_alpha_is_0_and_1():
    rng = np.random.default_rng(0)
    fg = rng.integers(0, 256, (40, 50, 3), np.uint8)
    bg = rng.integers(0, 256, (40, 50, 3), np.uint8)
    alpha = np.zeros((40, 50), np.float32)
    alpha[:, 25:] = 1
    alpha[:, 20:25] = 0.5
    out = blend(fg, bg, alpha)
    assert (out[:, :20] == bg[:, :20]).all() and (out[:, 25:] == fg[:, 25:]).all()


def test_background_argument_forms(backdrop, short):
    assert parse_background("blur") == BackgroundSpec("blur")
    assert parse_background("blur:7").strength == 7
    assert parse_background("0,255,0").color == (0, 255, 0)
    assert parse_background(str(backdrop)).kind == "image"
    assert parse_background(str(short)).kind == "video"
    for bad in ("blur:0", "blur:x", "1,2", "300,0,0", "no/such/file.png"):
        with pytest.raises(Exception):
            parse_background(bad)


# ---------------------------------------------------------------- backgrounds on real footage

def test_replaced_background_is_the_image_where_the_mask_is_0_in_a_browser_mp4(short, segmenter, backdrop, tmp_path):
    out = tmp_path / "replaced.mp4"
    options = VideoOptions(fmt="composite", scene=parse_background(str(backdrop)), max_frames=20)
    results, summary = run_collect(segmenter, short, out, options)
    assert summary.output == out and summary.frames_segmented == 20
    assert video_av.codec_name(out) == "h264"
    decoded = video_av.decode_frames(out)
    assert len(decoded) == 20 and decoded[0].shape == results[0][0].shape
    replacement = cover(cv2.imread(str(backdrop)), *decoded[0].shape[:2]).astype(int)
    checked = 0
    for (frame, mask), got in zip(results, decoded):
        alpha = soft_alpha(frame, mask)
        background = alpha == 0
        assert background.mean() > 0.2
        assert np.abs(got.astype(int) - replacement)[background].mean() < 6    # H.264 loss only
        if (alpha == 1).sum() > 500:
            assert np.abs(got.astype(int) - frame)[alpha == 1].mean() < 8      # the subject untouched
            checked += 1
    assert checked > 0


def test_blurred_background_loses_detail_where_the_mask_is_0(short, segmenter, tmp_path):
    out = tmp_path / "blurred.mp4"
    results, summary = run_collect(segmenter, short, out, VideoOptions(scene=parse_background("blur:4"),
                                                                        max_frames=10))
    decoded = video_av.decode_frames(out)
    assert len(decoded) == 10
    for (frame, mask), got in zip(results, decoded):
        background = soft_alpha(frame, mask) == 0
        sharp = cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.CV_64F)[background].var()
        soft = cv2.Laplacian(cv2.cvtColor(got, cv2.COLOR_BGR2GRAY), cv2.CV_64F)[background].var()
        assert soft < 0.25 * sharp


def test_looping_video_background_fills_every_frame(short, segmenter, tmp_path, video_dir):
    out = tmp_path / "video_bg.mp4"
    results, summary = run_collect(segmenter, short, out, VideoOptions(scene=parse_background(str(short)),
                                                                        max_frames=5))
    assert len(video_av.decode_frames(out)) == 5


def test_blur_costs_the_same_whatever_the_strength():
    frame = np.random.default_rng(1).integers(0, 256, (720, 1280, 3), np.uint8)
    for strength in (1, 10, 40):
        out = blurred(frame, strength)
        assert out.shape == frame.shape and out.std() < frame.std()


# ---------------------------------------------------------------- alpha and animated outputs

def test_transparent_webm_alpha_matches_the_mask(short, segmenter, tmp_path):
    out = tmp_path / "cutout.webm"
    results, summary = run_collect(segmenter, short, out, VideoOptions(fmt="composite", transparent=True,
                                                                        max_frames=12))
    assert video_av.codec_name(out) == "vp9"
    decoded = video_av.decode_frames(out, alpha=True)
    assert len(decoded) == 12 and decoded[0].shape == (*results[0][0].shape[:2], 4)
    for (frame, mask), got in zip(results, decoded):
        expected = (soft_alpha(frame, mask) * 255).astype(int)
        assert np.abs(got[..., 3].astype(int) - expected).mean() < 8
        assert ((got[..., 3] >= 128) == (mask > 0)).mean() > 0.97
        assert got[..., :3][got[..., 3] == 0].mean() < 16        # nothing of the background kept under alpha 0


def test_gif_round_trips_and_reads_back_as_a_source(short, segmenter, tmp_path):
    gif = tmp_path / "clip.gif"
    results, summary = run_collect(segmenter, short, gif, VideoOptions(fmt="overlay", max_frames=10))
    decoded = video_av.decode_frames(gif)
    assert len(decoded) == 10 and decoded[0].shape == results[0][0].shape
    again = tmp_path / "again.mp4"
    summary = process_video(segmenter, str(gif), again, VideoOptions(fmt="overlay"))
    assert summary.frames_segmented == 10 and len(video_av.decode_frames(again)) == 10


def test_transparent_gif_and_webp(short, segmenter, tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    for name in ("cut.gif", "cut.webp"):
        out = tmp_path / name
        results, _ = run_collect(segmenter, short, out, VideoOptions(fmt="composite", transparent=True, max_frames=6))
        with Image.open(out) as image:
            assert image.n_frames == 6
            image.seek(3)
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
        assert ((alpha >= 128) == (results[3][1] > 0)).mean() > 0.95


def test_without_the_extra_the_opencv_writer_stays_and_the_message_names_it(tmp_path, monkeypatch):
    from unetlite.infer.io.sinks import VideoSink, VideoWriteError
    monkeypatch.setattr(video_av, "have_av", lambda: False)
    assert isinstance(video_av.open_sink(tmp_path / "a.mp4", 10), VideoSink)
    with pytest.raises(VideoWriteError, match=r"\[video\].*H.264"):
        video_av.open_sink(tmp_path / "a.webm", 10)


# ---------------------------------------------------------------- the command line: several streams, pipes

def three_clips(video_dir: Path, tmp_path: Path) -> list[Path]:
    names = ["cat_closeup_640x360.mp4", "dog_leash_1280x720.mp4", SHORT_NAME]
    clips = [video_dir / n for n in names if (video_dir / n).is_file()]
    while len(clips) < 3:  # fixture set only: copies of the short clip under other names
        copy = tmp_path / f"copy{len(clips)}.mp4"
        shutil.copyfile(video_dir / SHORT_NAME, copy)
        clips.append(copy)
    return clips


def test_three_streams_one_model_three_correct_outputs(video_dir, tiny_onnx, tmp_path):
    clips = three_clips(video_dir, tmp_path)
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = subprocess.run(CLI + [*map(str, clips), "-o", f"{outdir}/", "--background", "blur", "--max-frames", "15",
                                 "--model", str(tiny_onnx), "--providers", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and "3 streams" in lines[-1] and "frames per batch" in lines[-1]
    for clip, line in zip(clips, lines):
        assert line.startswith(f"{clip}: ") and " fps, output " in line
        out = outdir / f"{clip.stem}.mp4"
        frames = video_av.decode_frames(out)
        cap = cv2.VideoCapture(str(clip))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
        cap.release()
        assert len(frames) == 15 and frames[0].shape[:2] == size
        assert video_av.codec_name(out) == "h264"
    assert "Traceback" not in proc.stderr


def test_ffmpeg_pipe_in_and_out(short, tiny_onnx, tmp_path):
    ffmpeg = ffmpeg_binary()
    if ffmpeg is None:
        pytest.skip("no ffmpeg binary (apt-get install ffmpeg, or pip install imageio-ffmpeg)")
    ffprobe = shutil.which("ffprobe")
    unet = " ".join(CLI)
    tail = (f"{ffprobe} -v error -count_frames -select_streams v:0 -show_entries stream=codec_name,width,height,"
            f"nb_read_frames -of csv=p=0 -" if ffprobe else f"cat > {tmp_path}/piped.mkv")
    command = (f"{ffmpeg} -v error -i {short} -f matroska - | {unet} - --background blur -o - --model {tiny_onnx} "
               f"--providers cpu | {tail}")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    if ffprobe:
        assert proc.stdout.strip() == "h264,384,288,100"
    else:
        assert len(video_av.decode_frames(tmp_path / "piped.mkv")) == 100
    assert "100 segmented" in proc.stderr and "Traceback" not in proc.stderr


def test_raw_frames_on_stdin_with_size(short, tiny_onnx, tmp_path):
    cap = cv2.VideoCapture(str(short))
    raw = b""
    for _ in range(8):
        ok, frame = cap.read()
        raw += frame.tobytes()
    cap.release()
    out = tmp_path / "raw.mp4"
    proc = subprocess.run(CLI + ["-", "--size", "384x288", "--fps", "10", "-o", str(out), "--model", str(tiny_onnx),
                                 "--providers", "cpu"], input=raw, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(video_av.decode_frames(out)) == 8


# ---------------------------------------------------------------- hostile inputs (issue 16)

def make_mjpeg_bomb(path: Path, side: int = 16000, frames: int = 8) -> None:
    """A real mp4 holding ``frames`` real side x side MJPEG frames (a few MB: flat grey), muxed
    without decoding anything big here (one grey plane is encoded once)."""
    import av
    from fractions import Fraction
    ok, jpeg = cv2.imencode(".jpg", np.full((side, side), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 5])
    assert ok
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width = stream.height = side
        stream.pix_fmt = "yuvj420p"
        for k in range(frames):
            packet = av.Packet(jpeg.tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, k, k, Fraction(1, 1)
            container.mux(packet)


PEAK_RSS = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def test_huge_mjpeg_frames_are_refused_in_one_line_before_decoding(tiny_onnx, tmp_path):
    """An mp4 with eight 16000x16000 MJPEG frames: exit 2, one line, peak RSS far under 1.5 GB
    (the size comes from the container's header; no frame is decoded)."""
    bomb = tmp_path / "bomb.mp4"
    make_mjpeg_bomb(bomb)
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, *CLI, str(bomb), "-o", str(tmp_path / "out.mp4"),
                           "--model", str(tiny_onnx), "--providers", "cpu"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    *lines, peak = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "16000x16000" in lines[0] and "--max-pixels" in lines[0]
    assert int(peak) < 1_500_000, f"peak RSS {int(peak) / 1e6:.2f} GB"
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".*"))


def rescaled_per_connection(frames: list[np.ndarray], scales: tuple[float, ...],
                            per_connection: int = 20) -> list[list[bytes]]:
    """Connection k sends the first ``per_connection`` frames scaled by ``scales[k]``, then drops. A camera that
    comes back at another resolution after a drop is what lost whole recordings: the reopened stream's
    frames had another size than the file being written."""
    return [[jpeg(cv2.resize(f, (round(f.shape[1] * s), round(f.shape[0] * s)))) for f in frames[:per_connection]]
            for s in scales]


def clip_frames(short: Path, count: int = 20) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(short))
    frames = [cap.read()[1] for _ in range(count)]
    cap.release()
    return frames


def written(line: str) -> int:
    import re
    got = re.search(r"\((\d+) frames at", line)
    assert got, line
    return int(got.group(1))


def decoded_sizes(path: Path) -> list[tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    sizes = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        sizes.append(frame.shape[:2])
    cap.release()
    return sizes


@pytest.mark.parametrize("name", ["stream.mp4", "stream.avi"])
def test_stream_that_comes_back_at_another_resolution_keeps_the_whole_recording(short, tiny_onnx, tmp_path, name):
    out = tmp_path / name
    with MjpegServer(rescaled_per_connection(clip_frames(short), (1.0, 0.5))) as server:
        proc = subprocess.run(CLI + [server.url, "-o", str(out), "--reconnect", "2", "--model", str(tiny_onnx),
                                     "--providers", "cpu"], capture_output=True, text=True, timeout=120)
    line = proc.stdout.strip()
    assert proc.returncode == 1 and "stream ended after" in line and "reconnected 1 times" in line, proc.stderr
    assert "Traceback" not in proc.stderr and "disk full" not in proc.stderr
    sizes = decoded_sizes(out)
    assert len(sizes) == written(line) > 0                      # the recording is kept, every frame
    assert set(sizes) == {(288, 384)}                           # later frames scaled to the first ones' size
    frames_read = int(line.split(": ", 1)[1].split(" frames read")[0])
    assert frames_read > 20                                     # the second connection's frames came in


def test_frames_that_grow_past_max_pixels_mid_stream_are_skipped_and_the_recording_kept(short, tiny_onnx, tmp_path):
    out = tmp_path / "grown.mp4"
    with MjpegServer(rescaled_per_connection(clip_frames(short), (1.0, 2.0))) as server:
        proc = subprocess.run(CLI + [server.url, "-o", str(out), "--reconnect", "2", "--max-pixels", "200000",
                                     "--model", str(tiny_onnx), "--providers", "cpu"],
                              capture_output=True, text=True, timeout=120)
    line = proc.stdout.strip()
    assert proc.returncode == 1, proc.stderr
    assert len(line.splitlines()) == 1 and "frames over --max-pixels skipped" in line, line
    assert len(decoded_sizes(out)) == written(line) > 0


def test_cli_transparent_webm_and_background_usage_errors(short, tiny_onnx, tmp_path, backdrop):
    out = tmp_path / "cut.webm"
    model = ["--model", str(tiny_onnx), "--providers", "cpu"]
    proc = subprocess.run(CLI + [str(short), "--format", "cutout", "-o", str(out), "--max-frames", "5", *model],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    frames = video_av.decode_frames(out, alpha=True)
    assert len(frames) == 5 and frames[0].shape[2] == 4 and 0 < (frames[0][..., 3] > 127).mean() < 1
    for bad in (["--background", "blur", "--format", "mask"], ["--background", "nope.png"],
                ["--background", "blur:0"], ["--size", "10x10"]):
        proc = subprocess.run(CLI + [str(short), "-o", str(tmp_path / "x.mp4"), *bad, *model],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (bad, proc.stderr)
    assert not (tmp_path / "x.mp4").exists()


def test_photo_background_and_soft_cutout(pets_dir, backdrop):
    """The photo functions behind `segment --background` / soft `--format cutout`."""
    from unetlite.infer.pipeline.backgrounds import composite_photo, cutout_photo
    rgb = cv2.cvtColor(cv2.imread(str(sorted((pets_dir / "images").glob("*.jpg"))[1])), cv2.COLOR_BGR2RGB)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    h, w = mask.shape
    cv2.ellipse(mask, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, 1, -1)
    alpha = soft_alpha(rgb, mask)
    out = composite_photo(rgb, mask, parse_background("10,20,30"))
    assert (out[alpha == 0] == (10, 20, 30)).all() and (out[alpha == 1] == rgb[alpha == 1]).all()
    replaced = composite_photo(rgb, mask, parse_background(str(backdrop)), edge="hard")
    expected = cover(cv2.cvtColor(cv2.imread(str(backdrop)), cv2.COLOR_BGR2RGB), h, w)
    assert (replaced[mask == 0] == expected[mask == 0]).all()
    cut = cutout_photo(rgb, mask)
    assert cut.shape == (h, w, 4) and (cut[..., :3][cut[..., 3] == 0] == 0).all()
    assert ((cut[..., 3] > 0) & (cut[..., 3] < 255)).any()


def test_live_streams_drop_stale_frames_each_and_report_per_stream(short, segmenter, tmp_path):
    """Two files read live (paced at their own fps, like cameras) with a slow consumer: each stream
    keeps only its newest frame, so each drops frames, and each gets its own output and line."""
    from unetlite.infer.pipeline.streams import process_streams
    outputs = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    summary = process_streams(segmenter, [str(short), str(short)], outputs, VideoOptions(live=True, max_frames=6),
                              lambda path, fps: video_av.open_sink(path, fps),
                              on_frame=lambda result: time.sleep(0.3))
    assert summary.exit_code == 0
    lines = summary.lines()
    assert len(lines) == 3 and "2 streams" in lines[-1]
    for stream, out in zip(summary.streams, outputs):
        assert stream.frames_segmented == 6 and stream.dropped > 0 and stream.output == out
        assert video_av.count_frames(out) > 0

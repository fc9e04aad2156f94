"""Batch segmentation on a real local Ray runtime (2 CPUs), checked against plain `segment`.

One Ray runtime serves the whole module (starting one is slow on 2 cores). Without the `ray`
extra the runtime tests skip; the resource planning and the missing-extra message are tested
everywhere.
"""
from __future__ import annotations

import csv
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetlite.infer.cli import main
from unetlite.infer.pipeline.distributed import MissingRay, import_ray, plan_resources

NO_RAY = "the ray extra is not installed (pip install '.[ray]')"


def _png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming width x height pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BAD = {"truncated.jpg": "truncated", "notes.jpg": "not a decodable image", "bomb.png": ""}


@pytest.fixture(scope="module")
def photos(pets_dir, tmp_path_factory) -> Path:
    """Real pets (one in a sub-folder, one grey PNG) plus a truncated JPEG, text named .jpg and a
    PNG whose header claims 10 gigapixels."""
    root = tmp_path_factory.mktemp("ray_in")
    (root / "sub").mkdir()
    images = sorted((pets_dir / "images").glob("*.jpg"))[:8]
    for path in images[:6]:
        shutil.copy(path, root)
    shutil.copy(images[6], root / "sub")
    cv2.imwrite(str(root / "sub" / "grey.png"), cv2.imread(str(images[7]), cv2.IMREAD_GRAYSCALE))
    data = images[0].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "notes.jpg").write_text("this is a text file, not a photo\n")
    (root / "bomb.png").write_bytes(_png_bomb())
    return root


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray", reason=NO_RAY)
    pytest.importorskip("ray.data", reason=NO_RAY)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _plain(photos: Path, out: Path, fmt: str) -> dict[str, str]:
    """Plain `unetlite segment` (bundled model, CPU): its failures as {path: reason}."""
    code = main(["segment", str(photos), "-o", str(out), "-r", "--format", fmt, "--providers", "cpu",
                 "--no-progress"])
    assert code == 1  # the broken files fail, the rest is written
    return _failures(out / "unetlite-failures.csv")


def _failures(path: Path) -> dict[str, str]:
    with path.open(newline="") as fh:
        return {row["path"]: row["reason"] for row in csv.DictReader(fh)}


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.name != "unetlite-failures.csv"}


def _ray_run(photos: Path, out: Path, fmt: str = "mask", overwrite: bool = False):
    """What `segment --ray` does: segment's naming and manifest around segment_jobs_on_ray."""
    from unetlite.infer.pipeline.distributed import segment_jobs_on_ray
    from unetlite.infer.pipeline.manifest import Manifest, OutputConfig, file_sha256, load_records, make_record, plan_resume
    from unetlite.infer.pipeline.naming import collect_jobs
    from unetlite.infer.pipeline.items import SegmentSettings
    from unetlite.infer.engine.segmenter import Segmenter

    jobs = collect_jobs([str(photos)], out, fmt, recursive=True).jobs
    segmenter = Segmenter(providers="cpu", threads=1)
    config = OutputConfig(fmt, segmenter.contract.threshold, file_sha256(segmenter.path))
    plan = plan_resume(jobs, config, load_records(out) if out.is_dir() else {}, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out)
    try:
        summary, ran = segment_jobs_on_ray(
            segmenter, plan.todo, SegmentSettings(fmt),
            lambda job, size, n: manifest.append(make_record(job, config, size, n)),
            progress=False, providers="cpu", workers=2)
    finally:
        manifest.close()
    summary.skipped = len(plan.done)
    return summary, ran


def test_plan_leaves_cpus_for_read_tasks():
    plan = plan_resources(2, 0, workers=2, providers="cpu")
    assert plan.workers == 2 and plan.cpus_per_worker * plan.workers <= 1  # a whole CPU stays for tasks
    assert plan.gpus_per_worker == 0 and plan.threads == 1
    big = plan_resources(16, 0)
    assert big.workers * big.cpus_per_worker <= 8 and big.threads * big.workers <= 16


def test_plan_asks_for_gpus_only_when_there_are_some():
    assert plan_resources(8, 0, providers="cuda").gpus_per_worker == 0  # would wait for ever
    gpus = plan_resources(8, 4, providers="cuda")
    assert (gpus.workers, gpus.gpus_per_worker) == (4, 1.0)
    shared = plan_resources(8, 1, workers=2, providers="auto")
    assert shared.gpus_per_worker == 0.5
    assert plan_resources(8, 4, providers="cpu").gpus_per_worker == 0


def test_missing_extra_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra looks like
    with pytest.raises(MissingRay) as info:
        import_ray()
    assert "pip install '.[ray]'" in str(info.value) and "\n" not in str(info.value)


def test_ray_writes_the_same_bytes_as_plain_segment_and_resumes(ray_runtime, photos, tmp_path):
    plain_failures = _plain(photos, tmp_path / "plain", "mask")
    summary, ran = _ray_run(photos, tmp_path / "ray")
    assert "CPUExecutionProvider" in ran and "local" not in ran  # the caller's runtime was used
    plain, ray_out = _outputs(tmp_path / "plain"), _outputs(tmp_path / "ray")
    assert len(plain) == 8 and plain.keys() == ray_out.keys()
    assert all(plain[k] == ray_out[k] for k in plain), "Ray masks differ from plain segment's"
    assert summary.done == 8 and dict(summary.failed) == plain_failures
    assert {Path(p).name for p in plain_failures} == set(BAD)
    for path, reason in plain_failures.items():
        assert BAD[Path(path).name] in reason

    # Resume: nothing is redone; a deleted output is the only work of the next run.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.png")}
    again, _ = _ray_run(photos, tmp_path / "ray")
    assert (again.done, again.skipped, len(again.failed)) == (0, 8, 3)
    victim = next(iter(mtimes))
    victim.unlink()
    third, _ = _ray_run(photos, tmp_path / "ray")
    assert (third.done, third.skipped) == (1, 7) and victim.read_bytes() == plain[victim.relative_to(
        tmp_path / "ray").as_posix()]
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p != victim)


def test_segment_dataset_on_a_bytes_column(ray_runtime, photos, tmp_path):
    from unetlite.infer.pipeline.distributed import segment_dataset
    plain_failures = _plain(photos, tmp_path / "plain", "cutout")
    plain = _outputs(tmp_path / "plain")
    flat = sorted(p for p in photos.iterdir() if p.is_file())
    ds = ray_runtime.data.read_binary_files([str(p) for p in flat], include_paths=True)
    rows = segment_dataset(ds, fmt="cutout", providers="cpu", workers=2).take_all()
    assert len(rows) == len(flat) and {"path", "output", "error", "provider"} <= rows[0].keys()
    by_name = {Path(r["path"]).name: r for r in rows}
    for name, row in by_name.items():
        if name in BAD:
            assert row["error"] and row["output"] == b""
            assert row["error"] == plain_failures[str(photos / name)]
        else:
            assert row["error"] == "" and row["output"] == plain[name + ".png"]


def test_segment_dataset_on_decoded_arrays(ray_runtime, photos, tmp_path):
    from unetlite.infer.pipeline.distributed import segment_dataset
    from unetlite.infer.io.images import read_image
    _plain(photos, tmp_path / "plain", "overlay")
    plain = _outputs(tmp_path / "plain")
    names = sorted(p.name for p in photos.glob("*.jpg") if p.name not in BAD)[:3]
    items = [{"name": n, "image": read_image(photos / n)} for n in names]
    items.append({"name": "five-channel", "image": np.zeros((8, 8, 5), np.uint8)})
    rows = segment_dataset(ray_runtime.data.from_items(items, override_num_blocks=2), fmt="overlay", column="image",
                           path_column="name", batch_size=2, providers="cpu", workers=2).take_all()
    by_name = {r["name"]: r for r in rows}
    assert all(by_name[n]["output"] == plain[n + ".jpg"] for n in names)
    assert "not an RGB image array" in by_name["five-channel"]["error"]


def test_uri_inputs_and_outputs(ray_runtime, photos, tmp_path, capsys):
    """file:// URIs go through the same pyarrow filesystem code as s3:// and gs:// (not reachable here)."""
    from unetlite.infer.pipeline.items import SegmentSettings
    from unetlite.infer.pipeline.segment_run import EngineOptions, SegmentRequest, segment
    _plain(photos, tmp_path / "plain", "mask")
    plain = {k: v for k, v in _outputs(tmp_path / "plain").items() if "/" not in k}  # top level only
    out = tmp_path / "uri_out"
    request = SegmentRequest((photos.as_uri(),), out.as_uri(), SegmentSettings(), EngineOptions(providers="cpu"),
                             progress=False, ray="", ray_workers=2)
    result = segment(request)
    assert result.exit_code == 1 and result.summary.done == len(plain)
    assert _outputs(out) == plain
    failures = _failures(out / "unetlite-failures.csv")
    assert {Path(p).name for p in failures} == set(BAD) and all(p.startswith("file://") for p in failures)
    again = segment(request)  # the broken files fail again; the rest is not redone
    assert again.exit_code == 1 and (again.summary.done, again.summary.skipped) == (0, len(plain))


def test_ray_option_never_swallows_an_input():
    from unetlite.infer.cli.segment import split_ray_argument
    assert split_ray_argument(None, ["a"]) == (None, ["a"])
    assert split_ray_argument("", ["a"]) == ("", ["a"])
    assert split_ray_argument("photos/", ["b"]) == ("", ["photos/", "b"])
    for address in ("auto", "ray://head:10001", "10.0.0.5:6379"):
        assert split_ray_argument(address, ["a"]) == (address, ["a"])


def test_a_signal_ends_the_run_with_a_summary(ray_runtime, photos, tmp_path):
    """SIGTERM arrives as signals.Stopped in the main thread; here it is raised where the driver
    records the first output, the realistic spot (that is where the driver spends its time)."""
    from unetlite.infer.pipeline.distributed import driver_model, segment_jobs_on_ray
    from unetlite.infer.pipeline.naming import collect_jobs
    from unetlite.infer.pipeline.items import SegmentSettings
    from unetlite.infer.signals import Stopped

    jobs = collect_jobs([str(photos)], tmp_path / "out", "mask").jobs
    def stop(job, size, nbytes):
        raise Stopped(signal.SIGTERM)
    summary, _ = segment_jobs_on_ray(driver_model(None), jobs, SegmentSettings(), stop, progress=False,
                                     providers="cpu", workers=2)
    assert summary.interrupted == 143 and summary.done == 0
    assert "interrupted" in summary.line()


# ---------------------------------------------------------------- the command line: unetlite segment --ray

SEGMENT = ["--providers", "cpu", "--no-progress"]


def test_segment_command_with_ray_matches_plain_segment_and_both_resume(ray_runtime, photos, tmp_path, capsys):
    """`unetlite segment DIR -o OUT --ray --ray-workers 2` (on the module's runtime, already started):
    the same bytes, failures.csv and exit code as plain segment; each resumes the other's work."""
    plain_failures = _plain(photos, tmp_path / "plain", "mask")
    out = tmp_path / "ray"
    capsys.readouterr()
    assert main(["segment", str(photos), "-o", str(out), "-r", "--ray", "--ray-workers", "2", *SEGMENT]) == 1
    captured = capsys.readouterr()
    assert "8 done, 0 skipped (already done), 3 failed" in captured.out
    assert "on CPUExecutionProvider" in captured.out and "Ray cluster" in captured.out  # what ran, in one line
    assert re.search(r"; 2 workers x \(0\.5 CPU", captured.err)  # the pool fits the 2-CPU runtime
    plain = _outputs(tmp_path / "plain")
    assert _outputs(out) == plain and len(plain) == 8
    assert _failures(out / "unetlite-failures.csv") == plain_failures

    # plain segment finds nothing left to do (same manifest, same settings)
    assert main(["segment", str(photos), "-o", str(out), "-r", *SEGMENT]) == 1
    assert "0 done, 8 skipped (already done), 3 failed" in capsys.readouterr().out
    # and --ray placed before the inputs resumes plain's work without starting a job
    assert main(["segment", "--ray", str(photos), "-o", str(tmp_path / "plain"), "-r", *SEGMENT]) == 1
    assert "0 done, 8 skipped (already done), 3 failed" in capsys.readouterr().out
    assert _outputs(tmp_path / "plain") == plain


def test_sigterm_ends_a_ray_run_with_143_and_the_rest_resumes(ray_runtime, photos, tmp_path):
    """A real SIGTERM to a real `unetlite segment --ray ADDRESS` process joined to the module's
    runtime (ray.init puts in its own SIGTERM handler, which would exit without a summary)."""
    from unetlite.infer.io.images import is_temp_name
    address = ray_runtime.get_runtime_context().gcs_address
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "unetlite.infer.cli", "segment", str(photos), "-o", str(out), "-r",
                             "--ray", address, "--ray-workers", "2", *SEGMENT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # the plan line: Ray is joined and the job is about to run
        seen.append(line)
        if re.search(r"; \d+ workers? x \(", line):
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 143, "".join(seen) + stderr
    assert "Traceback" not in stderr
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]

    _plain(photos, tmp_path / "plain", "mask")
    assert main(["segment", str(photos), "-o", str(out), "-r", *SEGMENT]) == 1  # finishes what was left
    assert _outputs(out) == _outputs(tmp_path / "plain")


def test_segment_ray_without_the_extra_is_a_usage_error(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["segment", "--ray", str(photos), "-o", str(tmp_path / "out"), *SEGMENT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install '.[ray]'" in err
    assert not (tmp_path / "out").exists()


def test_uris_need_ray(tmp_path, capsys):
    assert main(["segment", "s3://bucket/photos", "-o", str(tmp_path / "out")]) == 2
    assert main(["segment", str(tmp_path), "-o", "gs://bucket/masks"]) == 2
    assert main(["segment", str(tmp_path), "-o", str(tmp_path / "out"), "--ray-workers", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["unetlite segment: s3://bucket/photos: URIs need --ray",
                   "unetlite segment: gs://bucket/masks: URIs need --ray",
                   "unetlite segment: --ray-workers needs --ray"]

"""Issue 16, the second hostile-input round: run files never change inputs, every run ends with its
summary, and users read one line per problem. Real links, FIFOs, sparse files and subprocesses."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetlite.infer.cli import main
from unetlite.infer.pipeline.batch import FAILURES_NAME
from unetlite.infer.pipeline.manifest import LOCK_NAME, MANIFEST_NAME, load_records

from conftest import PETS, pet_names

ROOT = Path(__file__).resolve().parents[2]


def _photos(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in pet_names("test", count)[:count]:
        paths.append(folder / f"{name}.jpg")
        shutil.copy(PETS / "images" / f"{name}.jpg", paths[-1])
    return paths


def _segment(*argv, model) -> int:
    return main(["segment", *map(str, argv), "--model", str(model), "--providers", "cpu", "--no-progress"])


def _cli(*argv, model, timeout=240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unetlite.infer.cli", "segment", *map(str, argv), "--model",
                           str(model), "--providers", "cpu", "--no-progress"], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kwargs)


def _outputs(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.name.endswith(".png")}


# ----------------------------------------------------------------- inputs never change

def test_a_manifest_symlinked_to_an_input_is_refused_and_the_input_is_unchanged(tiny_onnx, tmp_path, pets_dir, capsys):
    src = tmp_path / "in"
    cat = _photos(src, 2)[0]
    before = cat.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).symlink_to(Path("..") / "in" / cat.name)
    assert _segment(src, "-o", out, model=tiny_onnx) == 2
    err = capsys.readouterr().err
    assert cat.read_bytes() == before
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "it is an input file" in err or "symbolic link" in err


def _manifest_linked_to_another_file(tmp_path: Path, link) -> tuple[Path, Path, Path]:
    """(input folder of 2 photos, output folder, someone's notes.txt) with ``link(notes, manifest)`` done."""
    src = tmp_path / "in"
    _photos(src, 2)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    out = tmp_path / "out"
    out.mkdir()
    link(notes, out / MANIFEST_NAME)
    return src, out, notes


def test_a_manifest_symlinked_to_another_users_file_is_not_followed(tiny_onnx, tmp_path, pets_dir, capsys):
    src, out, notes = _manifest_linked_to_another_file(tmp_path, lambda target, path: path.symlink_to(target))
    assert _segment(src, "-o", out, model=tiny_onnx) == 2
    assert "the manifest is a symbolic link; refusing to follow it" in capsys.readouterr().err
    assert notes.read_text() == "mine\n" and not _outputs(out)


def test_a_hard_linked_manifest_is_refused_and_the_other_file_unchanged(tiny_onnx, tmp_path, pets_dir, capsys):
    src, out, notes = _manifest_linked_to_another_file(tmp_path, os.link)
    assert _segment(src, "-o", out, model=tiny_onnx) == 2
    assert "the manifest has 2 hard links" in capsys.readouterr().err
    assert notes.read_text() == "mine\n"


def test_a_manifest_hard_linked_to_an_input_counts_as_an_input(tiny_onnx, tmp_path, pets_dir, capsys):
    src = tmp_path / "in"
    cat = _photos(src, 2)[0]
    before = cat.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    os.link(cat, out / MANIFEST_NAME)
    assert _segment(src, "-o", out, model=tiny_onnx) == 2
    err = capsys.readouterr().err
    assert "the manifest has 2 hard links" in err or f"refusing to write {out / MANIFEST_NAME}: it is an input" in err
    assert cat.read_bytes() == before
    # named as an input file itself (no folder walk), it is still never written
    assert _segment(cat, "-o", out, model=tiny_onnx) == 2
    assert cat.read_bytes() == before


def test_a_lock_symlink_never_creates_a_file_through_it(tiny_onnx, tmp_path, pets_dir, capsys):
    src = tmp_path / "in"
    _photos(src, 2)
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere" / "created-by-the-lock"
    target.parent.mkdir()
    (out / LOCK_NAME).symlink_to(target)
    assert _segment(src, "-o", out, model=tiny_onnx) == 2
    assert "the lock file is a symbolic link" in capsys.readouterr().err
    assert not target.exists()


def test_a_users_failures_csv_is_never_deleted_or_overwritten(tiny_onnx, tmp_path, pets_dir, capsys):
    """-o equal to the input folder (documented as allowed) with the user's own failures.csv."""
    src = tmp_path / "in"
    _photos(src, 2)
    mine = src / "failures.csv"
    mine.write_text("my,own\nfailures,list\n")
    assert _segment(src, "-o", src, model=tiny_onnx) == 0          # clean run: nothing of the user's removed
    assert mine.read_text() == "my,own\nfailures,list\n"
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert _segment(src, "-o", src, model=tiny_onnx) == 1          # failing run: the tool's own file
    assert mine.read_text() == "my,own\nfailures,list\n"
    assert "broken.jpg" in (src / FAILURES_NAME).read_text()
    assert f"see {src / FAILURES_NAME}" in capsys.readouterr().out
    (src / "broken.jpg").unlink()
    assert _segment(src, "-o", src, model=tiny_onnx) == 0          # clean again: only the tool's file goes
    assert not (src / FAILURES_NAME).exists() and mine.read_text() == "my,own\nfailures,list\n"


# ----------------------------------------------------------------- the run always ends with its summary

def test_a_manifest_line_with_a_null_output_is_ignored_with_one_warning(tiny_onnx, tmp_path, pets_dir, capsys,
                                                                        caplog):
    src = tmp_path / "in"
    _photos(src, 2)
    out = tmp_path / "out"
    assert _segment(src, "-o", out, model=tiny_onnx) == 0
    with open(out / MANIFEST_NAME, "ab") as fh:
        fh.write(b'{"output": null}\n[1, 2]\n')
    capsys.readouterr()
    assert _segment(src, "-o", out, model=tiny_onnx) == 0
    captured = capsys.readouterr()
    assert "0 done, 2 skipped" in captured.out and "Traceback" not in captured.err
    warnings = [r.getMessage() for r in caplog.records if "manifest record" in r.getMessage()]
    assert len(warnings) == 1 and "2 lines (first: line 3) not a manifest record, ignored" in warnings[0]


@pytest.mark.parametrize("kind", ["directory", "link to /dev/zero", "fifo"])
def test_a_manifest_that_is_not_a_regular_file_stops_the_run_in_one_line(kind, tiny_onnx, tmp_path, pets_dir):
    """A subprocess with a timeout: a FIFO opened for reading without O_NONBLOCK would hang."""
    src = tmp_path / "in"
    _photos(src, 2)
    out = tmp_path / "out"
    out.mkdir()
    manifest = out / MANIFEST_NAME
    if kind == "directory":
        manifest.mkdir()
    elif kind == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.symlink_to("/dev/zero")
    proc = _cli(src, "-o", out, model=tiny_onnx, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "the manifest is" in proc.stderr
    assert not _outputs(out)


def test_a_torn_last_line_is_ignored_and_never_appended_to(tiny_onnx, tmp_path, pets_dir, caplog):
    src = tmp_path / "in"
    _photos(src, 2)
    out = tmp_path / "out"
    assert _segment(src, "-o", out, model=tiny_onnx) == 0
    with open(out / MANIFEST_NAME, "ab") as fh:
        fh.write(b'{"source": "/x", "outp')   # a write cut short (crash, full disk)
    assert set(load_records(out)) == _outputs(out)      # ignored, silently
    assert _segment(src, "-o", out, "--overwrite", model=tiny_onnx) == 0
    lines = (out / MANIFEST_NAME).read_bytes().split(b"\n")
    assert b'{"source": "/x", "outp' in lines           # alone on its line
    assert set(load_records(out)) == _outputs(out) and len(load_records(out)) == 2
    assert any("not a manifest record" in r.getMessage() for r in caplog.records)  # no longer last: a bad line


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))   # ulimit -f 4


def test_a_failing_manifest_write_ends_with_the_summary_and_exit_1(tiny_onnx, tmp_path, pets_dir):
    src = tmp_path / "in"
    src.mkdir()
    names = (pet_names("trainval") + pet_names("test"))[:16]   # the fixture set has 8 test photos
    for name in names:
        shutil.copy(PETS / "images" / f"{name}.jpg", src / f"{name}.jpg")
    out = tmp_path / "out"
    proc = _cli(src, "-o", out, model=tiny_onnx, preexec_fn=_limit_file_size)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert " done, 0 skipped (already done), " in proc.stdout           # the summary line
    assert "written, but not recorded in" in proc.stderr
    records = load_records(out)
    assert records and all((out / rel).is_file() for rel in records)
    # the next run (no limit) redoes exactly what was not recorded, and never appends to a torn line
    again = _cli(src, "-o", out, model=tiny_onnx)
    assert again.returncode == 0, again.stderr
    assert f"{len(names) - len(records)} done, {len(records)} skipped" in again.stdout
    assert len(load_records(out)) == len(names)


def test_out_deleted_during_the_run_is_noticed_exit_1(tiny_onnx, tmp_path, pets_dir):
    from unetlite.infer.pipeline.segment_run import Report, SegmentRequest, segment
    from unetlite.infer.engine.options import EngineOptions
    src = tmp_path / "in"
    _photos(src, 4)
    (src / "0-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")  # first in order: fails first
    out = tmp_path / "out"

    def delete_out(path, reason):
        shutil.rmtree(out)

    result = segment(SegmentRequest((str(src),), str(out), engine=EngineOptions(tiny_onnx, providers="cpu"),
                                    progress=False), Report(failed=delete_out))
    assert result.exit_code == 1
    assert "was deleted or replaced during the run" in result.line()


def test_huge_max_pixels_and_batch_size_are_usage_errors_at_parse_time(tmp_path, capsys):
    assert main(["segment", str(tmp_path), "-o", str(tmp_path / "o"), "--max-pixels", "9" * 23]) == 2
    err = capsys.readouterr().err
    assert "--max-pixels" in err and "expected at most" in err and err.count("\n") == 2
    assert main(["segment", str(tmp_path), "-o", str(tmp_path / "o"), "--batch-size", "1000"]) == 2
    assert "from 1 to 32" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_usage_error_is_the_one_line_usage_and_the_error(capsys):
    assert main(["segment", "x", "-o"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("usage: unetlite segment [options]")
    assert lines[1].startswith("unetlite segment: error: argument -o/--output")


def test_a_folder_tree_1100_levels_deep_is_segmented(tiny_onnx, tmp_path, pets_dir, capsys):
    root = tmp_path / "deep"
    root.mkdir()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for _ in range(1100):
            os.mkdir("d")
            os.chdir("d")
        shutil.copy(PETS / "images" / f"{pet_names('test', 1)[0]}.jpg", "a.jpg")
    finally:
        os.chdir(cwd)
    out = tmp_path / "out"
    try:
        assert _segment(root, "-r", "-o", out, model=tiny_onnx) == 0
        assert "1 done" in capsys.readouterr().out
    finally:
        for tree in (root, out):  # shutil.rmtree recurses once per level too
            subprocess.run(["rm", "-rf", str(tree)], check=False)


def test_segment_given_a_video_names_unetlite_video(tiny_onnx, tmp_path, video_dir, capsys):
    video = next(video_dir.glob("*.mp4"))
    assert _segment(video, "-o", tmp_path / "out", model=tiny_onnx) == 1
    err = capsys.readouterr().err
    assert "a video file: segment reads still images (use `unetlite video`)" in err and err.count("\n") == 1


def test_a_model_that_cannot_load_leaves_no_out_and_no_lock(tiny_onnx, tmp_path, pets_dir, capsys):
    src = tmp_path / "in"
    _photos(src, 1)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model" * 100)
    assert main(["segment", str(src), "-o", str(tmp_path / "out"), "--model", str(junk), "--no-progress"]) == 2
    assert not (tmp_path / "out").exists()
    # an existing OUT keeps what it had, and gets no lock left behind either
    (tmp_path / "out3").mkdir()
    assert main(["segment", str(src), "-o", str(tmp_path / "out3"), "--model", str(junk), "--no-progress"]) == 2
    assert list((tmp_path / "out3").iterdir()) == []


def test_a_model_that_is_a_device_is_not_a_regular_file(tmp_path, capsys):
    assert main(["segment", str(tmp_path), "-o", str(tmp_path / "o"), "--model", "/dev/zero"]) == 2
    err = capsys.readouterr().err
    assert "'/dev/zero': not a regular file" in err and "not found" not in err


def test_a_link_to_a_device_is_not_called_broken(tiny_onnx, tmp_path, pets_dir, caplog):
    src = tmp_path / "in"
    _photos(src, 1)
    (src / "null.jpg").symlink_to("/dev/null")
    (src / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert _segment(src, "-o", tmp_path / "out", model=tiny_onnx) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("null.jpg: links to something that is not a regular file" in m for m in messages)
    assert any("gone.jpg: broken link" in m for m in messages)
    assert not any("null.jpg: broken link" in m for m in messages)


# ----------------------------------------------------------------- what users see in the pictures

def test_cutouts_zero_what_is_transparent(tiny_onnx, tmp_path, pets_dir):
    src = tmp_path / "in"
    _photos(src, 2)
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--format", "cutout", "--model", str(tiny_onnx),
                 "--providers", "cpu", "--no-progress", *(["--edge", "hard"] if "--edge" in _help() else [])]) == 0
    for path in out.glob("*.png"):
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert rgba.shape[2] == 4
        transparent = rgba[..., 3] == 0
        assert transparent.any() and not rgba[..., :3][transparent].any()


def _help() -> str:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(["segment", "--help"])
    return buf.getvalue()


def test_input_alpha_is_respected(tiny_onnx, tmp_path, pets_dir):
    """A transparent PNG (the tool's own cutout, re-segmented): what is transparent stays background."""
    photo = cv2.imread(str(_photos(tmp_path / "src", 1)[0]))
    rgba = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    rgba[:, : rgba.shape[1] // 2, 3] = 0         # the left half removed
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "cut.png"), rgba)
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--threshold", "0.0001", "--model", str(tiny_onnx),
                 "--providers", "cpu", "--no-progress"]) == 0
    mask = cv2.imread(str(out / "cut.png.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == rgba.shape[:2]
    assert not mask[:, : rgba.shape[1] // 2].any()     # removed stays removed
    assert mask[:, rgba.shape[1] // 2:].any()          # the rest is segmented as usual

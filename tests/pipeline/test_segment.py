"""`unetlite segment` on real pets images, including the awkward inputs users really have."""
from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import PETS, pet_names
from unetlite.infer.cli import main
from unetlite.infer.io.images import is_temp_name, read_image
from unetlite.infer.pipeline.manifest import LOCK_NAME, MANIFEST_NAME
from unetlite.infer.pipeline.naming import collect_jobs
from unetlite.infer.engine.postprocess import clean_mask
from unetlite.infer.pipeline.readahead import ByteBudget, read_ahead
from unetlite.infer.engine.segmenter import Segmenter


def _exif_rotated_jpeg(src, dst):
    """Store the image rotated 90 deg clockwise on disk with EXIF orientation 8 ("rotate 270 CW
    to display"), so a correct reader shows it upright again."""
    Image = pytest.importorskip("PIL.Image")
    img = Image.open(src)
    stored = img.transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    stored.save(dst, exif=exif.tobytes())
    return img.size  # displayed (width, height)


def _pet(i: int = 0, split: str = "test"):
    return PETS / "images" / f"{pet_names(split, i + 1)[i]}.jpg"


def _segment(*argv, model) -> int:
    return main(["segment", *map(str, argv), "--model", str(model), "--providers", "cpu", "--no-progress"])


def _outputs(out):
    """Output pictures below OUT (its manifest and lock are hidden files)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.name != "unetlite-failures.csv")


def _header_bomb(src, dst, height: int, width: int) -> None:
    """A real JPEG whose SOF header claims height x width: decoding it would take h*w*3 bytes."""
    data = bytearray(src.read_bytes())
    sof = next(i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    dst.write_bytes(bytes(data))


@pytest.fixture()
def messy_folder(tmp_path, pets_dir):
    """Nested real images plus every kind of bad or unusual file."""
    root = tmp_path / "in"
    (root / "cats" / "deeper").mkdir(parents=True)
    (root / "dogs").mkdir()
    names = pet_names("test", 6)
    shutil.copy(PETS / "images" / f"{names[0]}.jpg", root / "cats")
    shutil.copy(PETS / "images" / f"{names[1]}.jpg", root / "cats" / "deeper")
    shutil.copy(PETS / "images" / f"{names[2]}.jpg", root / "dogs")
    bgr = cv2.imread(str(PETS / "images" / f"{names[3]}.jpg"))
    cv2.imwrite(str(root / "dogs" / "grey.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "dogs" / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(root / "dogs" / "deep16.png"), bgr.astype(np.uint16) * 257)
    displayed = _exif_rotated_jpeg(PETS / "images" / f"{names[4]}.jpg", root / "cats" / "rotated.jpg")
    data = (PETS / "images" / f"{names[5]}.jpg").read_bytes()
    (root / "cats" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "cats" / "empty.jpg").write_bytes(b"")
    (root / "cats" / "notes.jpg").write_text("this is a text file, not a photo\n")
    (root / "dogs" / "garbage.png").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "dogs" / "readme.txt").write_text("ignored: not an image extension")
    return root, displayed


GOOD = {"cats/{0}.jpg", "cats/deeper/{1}.jpg", "dogs/{2}.jpg", "dogs/grey.png", "dogs/rgba.png", "dogs/deep16.png",
        "cats/rotated.jpg"}
BAD = {"cats/truncated.jpg": "truncated JPEG", "cats/empty.jpg": "empty", "cats/notes.jpg": "not a decodable image",
       "dogs/garbage.png": "not a decodable image"}


def test_folder_run_handles_nested_and_bad_files(messy_folder, tiny_onnx, tmp_path, capsys):
    root, displayed = messy_folder
    out = tmp_path / "out"
    code = _segment(root, "-o", out, "-r", model=tiny_onnx)
    assert code == 1  # some inputs failed, the rest were processed
    names = pet_names("test", 3)
    sources = {g.format(*names) for g in GOOD}
    assert _outputs(out) == sorted(s + ".png" for s in sources)  # full source name + the format's extension
    for rel in sources:  # output size == (EXIF-corrected) input size, 0/255 masks
        mask = cv2.imread(str(out / (rel + ".png")), cv2.IMREAD_UNCHANGED)
        assert mask.shape == read_image(root / rel).shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
    rotated = cv2.imread(str(out / "cats" / "rotated.jpg.png"), cv2.IMREAD_UNCHANGED)
    assert (rotated.shape[1], rotated.shape[0]) == displayed
    with (out / "unetlite-failures.csv").open() as fh:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert {str(root / k) for k in BAD} == set(rows)
    for rel, reason in BAD.items():
        assert reason in rows[str(root / rel)]
    err = capsys.readouterr()
    for rel in BAD:
        assert str(root / rel) in err.err
    assert "7 done, 0 skipped" in err.out and "4 failed" in err.out
    hidden = {p.name for p in out.rglob(".*")}
    assert hidden == {MANIFEST_NAME, LOCK_NAME}  # no temp file left
    records = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    assert sorted(r["output"] for r in records) == sorted(s + ".png" for s in sources)
    for r in records:
        assert r["source"] == str(root / r["output"][:-4]) and r["bytes"] == (out / r["output"]).stat().st_size > 0


def test_resume_skips_done_files_and_overwrite_redoes_them(tiny_onnx, tmp_path, pets_dir, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for n in pet_names("test", 4):
        shutil.copy(PETS / "images" / f"{n}.jpg", src)
    out = tmp_path / "out"
    args = (src, "-o", out)
    assert _segment(*args, model=tiny_onnx) == 0
    first = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    victim, empty = sorted(first)[:2]
    victim.unlink()  # as if the run had been interrupted before this one
    empty.write_bytes(b"")  # a 0-byte output is never counted as done
    capsys.readouterr()
    assert _segment(*args, model=tiny_onnx) == 0
    out_text = capsys.readouterr().out
    assert "2 done, 2 skipped" in out_text and "1 redone because the existing output is empty" in out_text
    assert empty.stat().st_size > 0
    assert all(p.stat().st_mtime_ns == t for p, t in first.items() if p not in (victim, empty))
    assert _segment(*args, "--overwrite", model=tiny_onnx) == 0
    assert "4 done, 0 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("fmt,suffix,channels", [("mask", ".png", 1), ("cutout", ".png", 4), ("overlay", ".jpg", 3),
                                                 ("prob", ".png", 1), ("side-by-side", ".jpg", 3)])
def test_every_format_writes_a_decodable_picture(fmt, suffix, channels, tiny_onnx, tmp_path, pets_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the photo lies outside the current folder: its output gets its bare name
    image = _pet()
    out = tmp_path / fmt
    assert _segment(image, "-o", out, "--format", fmt, model=tiny_onnx) == 0
    written = cv2.imread(str(out / (image.name + suffix)), cv2.IMREAD_UNCHANGED)
    height, width = cv2.imread(str(image)).shape[:2]
    expected_width = 3 * width if fmt == "side-by-side" else width
    assert written.shape[:2] == (height, expected_width)
    assert (written.shape[2] if written.ndim == 3 else 1) == channels
    if fmt == "cutout":  # alpha: the soft (guided-filter) edge of the mask (--edge soft, the default)
        from unetlite.infer.engine.alpha import alpha_channel, soft_alpha
        seg = Segmenter(tiny_onnx, providers="cpu")(read_image(image))
        assert np.array_equal(written[..., 3], alpha_channel(soft_alpha(read_image(image), seg.mask)))


def test_globs_and_files_mirror_their_path_below_the_current_folder(tiny_onnx, tmp_path, pets_dir, monkeypatch):
    """A quoted glob and the shell's expansion of it name outputs alike; outside the current
    folder a file gets its bare name."""
    names = pet_names("test", 2)
    for sub in ("a", "b"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(PETS / "images" / f"{names[0]}.jpg", tmp_path / "in" / sub)
    shutil.copy(PETS / "images" / f"{names[1]}.jpg", tmp_path / "in" / "b")
    monkeypatch.chdir(tmp_path)
    expected = sorted(f"in/{sub}/{n}.jpg.png" for sub, n in (("a", names[0]), ("b", names[0]), ("b", names[1])))
    assert _segment("in/*/*.jpg", "-o", "quoted", model=tiny_onnx) == 0
    assert _outputs(tmp_path / "quoted") == expected
    expanded = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("in/*/*.jpg"))
    assert _segment(*expanded, "-o", "expanded", model=tiny_onnx) == 0
    assert _outputs(tmp_path / "expanded") == expected
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _segment(tmp_path / "in" / "b" / f"{names[1]}.jpg", "-o", "out", model=tiny_onnx) == 0
    assert _outputs(elsewhere / "out") == [f"{names[1]}.jpg.png"]


def test_distinct_inputs_never_share_an_output(tiny_onnx, tmp_path, pets_dir, capsys, monkeypatch):
    """Same file name in three folders: refused before the model loads when the names would
    collide, three outputs when they mirror distinct paths."""
    for i, sub in enumerate("abc"):
        (tmp_path / sub).mkdir()
        shutil.copy(_pet(i), tmp_path / sub / "cat.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = [tmp_path / s / "cat.jpg" for s in "abc"]
    assert main(["segment", *map(str, argv), "-o", "out", "--model", "missing.onnx"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "a" / "cat.jpg") in err and str(tmp_path / "b" / "cat.jpg") in err
    assert "missing.onnx" not in err and len(err.strip().splitlines()) == 1
    assert not (elsewhere / "out").exists()
    monkeypatch.chdir(tmp_path)
    assert _segment("a/cat.jpg", "b/cat.jpg", "c/cat.jpg", "-o", "out", model=tiny_onnx) == 0
    masks = [cv2.imread(str(tmp_path / "out" / s / "cat.jpg.png"), cv2.IMREAD_UNCHANGED) for s in "abc"]
    for s, mask in zip("abc", masks):
        assert mask.shape == read_image(tmp_path / s / "cat.jpg").shape[:2]


def test_a_new_file_with_the_same_stem_is_segmented(tiny_onnx, tmp_path, pets_dir, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "cat.png"), cv2.imread(str(_pet(0))))
    assert _segment(src, "-o", out, model=tiny_onnx) == 0
    shutil.copy(_pet(1), src / "cat.jpg")
    capsys.readouterr()
    assert _segment(src, "-o", out, model=tiny_onnx) == 0
    assert "1 done, 1 skipped" in capsys.readouterr().out
    assert _outputs(out) == ["cat.jpg.png", "cat.png.png"]
    assert cv2.imread(str(out / "cat.jpg.png")).shape[:2] == read_image(src / "cat.jpg").shape[:2]


def test_resume_trusts_only_the_same_source_and_configuration(tiny_onnx, tmp_path, pets_dir, capsys):
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    for folder, offset in ((first, 0), (second, 2)):
        folder.mkdir()
        for i in range(2):
            shutil.copy(_pet(offset + i), folder / f"photo{i}.jpg")
    assert _segment(first, "-o", out, model=tiny_onnx) == 0
    capsys.readouterr()
    assert _segment(first, "-o", out, "--threshold", "0.9", model=tiny_onnx) == 0
    assert "2 done, 0 skipped" in (text := capsys.readouterr().out) and \
        "2 redone because the configuration changed" in text
    assert _segment(first, "-o", out, "--threshold", "0.9", model=tiny_onnx) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out
    assert _segment(second, "-o", out, "--threshold", "0.9", model=tiny_onnx) == 0  # same names, other photos
    assert "2 redone because the existing output was made from another source file" in capsys.readouterr().out
    os.utime(second / "photo0.jpg", ns=(0, 0))  # the source changed since its output was made
    assert _segment(second, "-o", out, "--threshold", "0.9", model=tiny_onnx) == 0
    assert "1 done, 1 skipped" in (text := capsys.readouterr().out) and "the source file changed" in text
    records = {}
    for line in (out / MANIFEST_NAME).read_text().splitlines():
        record = json.loads(line)
        records[record["output"]] = record
    assert {r["threshold"] for r in records.values()} == {0.9}
    assert {r["source"] for r in records.values()} == {str(second / f"photo{i}.jpg") for i in range(2)}


def test_never_writes_over_or_into_inputs(tiny_onnx, tmp_path, pets_dir, capsys):
    same = tmp_path / "same"
    same.mkdir()
    cv2.imwrite(str(same / "photo.png"), cv2.imread(str(_pet(0))))
    assert _segment(same, "-o", same, model=tiny_onnx) == 0  # outputs beside their inputs, by another name
    before = {p.name: p.read_bytes() for p in same.iterdir()}
    assert set(before) >= {"photo.png", "photo.png.png"}
    capsys.readouterr()
    assert _segment(same, "-o", same, "--overwrite", model=tiny_onnx) == 0  # its own outputs are not inputs
    assert "1 done" in capsys.readouterr().out and not (same / "photo.png.png.png").exists()

    mine = tmp_path / "mine"  # a user's own photo.png.png is an input: never overwritten
    mine.mkdir()
    shutil.copy(same / "photo.png", mine / "photo.png")
    cv2.imwrite(str(mine / "photo.png.png"), cv2.imread(str(_pet(1))))
    snapshot = {p.name: p.read_bytes() for p in mine.iterdir()}
    assert main(["segment", str(mine), "-o", str(mine), "--overwrite", "--model", "missing.onnx"]) == 2
    err = capsys.readouterr().err
    assert "it is an input file" in err and "missing.onnx" not in err
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == snapshot

    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    assert main(["segment", str(same), "-o", str(existing), "--model", "missing.onnx"]) == 2
    err = capsys.readouterr().err
    assert "existing file" in err and "missing.onnx" not in err and len(err.strip().splitlines()) == 1
    assert existing.read_text() == "keep me"


def test_out_inside_an_input_folder_is_never_walked(tiny_onnx, tmp_path, pets_dir, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(_pet(0), src)
    shutil.copy(_pet(1), src / "sub")
    for _ in range(2):
        assert _segment(src, "-o", src / "masks", "-r", "--format", "overlay", model=tiny_onnx) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out.splitlines()[-1]
    assert _outputs(src / "masks") == sorted([_pet(0).name + ".jpg", f"sub/{_pet(1).name}.jpg"])


def test_symlink_loops_visit_each_real_file_once_and_never_hang(tiny_onnx, tmp_path, pets_dir):
    loop = tmp_path / "loop"
    (loop / "sub").mkdir(parents=True)
    shutil.copy(_pet(0), loop / "a.jpg")
    shutil.copy(_pet(1), loop / "sub" / "b.jpg")
    (loop / "sub" / "up").symlink_to("..")         # loop 1: back to the top
    (loop / "sub" / "self").symlink_to(".")        # loop 2: into itself
    (loop / "alias.jpg").symlink_to("a.jpg")       # the same real file under another name
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(_pet(2), outside / "c.jpg")
    (loop / "linked").symlink_to(outside)          # a folder link that is not a loop is followed
    for spec in (str(loop), str(loop / "**" / "*.jpg")):
        collected = collect_jobs([spec], tmp_path / "out", "mask", recursive=True, cwd=tmp_path)
        assert len(collected.jobs) == 3
        assert len({os.path.realpath(j.source) for j in collected.jobs}) == 3
    # the real command, in its own process with a deadline: it must finish, not hang
    run = subprocess.run([sys.executable, "-m", "unetlite.infer.cli", "segment", "loop/**/*.jpg", "-r", "-o", "out",
                          "--model", str(tiny_onnx), "--providers", "cpu", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "3 done" in run.stdout
    assert len(_outputs(tmp_path / "out")) == 3


def test_one_bad_file_never_stops_the_batch(tiny_onnx, tmp_path, pets_dir, capsys):
    """Header bombs, a non-UTF-8 name and an unwritable failures.csv: every good image is
    written, each bad one is one line and one row, and the run ends with its summary."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        shutil.copy(_pet(i), src)
    _header_bomb(_pet(3), src / "bomb65k.jpg", 65000, 65000)
    _header_bomb(_pet(3), src / "bomb30k.jpg", 30000, 30000)
    weird = os.path.join(os.fsencode(src), b"caf\xe9.jpg")
    with open(weird, "wb") as fh:
        fh.write(b"not an image")
    good_weird = os.path.join(os.fsencode(src), b"gut\xfc.jpg")
    shutil.copy(_pet(4), os.fsdecode(good_weird))
    started = time.perf_counter()
    assert _segment(src, "-o", out, model=tiny_onnx) == 1
    assert time.perf_counter() - started < 120  # nothing 30000x30000 was decoded (that takes minutes here)
    captured = capsys.readouterr()
    assert "4 done, 0 skipped (already done), 3 failed" in captured.out
    with (out / "unetlite-failures.csv").open(encoding="utf-8") as fh:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert "over the 100 MP limit" in rows[str(src / "bomb65k.jpg")]
    assert "over the 100 MP limit" in rows[str(src / "bomb30k.jpg")]
    assert "not a decodable image" in rows[str(src) + "/caf\\xe9.jpg"]
    assert os.path.exists(os.path.join(os.fsencode(out), b"gut\xfc.jpg.png"))
    assert "Traceback" not in captured.err

    # failures.csv cannot be written: one line, the summary, exit 1 still
    (out / "unetlite-failures.csv").unlink()
    (out / "unetlite-failures.csv").mkdir()
    assert _segment(src, "-o", out, "--max-pixels", "10M", model=tiny_onnx) == 1
    captured = capsys.readouterr()
    assert "0 done, 4 skipped (already done), 3 failed" in captured.out
    assert f"cannot write {out / 'unetlite-failures.csv'}" in captured.err and "Traceback" not in captured.err


def test_stale_temps_removed_and_a_second_run_on_the_same_out_refused(tiny_onnx, tmp_path, pets_dir, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(_pet(0), src)
    (out / "sub").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / "sub" / f".{_pet(0).name}.png.unetlite-{int(dead.stdout)}-abcd1234.tmp"
    assert is_temp_name(stale.name)
    stale.write_bytes(b"half a png")
    with open(out / LOCK_NAME, "w") as held:  # another run holds OUT
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_onnx)]) == 2
        assert "another unetlite run is writing here" in capsys.readouterr().err
        assert stale.exists()  # a refused run touches nothing
    assert _segment(src, "-o", out, model=tiny_onnx) == 0
    assert not stale.exists()


def test_read_ahead_holds_at_most_its_byte_budget_and_never_deadlocks():
    """Real threads, real waits: costs are granted in order, never above the budget, an item
    larger than the whole budget runs alone, and a batch holding memory is handed out when the
    next item waits for that memory."""
    costs = [30, 50, 20, 200, 40, 40, 40, 10, 60, 0]
    budget = ByteBudget(100)
    live, peak, order = [0], [0], []
    guard = threading.Lock()

    def load(i, reserve):
        reserve(costs[i])
        with guard:
            live[0] += min(costs[i], 100)
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01)
        return i

    def consume():
        for batch in read_ahead(range(len(costs)), load, batch_size=4, workers=3, budget=budget):
            for item in batch:
                order.append(item.value)
                with guard:
                    live[0] -= item.held
                item.release()

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "read-ahead deadlocked"
    assert order == list(range(len(costs)))
    assert peak[0] <= 100 and budget.peak <= 100 and budget.used == 0


def test_small_memory_budget_gives_the_same_outputs(tiny_onnx, tmp_path, pets_dir):
    from unetlite.infer.pipeline.items import SegmentSettings
    from unetlite.infer.pipeline.batch import segment_jobs
    seg = Segmenter(tiny_onnx, providers="cpu")
    jobs = {}
    for budget in (None, 1):  # 1 byte: every image runs alone
        out = tmp_path / f"out{budget}"
        found = collect_jobs([str(PETS / "images")], out, "prob", cwd=tmp_path).jobs[:6]
        summary = segment_jobs(seg, found, SegmentSettings("prob", batch_size=3, budget_bytes=budget), progress=False)
        assert summary.done == 6 and not summary.failed
        jobs[budget] = {j.rel: cv2.imread(str(j.output), cv2.IMREAD_UNCHANGED) for j in found}
    assert jobs[None].keys() == jobs[1].keys()
    for rel, prob in jobs[None].items():
        assert np.array_equal(prob, jobs[1][rel])


def test_reduced_decode_writes_full_size_and_agrees_with_full_decode(tiny_onnx, tmp_path, pets_dir, capsys):
    """A large JPEG is decoded at 1/2..1/8 size for mask/prob (issue 10), but written at its
    original size, with (nearly) the probabilities a full decode gives."""
    src = tmp_path / "big"
    src.mkdir()
    rgb = read_image(_pet(0))
    big = cv2.resize(rgb, (rgb.shape[1] * 4, rgb.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(src / "big.jpg"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    probs = {}
    for flag in ("", "--no-reduced-decode"):
        out = tmp_path / f"out{flag}"
        assert _segment(src, "-o", out, "--format", "prob", *([flag] if flag else []), model=tiny_onnx) == 0
        probs[flag] = cv2.imread(str(out / "big.jpg.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
        assert probs[flag].shape == big.shape[:2]
    assert np.abs(probs[""] - probs["--no-reduced-decode"]).mean() < 0.03


def test_clean_and_tta_flags(tiny_onnx, tmp_path, pets_dir, capsys):
    """--clean is postprocess's clean-up of exactly the plain mask; --tta is part of the configuration."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        shutil.copy(_pet(i), src)
    assert _segment(src, "-o", tmp_path / "plain", model=tiny_onnx) == 0
    assert _segment(src, "-o", tmp_path / "clean", "--clean", model=tiny_onnx) == 0
    for rel in _outputs(tmp_path / "plain"):
        plain = cv2.imread(str(tmp_path / "plain" / rel), cv2.IMREAD_UNCHANGED)
        cleaned = cv2.imread(str(tmp_path / "clean" / rel), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(cleaned > 0, clean_mask(plain > 0) > 0)
    assert _segment(src, "-o", tmp_path / "plain", "--tta", model=tiny_onnx) == 0
    assert "3 redone because the configuration changed" in capsys.readouterr().out.splitlines()[-1]


def test_sigterm_keeps_what_was_written_and_the_next_run_resumes(tiny_onnx, tmp_path, pets_dir):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    images = sorted((PETS / "images").glob("*.jpg"))[:24]
    for k in range(240):  # distinct copies (links would be one file)
        shutil.copy(images[k % len(images)], src / f"{k:03d}.jpg")
    cmd = [sys.executable, "-m", "unetlite.infer.cli", "segment", str(src), "-o", str(out), "--model", str(tiny_onnx),
           "--providers", "cpu", "--no-progress", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*.png"))) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    written = list(out.glob("*.png"))
    assert 0 < len(written) < 240
    assert len((out / MANIFEST_NAME).read_text().splitlines()) == len(written)
    assert not [p for p in out.iterdir() if is_temp_name(p.name)]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{240 - len(written)} done, {len(written)} skipped" in rerun.stdout


@pytest.mark.skipif(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, reason="SIGTERM is ignored in this process")
def test_sigterm_before_the_pipeline_starts_exits_143(tiny_onnx, tmp_path, pets_dir, capsys, monkeypatch):
    """A real SIGTERM while the model loads (raised from where the model is opened): the command
    exits 143, not 130, says so in one line, restores the handler and leaves OUT unlocked."""
    import unetlite.infer.pipeline.segment_run as segment

    def terminated_while_loading(engine):
        signal.raise_signal(signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as patch:
        patch.setattr(segment, "open_segmenter", terminated_while_loading)
        assert _segment(_pet(0), "-o", tmp_path / "out", model=tiny_onnx) == 143
    assert capsys.readouterr().err.strip() == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is handler
    assert _segment(_pet(0), "-o", tmp_path / "out", model=tiny_onnx) == 0  # not locked, nothing half-done
    assert "1 done, 0 skipped" in capsys.readouterr().out


def test_usage_errors_exit_2(tiny_onnx, tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "o"), "--model", str(tiny_onnx)]) == 2
    assert "no input images found" in capsys.readouterr().err
    assert main(["segment", str(PETS / "images" / "Abyssinian_1.jpg"), "-o", str(tmp_path / "o"),
                 "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx: model file not found" in capsys.readouterr().err
    assert main(["segment", "x.jpg", "-o", "o", "--format", "bogus"]) == 2


def test_tiled_inference_is_seamless_and_full_size(tiny_onnx, pets_dir):
    """Overlap-tile inference, tested as properties of the tiling rather than of one trained model:
    the output has the input's size; where tiles do not overlap, each tile is exactly one model
    pass over its pixels (tiles land where they belong; one tile == untiled); with the default
    overlap the blend leaves no seams: the map changes across tile edges no more than elsewhere,
    while the same measure does flag the seams of unblended (overlap 0) tiles."""
    from unetlite.infer.engine.tile import _starts, predict_tiled

    seg = Segmenter(tiny_onnx, providers="cpu")
    th, tw = seg.contract.input_size  # 64x64; the dynamic-size model also runs one pass at any multiple of 8
    photo = read_image(PETS / "images" / f"{pet_names('test', 1)[0]}.jpg")

    def one_pass(rgb: np.ndarray) -> np.ndarray:
        return seg.run(seg.prepare(rgb, rgb.shape[:2])[None])[0]

    for h, w in ((480, 704), (th, tw), (97, 131), (40, 50)):  # larger, one tile, odd sizes, smaller than a tile
        result = seg(cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA), tile=True)
        assert result.probability.shape == result.mask.shape == (h, w)
        assert np.isfinite(result.probability).all()
        assert 0.0 <= result.probability.min() and result.probability.max() <= 1.0

    grid = cv2.resize(photo, (3 * tw, 2 * th), interpolation=cv2.INTER_AREA)
    blocks = predict_tiled(seg, grid, overlap=0.0)
    for y in range(0, 2 * th, th):
        for x in range(0, 3 * tw, tw):
            np.testing.assert_allclose(blocks[y:y + th, x:x + tw], one_pass(grid[y:y + th, x:x + tw]), atol=1e-5)
    np.testing.assert_allclose(predict_tiled(seg, grid[:th, :tw], overlap=0.0), one_pass(grid[:th, :tw]), atol=1e-5)

    def seam_ratio(prob: np.ndarray, overlap: float) -> float:
        """Largest (over rows, columns) mean change across tile edges / mean change elsewhere: ~1 when
        seamless, several times that where tiles meet unblended (a conv net's outputs differ near a
        tile's border, where it sees zero padding instead of the neighbouring pixels)."""
        ratios = []
        for axis, tile in ((0, th), (1, tw)):
            margin, step = int(tile * overlap / 2), max(1, int(tile * (1 - overlap)))
            starts = np.array(_starts(prob.shape[axis] + 2 * margin, tile, step)) - margin
            edges = {e for e in np.concatenate([starts, starts + tile]) if 0 < e < prob.shape[axis]}
            change = np.abs(np.diff(prob, axis=axis)).mean(axis=1 - axis)  # change[i]: from i to i+1
            at_edge = np.isin(np.arange(change.size), [e - 1 for e in edges])
            ratios.append(change[at_edge].mean() / change[~at_edge].mean())
        return max(ratios)

    image = cv2.resize(photo, (704, 480), interpolation=cv2.INTER_AREA)
    # Measured over 16 test images and two tiny models: blended 0.6-1.4, unblended 5.2-17.
    assert seam_ratio(predict_tiled(seg, image), 0.5) < 2.0
    assert seam_ratio(predict_tiled(seg, image, overlap=0.0), 0.0) > 2.0  # the measure can fail

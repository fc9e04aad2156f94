"""`unetlite eval`: metrics, dataset layouts, failures, on real pets and a real tiny model."""
from __future__ import annotations

import csv
import json
import shutil
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PETS, pet_names
from unetlite.infer.cli import main
from unetlite.infer.io.dataset import discover, find_pairs
from unetlite.infer.pipeline.evaluate import SUMMARY_KEYS, EvalResult, evaluate
from unetlite.infer.pipeline.metrics import confusion, mask_iou
from unetlite.infer.engine.segmenter import Segmenter


@pytest.fixture(scope="module")
def names(pets_dir) -> list[str]:
    """Up to 20 test-split names (8 in the in-repo fixture set); read when a test needs them."""
    return pet_names("test", 20)


def _eval_json(capsys, *argv) -> tuple[int, dict]:
    code = main(["eval", *map(str, argv), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _oxford_copy(root: Path, names: list[str]) -> Path:
    """The dataset as distributed: annotations/trimaps and list lines 'NAME CLASS SPECIES BREED'."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for n in names:
        shutil.copy(PETS / "images" / f"{n}.jpg", root / "images")
        shutil.copy(PETS / "trimaps" / f"{n}.png", root / "annotations" / "trimaps")
    (root / "annotations" / "test.txt").write_text(
        "#Image CLASS-ID SPECIES BREED ID\n" + "".join(f"{n} {i % 37 + 1} {i % 2 + 1} {i % 12 + 1}\n"
                                                      for i, n in enumerate(names)))
    return root


def _flat_copy(root: Path, names: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "trimaps").mkdir()
    for n in names:
        shutil.copy(PETS / "images" / f"{n}.jpg", root / "images")
        shutil.copy(PETS / "trimaps" / f"{n}.png", root / "trimaps")
    (root / "test.txt").write_text("\n".join(names) + "\n")
    return root


def _stored_rgb(name: str) -> np.ndarray:
    """A fixture photo as stored (no EXIF rotation: trimaps are aligned with the stored pixels), RGB."""
    bgr = cv2.imread(str(PETS / "images" / f"{name}.jpg"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_metrics_on_hand_made_masks():
    a = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.uint8)
    b = np.array([[1, 0, 1, 0], [1, 0, 0, 1]], np.uint8)
    # intersection: (0,0), (1,0) -> 2; union: (0,0),(0,1),(0,2),(1,0),(1,3) -> 5; agree: 8 - 3 disagreements
    assert confusion(a, b) == (2, 5, 5, 8)
    assert mask_iou(a, b) == pytest.approx(2 / 5)
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert mask_iou(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        confusion(a, a[:, :3])

    result = EvalResult()
    result.add("x", a, b)                                   # IoU 2/5, accuracy 5/8
    result.add("y", np.ones((2, 2)), np.array([[1, 0], [0, 0]]))  # IoU 1/4, accuracy 1/4
    assert result.images == 2
    assert result.iou == pytest.approx(float(Fraction(2 + 1, 5 + 4)))
    assert result.mean_image_iou == pytest.approx(float((Fraction(2, 5) + Fraction(1, 4)) / 2))
    assert result.pixel_accuracy == pytest.approx(float(Fraction(5 + 1, 8 + 4)))
    assert [s.foreground_true for s in result.per_image] == [3, 4]
    assert [s.foreground_pred for s in result.per_image] == [4, 1]


def test_eval_matches_independent_recomputation(tiny_onnx, names):
    pairs = discover(PETS, "test")[:len(names)]
    assert [p.name for p in pairs] == names
    seg = Segmenter(tiny_onnx, providers="cpu")
    result = evaluate(seg, pairs, batch_size=6)

    inter = union = agree = total = 0
    ious = []
    for n in names:
        rgb = _stored_rgb(n)
        truth = cv2.imread(str(PETS / "trimaps" / f"{n}.png"), cv2.IMREAD_UNCHANGED) == 1
        pred = seg.predict([rgb])[0].probability >= 0.5
        i, u = np.sum(truth & pred), np.sum(truth | pred)
        inter, union, agree, total = inter + i, union + u, agree + np.sum(truth == pred), total + truth.size
        ious.append(i / u if u else 1.0)

    assert result.images == len(names) and not result.failed
    for value in (result.iou, result.mean_image_iou, result.pixel_accuracy):
        assert 0.0 <= value <= 1.0
    assert result.iou == pytest.approx(inter / union)
    assert result.mean_image_iou == pytest.approx(np.mean(ious))
    assert result.pixel_accuracy == pytest.approx(agree / total)
    # the comparison is not trivial: predictions overlap the pets without matching them exactly
    assert 0 < inter < union


def test_both_layouts_and_json_keys(tiny_onnx, names, tmp_path, capsys):
    oxford = _oxford_copy(tmp_path / "oxford", names)
    code, flat = _eval_json(capsys, "--data", PETS, "--limit", len(names), "--model", tiny_onnx)
    assert code == 0
    assert set(flat) == set(SUMMARY_KEYS) and len(flat) == 4
    assert flat["images"] == len(names)
    code, ox = _eval_json(capsys, "--data", oxford, "--model", tiny_onnx)
    assert code == 0 and ox == flat
    code, explicit = _eval_json(capsys, "--images", oxford / "images", "--trimaps", oxford / "annotations" / "trimaps",
                                "--list", oxford / "annotations" / "test.txt", "--model", tiny_onnx,
                                "--batch-size", 3)
    assert code == 0 and explicit == pytest.approx(flat)


def test_corrupt_and_missing_pairs_are_skipped_and_counted(tiny_onnx, names, tmp_path, capsys, caplog):
    root = _flat_copy(tmp_path / "flat", names[:8])
    bad = root / "trimaps" / f"{names[2]}.png"
    bad.write_bytes(bad.read_bytes()[:200])               # truncated PNG
    (root / "trimaps" / f"{names[5]}.png").unlink()         # image without trimap
    binary = root / "trimaps" / f"{names[6]}.png"          # a 0/255 mask, not a trimap
    cv2.imwrite(str(binary), (cv2.imread(str(binary), cv2.IMREAD_UNCHANGED) == 1).astype(np.uint8) * 255)
    csv_path = tmp_path / "scores.csv"
    code = main(["eval", "--data", str(root), "--model", str(tiny_onnx), "--per-image", str(csv_path)])
    out, err = capsys.readouterr()
    messages = err + caplog.text  # skipped pairs are logged (stderr outside pytest)
    assert code == 1
    assert f"{names[2]}.png: truncated PNG" in messages
    assert f"{names[5]}: trimap missing" in messages
    assert f"{names[6]}.png: values outside" in messages
    assert "3 pair(s) failed" in err
    assert "images" in out and "pixel accuracy" in out
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [n for i, n in enumerate(names[:8]) if i not in (2, 5, 6)]
    assert set(rows[0]) == {"name", "iou", "pixel_accuracy", "foreground_true", "foreground_pred"}
    assert all(0 <= float(r["iou"]) <= 1 and int(r["foreground_true"]) > 0 for r in rows)


def test_per_image_csv_matches_result_and_trimap_resolution(tiny_onnx, names, tmp_path, capsys):
    root = _flat_copy(tmp_path / "flat", names[:5])
    # a trimap stored at half size: scoring happens at the trimap's resolution
    small = root / "trimaps" / f"{names[0]}.png"
    trimap = cv2.imread(str(small), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(small), cv2.resize(trimap, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_NEAREST))
    pairs = find_pairs(root / "images", root / "trimaps")
    result = evaluate(Segmenter(tiny_onnx, providers="cpu"), pairs)
    sizes = [cv2.imread(str(p.trimap), cv2.IMREAD_UNCHANGED).size for p in pairs]
    assert result.total == sum(sizes) and result.images == 5

    csv_path = tmp_path / "per_image.csv"
    code, summary = _eval_json(capsys, "--images", root / "images", "--trimaps", root / "trimaps",
                               "--model", tiny_onnx, "--per-image", csv_path)
    assert code == 0 and summary["images"] == 5
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary["images"]
    assert np.mean([float(r["iou"]) for r in rows]) == pytest.approx(summary["mean_image_iou"], abs=1e-5)


def test_no_pairs_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "trimaps").mkdir()
    assert main(["eval", "--data", str(tmp_path)]) == 2
    assert "no image/trimap pairs" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "nowhere")]) == 2
    assert "not a labelled layout" in capsys.readouterr().err
    assert main(["eval", "--images", str(tmp_path / "images")]) == 2
    assert "--images needs --trimaps" in capsys.readouterr().err


def test_by_breed_table_and_json(tiny_onnx, names, tmp_path, capsys):
    """--by-breed adds per-breed and cats/dogs numbers (recomputed here independently) and leaves
    the four summary keys exactly as without it."""
    from unetlite.infer.io.dataset import breed_of, species_of

    assert breed_of("american_bulldog_78") == "american_bulldog" and breed_of("Bengal_1") == "Bengal"
    assert species_of("Bengal") == "cat" and species_of("american_bulldog") == "dog"
    everything = pet_names("test")
    mixed = everything[::max(1, len(everything) // 8)][:8]  # cats and dogs of several breeds
    data = _flat_copy(tmp_path / "mixed", mixed)
    code, plain = _eval_json(capsys, "--data", data, "--model", tiny_onnx)
    assert code == 0
    code, full = _eval_json(capsys, "--data", data, "--model", tiny_onnx, "--by-breed")
    assert code == 0
    assert {k: full[k] for k in SUMMARY_KEYS} == plain

    seg = Segmenter(tiny_onnx, providers="cpu")
    counts: dict[str, list] = {}
    for n in mixed:
        rgb = _stored_rgb(n)
        truth = cv2.imread(str(PETS / "trimaps" / f"{n}.png"), cv2.IMREAD_UNCHANGED) == 1
        pred = seg.predict([rgb])[0].mask > 0
        breed = n.rsplit("_", 1)[0]
        counts.setdefault(breed, []).append((np.sum(truth & pred), np.sum(truth | pred)))
    assert set(full["by_breed"]) == set(counts)
    for breed, pairs in counts.items():
        row = full["by_breed"][breed]
        assert row["images"] == len(pairs)
        assert row["species"] == ("cat" if breed[0].isupper() else "dog")
        assert row["iou"] == pytest.approx(sum(i for i, _ in pairs) / sum(u for _, u in pairs))
        assert row["mean_image_iou"] == pytest.approx(np.mean([i / u if u else 1.0 for i, u in pairs]))
    species = {"cats": [b for b in counts if b[0].isupper()], "dogs": [b for b in counts if not b[0].isupper()]}
    for group, breeds in species.items():
        if breeds:
            assert full["by_species"][group]["images"] == sum(len(counts[b]) for b in breeds)

    assert main(["eval", "--data", str(data), "--model", str(tiny_onnx), "--by-breed"]) == 0
    table = capsys.readouterr().out
    for breed in counts:
        assert breed in table
    assert any(line.startswith(("cats", "dogs")) for line in table.splitlines())


def test_eval_shares_segments_pipeline_header_bombs_and_several_data_folders(tiny_onnx, names, tmp_path, capsys,
                                                                              caplog):
    """An image whose header claims 30000x30000 is refused by name (not decoded) and the rest is
    scored; two --data folders score like one folder holding both halves."""
    half = len(names) // 2
    first, second = _flat_copy(tmp_path / "a", names[:half]), _flat_copy(tmp_path / "b", names[half:])
    code, both = _eval_json(capsys, "--data", first, "--data", second, "--model", tiny_onnx)
    assert code == 0
    code, single = _eval_json(capsys, "--data", PETS, "--limit", len(names), "--model", tiny_onnx)
    assert code == 0 and both == pytest.approx(single)

    victim = first / "images" / f"{names[0]}.jpg"
    data = bytearray(victim.read_bytes())
    sof = next(i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
    victim.write_bytes(bytes(data))
    code = main(["eval", "--data", str(first), "--model", str(tiny_onnx), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    assert json.loads(out)["images"] == half - 1
    messages = err + caplog.text  # skipped pairs are logged (stderr outside pytest)
    assert f"{victim}: image is 30000x30000" in messages and "Traceback" not in messages


def test_ignore_outline_leaves_the_trimap_border_out_of_both_sides(tiny_onnx, names, tmp_path, capsys):
    """--ignore-outline: the border class (3) is scored by neither side; 0/255 masks have no band."""
    pairs = discover(PETS, "test")[:len(names)]
    seg = Segmenter(tiny_onnx, providers="cpu")
    plain, outline = evaluate(seg, pairs), evaluate(seg, pairs, ignore_outline=True)
    inter = union = agree = total = 0
    for n in names:
        trimap = cv2.imread(str(PETS / "trimaps" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
        keep = trimap != 3
        truth = (trimap == 1)[keep]
        rgb = _stored_rgb(n)
        pred = (seg.predict([rgb])[0].probability >= 0.5)[keep]
        inter, union = inter + np.sum(truth & pred), union + np.sum(truth | pred)
        agree, total = agree + np.sum(truth == pred), total + truth.size
    assert outline.iou == pytest.approx(inter / union)
    assert outline.pixel_accuracy == pytest.approx(agree / total)
    assert outline.total < plain.total and outline.iou != plain.iou
    code, flat = _eval_json(capsys, "--data", PETS, "--limit", len(names), "--model", tiny_onnx, "--ignore-outline")
    assert code == 0 and flat["iou"] == pytest.approx(outline.iou)

    # A 0/255 mask layout has no outline band: the flag changes nothing there.
    root = tmp_path / "masks_layout"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in names[:4]:
        shutil.copy(PETS / "images" / f"{n}.jpg", root / "images")
        trimap = cv2.imread(str(PETS / "trimaps" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(root / "masks" / f"{n}.png"), (trimap == 1).astype(np.uint8) * 255)
    code, a = _eval_json(capsys, "--data", root, "--model", tiny_onnx)
    code2, b = _eval_json(capsys, "--data", root, "--model", tiny_onnx, "--ignore-outline")
    assert code == code2 == 0 and a == b and a["images"] == 4

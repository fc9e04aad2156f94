"""unetlite.infer must work on a machine without TensorFlow.

Each test runs a fresh Python whose import system refuses tensorflow, keras, tf2onnx (and tf_keras):
a meta-path finder, first in sys.meta_path, raises ModuleNotFoundError for them and records who asked.
So these tests pass on an install without the [train] extra, and fail if any infer module imports
(or even probes for) TensorFlow while being imported or while segment, video and eval run.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np

from conftest import FIXTURES, TINY_ONNX

PETS = FIXTURES / "pets"  # always the in-repo fixture set, whatever shared data is present
CLIP = FIXTURES / "video" / "vtest_people_short_384x288.mp4"
BLOCKED = ("tensorflow", "keras", "tf2onnx", "tf_keras")

_PRELUDE = f"""
import sys, traceback
BLOCKED = {BLOCKED!r}
ATTEMPTS = []

class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in BLOCKED:
            return None
        frames = [f for f in traceback.extract_stack()[:-1]
                  if "importlib" not in f.filename and not f.filename.startswith("<frozen")]
        ATTEMPTS.append([name, f"{{frames[-1].filename}}:{{frames[-1].lineno}}" if frames else "?"])
        raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: TensorFlow is not installed here)", name=name)

sys.meta_path.insert(0, _NoTensorFlow())
for _m in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
    del sys.modules[_m]

def loaded_blocked():
    return sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED and sys.modules[m] is not None)
"""


def _run_without_tf(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=600)


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_blocker_really_blocks():
    """The guard itself: tensorflow cannot be imported under it, and the attempt is recorded."""
    result = _last_json(_run_without_tf("""
        import json
        try:
            import tensorflow  # noqa: F401
            imported = True
        except ModuleNotFoundError:
            imported = False
        print(json.dumps({"imported": imported, "attempts": ATTEMPTS}))
    """))
    assert result["imported"] is False
    assert [name for name, _ in result["attempts"]] == ["tensorflow"]


def test_every_infer_module_imports_without_tensorflow():
    """Importing any module of unetlite.infer neither needs nor tries TensorFlow. Modules whose own
    optional extra (fastapi, ray, ...) is missing here are listed, not failed."""
    result = _last_json(_run_without_tf("""
        import importlib, json, pkgutil
        import unetlite.infer
        modules, missing_extra = [], {}
        for info in pkgutil.walk_packages(unetlite.infer.__path__, "unetlite.infer."):
            if info.name.endswith(".__main__"):  # runs the CLI when imported
                continue
            try:
                importlib.import_module(info.name)
                modules.append(info.name)
            except ModuleNotFoundError as error:
                if (error.name or "").partition(".")[0] in BLOCKED:
                    raise
                missing_extra[info.name] = error.name
        print(json.dumps({"modules": modules, "missing_extra": missing_extra, "attempts": ATTEMPTS,
                          "loaded": loaded_blocked()}))
    """))
    assert result["attempts"] == [], f"infer modules tried to import TensorFlow: {result['attempts']}"
    assert result["loaded"] == []
    assert len(result["modules"]) >= 10, result  # the walk really saw the package


def _all_pet_iou(names: list[str]) -> float:
    """Mean per-image IoU of the constant predictor 'every pixel is pet' (the all-background one scores 0)."""
    return float(np.mean([(cv2.imread(str(PETS / "trimaps" / f"{n}.png"), cv2.IMREAD_UNCHANGED) == 1).mean()
                          for n in names]))


def test_segment_video_and_eval_run_end_to_end_without_tensorflow(tiny_onnx, tmp_path):
    """The committed tiny model on the fixture data: segment, video and eval through the CLI, in a
    Python where TensorFlow cannot be imported; nothing even asks for it. The model is real: its IoU
    on held-out fixture pets is well above a constant predictor's."""
    test_names = (PETS / "test.txt").read_text().split()
    images = [str(PETS / "images" / f"{n}.jpg") for n in test_names[:3]]
    masks, video_out = tmp_path / "masks", tmp_path / "clip.mp4"
    result = _last_json(_run_without_tf("""
        import contextlib, io, json
        from unetlite.infer import Segmenter, read_image
        from unetlite.infer.cli import main
        model, pets, clip, masks, video_out, *images = sys.argv[1:]
        seg = Segmenter(model, providers="cpu")
        shape_ok = seg(read_image(images[0])).mask.shape == read_image(images[0]).shape[:2]
        codes = {}
        codes["segment"] = main(["segment", *images, "-o", masks, "--model", model, "--providers", "cpu",
                                 "--no-progress"])
        codes["video"] = main(["video", clip, "-o", video_out, "--model", model, "--providers", "cpu",
                               "--max-frames", "12"])
        scores = {}
        for split in ("test", "trainval"):
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                codes[f"eval {split}"] = main(["eval", "--data", pets, "--split", split, "--model", model,
                                               "--providers", "cpu", "--json", "--no-progress"])
            scores[split] = json.loads(buffer.getvalue().strip().splitlines()[-1])
        print(json.dumps({"shape_ok": shape_ok, "codes": codes, "scores": scores, "attempts": ATTEMPTS,
                          "loaded": loaded_blocked()}))
    """, str(tiny_onnx), str(PETS), str(CLIP), str(masks), str(video_out), *images))

    assert result["attempts"] == [], f"TensorFlow was asked for: {result['attempts']}"
    assert result["loaded"] == []
    assert result["codes"] == {"segment": 0, "video": 0, "eval test": 0, "eval trainval": 0}, result["codes"]
    assert result["shape_ok"]

    written = [p for p in masks.rglob("*") if p.is_file() and p.suffix == ".png"]  # naming rules live in the pipeline
    assert len(written) == len(images), written
    for path in written:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert mask is not None and 0 < (mask > 0).mean() < 1  # a real mask: some pet, some background

    capture = cv2.VideoCapture(str(video_out))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape[:2] == (288, 384) and frames == 12

    for split, margin in (("test", 0.1), ("trainval", 0.2)):
        names = (PETS / f"{split}.txt").read_text().split()
        score, baseline = result["scores"][split], _all_pet_iou(names)
        assert score["images"] == len(names), score
        assert score["mean_image_iou"] >= baseline + margin and score["mean_image_iou"] >= 1.5 * baseline, \
            (split, score, baseline)


def test_committed_model_is_the_fixture_model():
    """The fixture that every inference test uses is the committed file, not something trained here."""
    from conftest import TINY_RECORD

    record = json.loads(TINY_RECORD.read_text())
    assert TINY_ONNX.stat().st_size == record["bytes"] < 1_000_000
    import hashlib

    assert hashlib.sha256(TINY_ONNX.read_bytes()).hexdigest() == record["sha256"]


def test_training_commands_explain_how_to_install_tensorflow():
    proc = _run_without_tf("""
        import json
        from unetlite.infer.cli import main
        codes = [main(["train", "--data", "somewhere"]), main(["export", "ckpt.keras", "-o", "m.onnx"])]
        print(json.dumps({"codes": codes, "loaded": loaded_blocked()}))
    """)
    result = _last_json(proc)
    assert result == {"codes": [2, 2], "loaded": []}
    hints = [line for line in proc.stderr.splitlines() if "pip install" in line and "[train]" in line]
    assert len(hints) == 2, proc.stderr  # one line each, naming the extra to install

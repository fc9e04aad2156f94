"""unetlite.infer must work on a machine without TensorFlow."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import PETS, pet_names


def _run_without_tf(code: str) -> subprocess.CompletedProcess:
    prelude = "import sys\nfor m in ('tensorflow', 'keras', 'tf2onnx'):\n    sys.modules[m] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_engine_and_cli_run_end_to_end_without_tensorflow(tiny_onnx, tmp_path, pets_dir):
    image = PETS / "images" / f"{pet_names('test', 1)[0]}.jpg"
    out = tmp_path / "out"
    proc = _run_without_tf(f"""
        import unetlite.infer
        from unetlite.infer import Segmenter, read_image
        from unetlite.infer.cli import main
        seg = Segmenter(r"{tiny_onnx}", providers="cpu")
        assert seg(read_image(r"{image}")).mask.shape == read_image(r"{image}").shape[:2]
        code = main(["segment", r"{image}", "-o", r"{out}", "--model", r"{tiny_onnx}", "--no-progress"])
        assert code == 0, code
        assert [m for m in ("tensorflow", "keras", "tf2onnx") if sys.modules.get(m) is not None] == []
        print("OK")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("OK")
    written = [p for p in out.rglob("*") if p.is_file() and p.suffix == ".png"]  # naming rules live in naming.py
    assert len(written) == 1, written


def test_training_commands_explain_how_to_install_tensorflow():
    proc = _run_without_tf("""
        from unetlite.infer.cli import main
        print("CODES", main(["train", "--data", "somewhere"]), main(["export", "ckpt.keras", "-o", "m.onnx"]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert "CODES 2 2" in proc.stdout
    assert proc.stderr.count("pip install 'unetlite[train]'") == 2

"""The command line's shared behaviour: light start-up, one error line with the error's exit code."""
from __future__ import annotations

import subprocess
import sys

import pytest

from unetlite.infer.cli import main
from unetlite.infer.errors import UnetliteError, first_line, one_line
from unetlite.infer.extras import MissingExtra, require_extra


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["segment", "--help"], ["video", "--help"]])
def test_parsing_loads_neither_opencv_nor_a_runtime(argv):
    code = ("import sys\nfrom unetlite.infer.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('cv2', 'onnxruntime', 'openvino', 'tensorflow') if m in sys.modules))" % argv)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_info_exits_2_for_a_missing_model(tmp_path, capsys):
    assert main(["info", str(tmp_path / "none.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"unetlite info: {tmp_path / 'none.onnx'}: file not found"


def test_a_missing_model_is_exit_2_for_every_command(tmp_path, capsys):
    missing = str(tmp_path / "none.onnx")
    for argv in (["segment", str(tmp_path), "-o", str(tmp_path / "o"), "--model", missing],
                 ["eval", "--images", str(tmp_path), "--trimaps", str(tmp_path), "--model", missing]):
        (tmp_path / "a.jpg").write_bytes(b"x")
        (tmp_path / "a.png").write_bytes(b"x")
        assert main(argv) == 2


def test_library_errors_carry_their_exit_code(monkeypatch, capsys):
    def boom(args):
        raise UnetliteError("one line for users")

    from unetlite.infer.cli import build_parser
    parser = build_parser()
    args = parser.parse_args(["info"])
    monkeypatch.setattr(args, "run", boom, raising=False)
    monkeypatch.setattr("unetlite.infer.cli.build_parser", lambda: _FixedParser(args))
    assert main(["info"]) == 2
    assert capsys.readouterr().err == "unetlite info: one line for users\n"


class _FixedParser:
    def __init__(self, args):
        self.args = args

    def parse_args(self, argv):
        return self.args


def test_require_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingExtra) as info:
        require_extra("serve", "serve")
    assert str(info.value) == ("serve needs FastAPI, uvicorn and python-multipart (fastapi is not installed); "
                               "install with: pip install '.[serve]'")
    assert info.value.exit_code == 2


def test_one_line_messages():
    assert first_line(ValueError("a\nb")) == "a"
    assert one_line(RuntimeError("x\ny")) == "RuntimeError: y"
    assert one_line(MemoryError()) == "not enough memory for this image"


def test_train_and_export_do_not_import_the_cli():
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    for path in [*(root / "train").glob("*.py"), *(root / "export").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("unetlite.infer.cli"), path.name

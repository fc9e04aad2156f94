"""What every benchmark shares: where its inputs are by default, and how its result leaves.

Benchmarks are run as scripts (``python benchmarks/x.py``), which puts this folder on
``sys.path``: ``from _report import emit``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UNETLITE_SHARED_DATA", REPO.parent / "shared" / "data"))
PETS_IMAGES = SHARED_DATA / "oxford_pets" / "images"       # the 491 shared pet JPEGs
FIXTURE_IMAGES = REPO / "tests" / "data" / "pets" / "images"  # the small set in the repo


def emit(report: dict, out: Path | None = None, show: bool = True) -> None:
    """Print the report as JSON (``show``) and, when ``out`` is given, write it there atomically."""
    from unetlite.infer.io.images import write_atomic

    text = json.dumps(report, indent=2) + "\n"
    if show:
        print(text, end="")
    if out is not None:
        write_atomic(out, text.encode())

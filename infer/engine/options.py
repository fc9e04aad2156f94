"""Which model and runtime a run uses: what --model, --int8, --providers, --threads, --precision ask for."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineOptions:
    model: Path | None = None
    int8: bool = False
    providers: str = "auto"
    threads: int | None = None
    precision: str = "fp32"


def open_segmenter(engine: EngineOptions, spin: bool = False):
    """The Segmenter ``engine`` asks for (ModelLoadError otherwise). Spinning is off by default:
    every command runs reader/writer threads on the same cores."""
    from .segmenter import Segmenter
    return Segmenter(engine.model, providers=engine.providers, threads=engine.threads, spin=spin,
                     precision=engine.precision, int8=engine.int8)

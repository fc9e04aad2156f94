"""PLACEHOLDER: `unetlite segment` is being written; replace this whole module."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("segment", help="(not yet implemented)")
    p.set_defaults(run=lambda args: 2)

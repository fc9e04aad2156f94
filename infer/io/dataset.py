"""Finding image/trimap pairs in the Oxford-IIIT Pet layouts (used by eval and training).

Three layouts are understood:
- as distributed: ``images/NAME.jpg``, ``annotations/trimaps/NAME.png``,
  ``annotations/{trainval,test}.txt`` (lines "NAME CLASS SPECIES BREED");
- flat: ``images/``, ``trimaps/``, ``{trainval,test}.txt`` (one NAME per line);
- binary masks: ``images/``, ``masks/NAME.png`` with 0 = background and 255 = pet
  (hand-painted or video-annotation sets), optional split lists beside them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    name: str
    image: Path
    trimap: Path          # the label file: a trimap or a 0/255 mask, as ``kind`` says
    kind: str = "trimap"  # "trimap" (1 pet, 2 background, 3 border) or "mask" (0/255)


class PairList(list):
    """A plain list of Pairs that also remembers, as one-line messages, the names left out
    for lack of a partner, so callers (``unetlite eval``) can count them as failures."""

    def __init__(self, pairs=(), missing=()):
        super().__init__(pairs)
        self.missing: list[str] = list(missing)


@dataclass(frozen=True)
class Layout:
    images: Path
    trimaps: Path
    lists: Path   # folder holding trainval.txt / test.txt
    kind: str = "trimap"


def label_problem(label, kind: str) -> str | None:
    """Why ``label`` is not a valid label of its kind (None when it is): scoring or training on a
    0/255 mask read as a trimap (or the reverse) would be silently wrong."""
    import numpy as np
    allowed = (0, 255) if kind == "mask" else (1, 2, 3)
    if np.isin(label, allowed).all():
        return None
    what = "a 0/255 binary mask" if kind == "mask" else "an Oxford-IIIT Pet trimap"
    return f"values outside {{{', '.join(map(str, allowed))}}}: not {what}"


def breed_of(name: str) -> str:
    """Oxford-IIIT Pet names are BREED_NUMBER: ``american_bulldog_78`` -> ``american_bulldog``."""
    return name.rsplit("_", 1)[0] if "_" in name else name


def species_of(breed: str) -> str:
    """"cat" or "dog": the dataset capitalises cat breeds (``Bengal``) and not dog breeds (``boxer``)."""
    return "cat" if breed[:1].isupper() else "dog"


def find_layout(root: str | Path) -> Layout:
    """Detect which of the two layouts ``root`` uses."""
    root = Path(root)
    if (root / "annotations" / "trimaps").is_dir():
        return Layout(root / "images", root / "annotations" / "trimaps", root / "annotations")
    if (root / "trimaps").is_dir():
        return Layout(root / "images", root / "trimaps", root)
    if (root / "masks").is_dir():
        return Layout(root / "images", root / "masks", root, kind="mask")
    raise FileNotFoundError(f"{root}: no trimaps/, annotations/trimaps/ or masks/ folder (not a labelled layout)")


def read_list(path: str | Path) -> list[str]:
    """Names from a split file; extra columns and '#' comments are ignored."""
    names = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])
    return names


def _index(folder: Path, extensions) -> dict[str, Path]:
    # Sorted so that when NAME.jpg and NAME.png both exist the choice is deterministic.
    return {p.stem: p for p in sorted(folder.iterdir(), reverse=True)
            if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith("._")}


def find_pairs(images_dir: str | Path, trimaps_dir: str | Path, list_file: str | Path | None = None,
               kind: str = "trimap") -> PairList:
    """Pairs for the names in ``list_file`` (or every image that has a trimap).

    Names missing a partner are logged by name, left out, and listed in ``.missing``.
    """
    images = _index(Path(images_dir), IMAGE_EXTENSIONS)
    trimaps = _index(Path(trimaps_dir), {".png"})
    names = read_list(list_file) if list_file else sorted(images)
    pairs = PairList()
    for name in names:
        if name not in images:
            pairs.missing.append(f"{name}: image missing in {images_dir}")
        elif name not in trimaps:
            pairs.missing.append(f"{name}: trimap missing in {trimaps_dir}")
        else:
            pairs.append(Pair(name, images[name], trimaps[name], kind))
    for message in pairs.missing:
        log.warning("%s, skipped", message)
    return pairs


def discover(root: str | Path, split: str | None = "test") -> PairList:
    """Pairs of ``split`` under ``root`` (either layout); all pairs when the list is absent or split is None."""
    layout = find_layout(root)
    list_file = layout.lists / f"{split}.txt" if split else None
    if list_file is not None and not list_file.is_file():
        log.info("%s not found: using every image with a trimap", list_file)
        list_file = None
    return find_pairs(layout.images, layout.trimaps, list_file, layout.kind)

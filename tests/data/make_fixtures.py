"""Rebuild the small fixture set in tests/data from the shared data (../shared/data).

The tests run on this set when ../shared is absent, so a fresh clone can run the README's
test command. Run from the repository root:

    python tests/data/make_fixtures.py [--source ../shared/data]

Pets: 24 chosen Oxford-IIIT Pet pairs (16 trainval + 8 test, cats and dogs), images shrunk to at
most 160 px on the longest side (INTER_AREA, JPEG quality 90), trimaps resized with
nearest-neighbour to the same size (values untouched). Video: the 100-frame clip, copied as is.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
LONGEST = 160
TRAINVAL = [
    # cats
    "Abyssinian_1", "Abyssinian_10", "Abyssinian_100", "Bengal_10", "Bengal_100", "Bengal_101",
    "Birman_102", "Maine_Coon_16",
    # dogs
    "american_bulldog_10", "american_bulldog_100", "american_bulldog_101", "beagle_14",
    "great_pyrenees_108", "samoyed_147", "staffordshire_bull_terrier_13", "keeshond_164",
]
TEST = [
    "Abyssinian_201", "Abyssinian_204", "Bengal_1", "Siamese_63",  # cats
    "american_bulldog_2", "english_cocker_spaniel_2", "keeshond_30", "shiba_inu_208",  # dogs
]
VIDEO = "vtest_people_short_384x288.mp4"


def shrink(image: np.ndarray, trimap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longest side <= LONGEST; area averaging for the photo, nearest for the labels."""
    h, w = image.shape[:2]
    scale = min(1.0, LONGEST / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            cv2.resize(trimap, size, interpolation=cv2.INTER_NEAREST))


def ordered(names: list[str], listing: Path) -> list[str]:
    """Keep the shared list's order, so 'the first N names' mean the same images in both sets."""
    wanted = set(names)
    kept = [n for n in listing.read_text().split() if n in wanted]
    missing = wanted.difference(kept)
    if missing:
        raise SystemExit(f"{listing}: missing {sorted(missing)}")
    return kept


def make_pets(source: Path, target: Path) -> None:
    for sub in ("images", "trimaps"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    for split, names in (("trainval", TRAINVAL), ("test", TEST)):
        names = ordered(names, source / f"{split}.txt")
        for n in names:
            image = cv2.imread(str(source / "images" / f"{n}.jpg"), cv2.IMREAD_COLOR)
            trimap = cv2.imread(str(source / "trimaps" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
            if image is None or trimap is None or image.shape[:2] != trimap.shape[:2]:
                raise SystemExit(f"{n}: unreadable or mismatched pair in {source}")
            image, trimap = shrink(image, trimap)
            cv2.imwrite(str(target / "images" / f"{n}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            cv2.imwrite(str(target / "trimaps" / f"{n}.png"), trimap)
        (target / f"{split}.txt").write_text("\n".join(names) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parents[2] / "shared" / "data")
    args = parser.parse_args()
    make_pets(args.source / "oxford_pets", HERE / "pets")
    (HERE / "video").mkdir(exist_ok=True)
    shutil.copyfile(args.source / "video" / VIDEO, HERE / "video" / VIDEO)


if __name__ == "__main__":
    main()

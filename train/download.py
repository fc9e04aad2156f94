"""Fetch and verify the official Oxford-IIIT Pet archives (``unetlite train --download DIR``)."""
from __future__ import annotations

import hashlib
import logging

import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# The official archives and their published checksums (the same ones torchvision verifies).
OXFORD_PETS = (
    Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
    Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f"),
)


class DownloadError(Exception):
    pass


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: Archive, dest: Path) -> Path:
    """Download to ``dest`` (skipped when a verified copy is there), via a .part file."""
    target = dest / archive.filename
    if target.is_file() and md5sum(target) == archive.md5:
        log.info("%s already downloaded and verified", target)
        return target
    part = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(archive.url, timeout=60) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=archive.filename) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{archive.url}: download failed ({exc})") from None
    actual = md5sum(part)
    if actual != archive.md5:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{archive.url}: checksum mismatch (md5 {actual}, expected {archive.md5})")
    part.replace(target)
    return target


def extract(path: Path, dest: Path) -> None:
    """Extract safely: members must stay inside ``dest`` (tarfile's 'data' filter)."""
    with tarfile.open(path) as tar:
        tar.extractall(dest, filter="data")


def download(dest: str | Path, archives: tuple[Archive, ...] = OXFORD_PETS) -> Path:
    """Fetch, verify and extract into ``dest``; returns the dataset root (Oxford layout)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        extract(fetch(archive, dest), dest)
    if not (dest / "annotations" / "trimaps").is_dir():
        raise DownloadError(f"{dest}: archives extracted but annotations/trimaps is missing")
    return dest




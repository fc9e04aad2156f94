"""Which files a `segment` run takes, and the output name each one gets: local paths and URIs
(``segment --ray``) under one rule set.

Rules (stated in README, relied on by resume):
- a folder's images are the files below it with an image extension and no hidden part in their
  path below the folder: ``in/.thumbs/a.jpg`` and ``in/.a.jpg`` are skipped, locally and in
  URI listings alike (caches and thumbnails are not photos; ``*`` in a glob skips them too);
- an output keeps the source's full file name plus the format's extension
  (``cat.jpg`` -> ``cat.jpg.png``, ``cat.png`` -> ``cat.png.png``);
- a folder input mirrors the paths below that folder;
- files and globs mirror their path relative to the current folder when below it,
  else they get their bare name (so a shell-expanded glob names like a quoted one);
- two different files that would still share an output, or an output that would be an
  input file, stop the run before anything is written (:class:`NamingError`).

Walking follows folder links but enters each real folder once, takes each real file
once (so symlink loops neither hang nor repeat), and never enters OUT.
"""
from __future__ import annotations

import fnmatch
import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Iterable, Iterator

from ..errors import UnetliteError, first_line
from ..io.atomic import display_path
from ..io.formats import get as output_format
from ..io.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

FileId = tuple[int, int]   # (st_dev, st_ino): a file's identity whatever the path to it


class NamingError(UnetliteError):
    """The inputs and OUT cannot be run safely (one-line message; exit 2, nothing written)."""


@dataclass(frozen=True)
class Job:
    """One source file and the output it gets; ``rel`` is the output's path below OUT."""

    source: Path
    output: Path
    rel: str


@dataclass
class Collected:
    """The jobs of a run, plus inputs that gave nothing or could not be listed: (path, reason)."""

    jobs: list[Job] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def output_name(rel: PurePath, fmt: str) -> PurePath:
    """``sub/cat.jpg`` -> ``sub/cat.jpg.png`` for ``--format mask``: the full source name is kept."""
    return rel.with_name(rel.name + output_format(fmt).extension)


def file_id(path: str | os.PathLike) -> FileId | None:
    """Identity of the file a path leads to (links followed); None when it leads nowhere."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def walk_files(root: Path, max_depth: int | None, skip_dirs: frozenset[FileId] = frozenset(),
               problems: list[tuple[str, str]] | None = None) -> Iterator[Path]:
    """Files below ``root`` (depth 0 = root's own files; None = any depth), sorted, following
    folder links but entering each real folder once. Folders in ``skip_dirs`` are not entered."""
    seen: set[FileId] = set()
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        ident = file_id(folder)
        if ident is None or ident in seen or (ident in skip_dirs and depth > 0):
            continue
        seen.add(ident)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            if problems is not None:
                problems.append((display_path(folder), f"cannot list folder ({exc.strerror or exc})"))
            continue
        subfolders = []
        for entry in entries:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()   # follows links
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_dir and (max_depth is None or depth < max_depth):
                subfolders.append((path, depth + 1))
            elif is_file:
                yield path
            elif entry.is_symlink() and not is_dir:
                if os.path.exists(path):
                    log.warning("%s: links to something that is not a regular file (a device, FIFO or socket), "
                                "skipped", display_path(path))
                else:
                    log.warning("%s: broken link, skipped", display_path(path))
        stack.extend(reversed(subfolders))


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_below(rel: PurePath) -> bool:
    """The one rule for a folder's contents (local walk and URI listing): an image extension, and
    no hidden file or folder in the path below the input folder."""
    return rel.suffix.lower() in IMAGE_EXTENSIONS and not any(map(_is_hidden, rel.parts))


def _match(pattern: tuple[str, ...], parts: tuple[str, ...], recursive: bool) -> bool:
    """Glob semantics of Python's glob module: ``*`` never matches a leading dot, ``**`` (only
    when ``recursive``) matches zero or more folders."""
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**" and recursive:
        return any(_match(pattern[1:], parts[i:], recursive)
                   for i in range(len(parts) + 1) if not any(map(_is_hidden, parts[:i])))
    if not parts or (_is_hidden(parts[0]) and not _is_hidden(head)):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _match(pattern[1:], parts[1:], recursive)


def glob_files(spec: str, recursive: bool, skip_dirs: frozenset[FileId] = frozenset(),
               problems: list[tuple[str, str]] | None = None) -> list[Path]:
    """Files matching a glob pattern, found with :func:`walk_files` (loop-safe, unlike glob.glob)."""
    parts = Path(spec).parts
    first = next(i for i, p in enumerate(parts) if glob.has_magic(p))
    base = Path(*parts[:first]) if first else Path(".")
    pattern = parts[first:]
    deep = recursive and "**" in pattern
    max_depth = None if deep else len(pattern) - 1
    found = []
    for path in walk_files(base, max_depth, skip_dirs, problems):
        rel = path.relative_to(base).parts
        if _match(pattern, rel, recursive):
            found.append(path)
    return found


def named_rel(path: Path, cwd: Path) -> PurePath:
    """A file named on the command line (or found by a glob): its path relative to the
    current folder when below it, else its bare name."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(cwd)
    except ValueError:
        return PurePath(absolute.name)


def _folder_files(folder: Path, recursive: bool, skip_dirs: frozenset[FileId],
                  problems: list[tuple[str, str]]) -> Iterator[Path]:
    for path in walk_files(folder, None if recursive else 0, skip_dirs, problems):
        if is_image_below(path.relative_to(folder)):
            yield path


def candidates(inputs: Iterable[str], recursive: bool, skip_dirs: frozenset[FileId], cwd: Path,
               problems: list[tuple[str, str]]) -> Iterator[tuple[Path, PurePath]]:
    """(source, output path below OUT before the format's extension) for every input."""
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            for f in _folder_files(path, recursive, skip_dirs, problems):
                yield f, f.relative_to(path)
        elif path.is_file():
            yield path, named_rel(path, cwd)
        elif glob.has_magic(spec):
            matched = glob_files(spec, recursive, skip_dirs, problems)
            if not matched:
                problems.append((spec, "no file matches this glob"))
            for f in matched:
                yield f, named_rel(f, cwd)
        elif path.exists():
            problems.append((spec, "not a regular file (a device, FIFO or socket)"))
        else:
            problems.append((spec, "no such file, folder or matching glob"))


def collect_jobs(inputs: Iterable[str], out_dir: Path, fmt: str, recursive: bool = False,
                 exclude: frozenset[FileId] = frozenset(), cwd: Path | None = None,
                 run_files: Iterable[Path] = ()) -> Collected:
    """Every (source, output) of a run, each real file once (the first path that reaches it).

    Folder walks and globs never enter OUT (unless OUT is the input folder itself) and skip
    files in ``exclude`` (the outputs OUT's manifest lists). Raises NamingError when two
    different files would share an output, or an output or a run file (``run_files``: the
    manifest, lock and failures file the run writes in OUT) would be an input file, by any
    path: a symbolic link or a hard link to it.
    """
    cwd = Path(os.path.abspath(cwd or Path.cwd()))
    out_id = file_id(out_dir) if out_dir.is_dir() else None
    skip_dirs = frozenset({out_id}) if out_id else frozenset()
    result = Collected()
    owner: dict[str, Path] = {}
    seen: set[FileId] = set()
    for source, rel in candidates(inputs, recursive, skip_dirs, cwd, result.problems):
        ident = file_id(source)
        if ident is None:
            result.problems.append((display_path(source), "file not found"))
            continue
        if ident in exclude or ident in seen:
            continue  # an output of ours, or a file reached again (a link, named twice)
        seen.add(ident)
        name = output_name(rel, fmt).as_posix()
        if name in owner:
            raise NamingError(f"{display_path(owner[name])} and {display_path(source)} would both be written "
                              f"to {display_path(out_dir / name)}; rename one or segment them into different "
                              f"folders")
        owner[name] = source
        result.jobs.append(Job(source, out_dir / name, name))
    check_outputs_are_not_inputs(result.jobs, run_files)
    return result


def check_outputs_are_not_inputs(jobs: list[Job], run_files: Iterable[Path] = ()) -> None:
    """NamingError when any output path or run file is (a symbolic or hard link to) one of the
    run's input files."""
    sources = {os.path.realpath(j.source): j.source for j in jobs}
    by_id = {}
    for job in jobs:
        ident = file_id(job.source)
        if ident is not None:
            by_id[ident] = job.source
    for target in [*(job.output for job in jobs), *run_files]:
        victim = sources.get(os.path.realpath(target))
        if victim is None:
            ident = file_id(target)
            victim = by_id.get(ident) if ident is not None else None
        if victim is not None:
            raise NamingError(f"refusing to write {display_path(target)}: it is an input file "
                              f"({display_path(victim)}); choose another -o folder")


# ----------------------------------------------------------------------------- URIs (segment --ray)

def is_uri(location: str | os.PathLike) -> bool:
    return "://" in os.fsdecode(location)


@dataclass(frozen=True)
class UriJob:
    """A source and output where either is a URI; ``rel`` is the output's path below OUT."""

    source: str
    output: str
    rel: str


def collect_uri_jobs(inputs: Iterable[str], out: str, fmt: str, recursive: bool = False
                     ) -> tuple[list[UriJob], list[tuple[str, str]]]:
    """The same naming for URIs (pyarrow filesystems): a folder's images (:func:`is_image_below`)
    mirror their path below it, a file gets its name plus the format's extension.
    Returns (jobs, problems as (input, reason))."""
    from pyarrow import fs
    jobs, problems = [], []
    for spec in inputs:
        try:
            filesystem, base = fs.FileSystem.from_uri(spec) if is_uri(spec) else (fs.LocalFileSystem(), os.path.abspath(spec))
            info = filesystem.get_file_info(base)
            if info.type == fs.FileType.File:
                found = [(spec, PurePosixPath(PurePosixPath(base).name))]
            elif info.type == fs.FileType.Directory:
                listing = filesystem.get_file_info(fs.FileSelector(base, recursive=recursive))
                prefix = spec.rstrip("/")
                found = sorted((f"{prefix}/{rel}", PurePosixPath(rel)) for rel in
                               (PurePosixPath(i.path).relative_to(base).as_posix() for i in listing
                                if i.type == fs.FileType.File)
                               if is_image_below(PurePosixPath(rel)))
            else:
                problems.append((spec, "no such file or folder"))
                continue
        except (OSError, ValueError) as exc:
            problems.append((spec, f"cannot list ({first_line(exc)})"))
            continue
        for source, rel in found:
            name = output_name(rel, fmt).as_posix()
            jobs.append(UriJob(source, f"{out.rstrip('/')}/{name}", name))
    return jobs, problems

"""Which files ``biotrove classify`` reads: files, folders (``--recursive``), globs or ``-``
(paths on stdin), expanded in order and without duplicates."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from biotrove_cli.core.data.images import IMAGE_SUFFIXES, is_image_path, is_unsupported_image
from biotrove_cli.core.errors import InputError, UsageError

GLOB_CHARS = set("*?[")


def _is_photo(path: str | Path) -> bool:
    """A photo a folder or glob gives: one biotrove reads, or one in an image format it does not
    (``.gif``, ``.heic``...), which becomes an ``unsupported`` error row rather than vanish."""
    return is_image_path(path) or is_unsupported_image(path)


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and _is_photo(p))


def _folder_images(folder: Path, recursive: bool, shown: str) -> list[str]:
    found = _images_in(folder, recursive)
    if not found:
        deeper = [] if recursive else _images_in(folder, True)
        if deeper:
            raise InputError(
                f"{shown}: no images directly in this folder ({len(deeper)} in its subfolders)",
                hint="add --recursive to classify the subfolders too",
            )
        raise InputError(
            f"{shown}: no images in this folder",
            hint=f"classify understands {', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} "
            "files (any case)",
        )
    base = shown.rstrip("/\\")
    return [os.path.join(base, str(p.relative_to(folder))) for p in found]


def expand_paths(
    specs: Iterable[str], recursive: bool = False, stdin: Iterable[str] | None = None
) -> list[str]:
    """Files to classify, in order, without duplicates.

    * a file is taken as it is (a non-image file becomes an error row later);
    * a folder gives its image files (``recursive``: and its subfolders'); photos in formats
      biotrove does not read are listed too, and become ``unsupported`` error rows;
    * a glob (``*``, ``?``, ``[``) gives its matching image files and folders;
    * ``-`` reads one path per line from ``stdin``; missing ones become error rows, since a
      pipeline's list can go stale.

    Raises:
        InputError: a path named on the command line does not exist, a folder holds no images,
            a glob matches nothing.
    """
    out: list[str] = []
    for spec in specs:
        if spec == "-":
            if stdin is None:
                raise UsageError("'-' reads paths from stdin, but there is no stdin")
            for line in stdin:
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                p = Path(line)
                out.extend(_folder_images(p, recursive, line) if p.is_dir() else [line])
            continue
        p = Path(spec).expanduser()
        if p.is_dir():
            out.extend(_folder_images(p, recursive, spec))
        elif p.exists():
            out.append(spec)
        elif GLOB_CHARS & set(spec):
            matches = sorted(glob.glob(spec, recursive=recursive or "**" in spec))
            files: list[str] = []
            for m in matches:
                if os.path.isdir(m):
                    files.extend(_folder_images(Path(m), recursive, m))
                elif _is_photo(m):
                    files.append(m)
            if not files:
                raise InputError(
                    f"{spec}: no image file matches this pattern",
                    hint="check the pattern (quote it so the shell does not expand it)",
                )
            out.extend(files)
        else:
            raise InputError(f"{spec}: no such file or folder", hint="check the path")
    seen: set[str] = set()
    unique = []
    for f in out:
        if f not in seen:
            seen.add(f)
            unique.append(f)
    if not unique:
        raise InputError("no images to classify", hint="pass files, folders, globs or '-'")
    return unique

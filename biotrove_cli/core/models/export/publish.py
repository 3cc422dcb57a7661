"""Publishing an export whole or not at all: refuse an output folder an export must not
overwrite, move the complete (and verified) temp folder into place (an older export goes only
after that), and remove the temp folders of killed exports.

Everything is written into a hidden temp folder beside ``--out`` (its name holds the writer's
pid) and renamed into place only when complete; with ``force`` an older export is replaced only
after the new one is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import OutputExistsError
from biotrove_cli.core.layout import EXPORT_MARKERS

log = logging.getLogger("biotrove")


def check_out(out: Path, force: bool) -> None:
    """Refuse an output location that holds something an export must not overwrite.

    An empty folder is fine; a non-empty one needs ``force``, and even then only an earlier
    export (a folder with biotrove.json, open_clip_config.json or onnx_config.json) is replaced,
    so a mistyped ``--out .`` cannot delete a project.
    """
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise OutputExistsError(
            f"{out}: exists and is not a folder",
            hint="choose another --out (an export is a folder)",
        )
    if not any(out.iterdir()):
        return
    if not force:
        raise OutputExistsError(
            f"{out}: the folder exists and is not empty",
            hint="pass --force to replace it (the old export is removed only after the new one "
            "is complete), or choose another --out",
        )
    if not any((out / m).is_file() for m in EXPORT_MARKERS):
        raise OutputExistsError(
            f"{out}: holds files that are not a biotrove export; refusing to replace it even "
            "with --force",
            hint="choose a new or empty folder for --out",
        )


def _fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Move the complete export from ``tmp`` to ``out``; an old export goes only after that."""
    from biotrove_cli.core.io import fsync_dir

    # mkdtemp/mkstemp create private (0700/0600) entries; a model folder is for sharing
    mask = os.umask(0o022)
    os.umask(mask)
    for p in tmp.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~mask)
            _fsync_file(p)
    os.chmod(tmp, 0o777 & ~mask)
    fsync_dir(tmp)
    check_out(out, force)  # again: something may have appeared meanwhile
    old: Path | None = None
    if out.exists() or out.is_symlink():
        if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            out.rmdir()
        else:
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _file_records(folder: Path) -> list[dict[str, Any]]:
    from biotrove_cli.core.io import sha256_file

    return [
        {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file()
    ]


def _make_temp(out: Path) -> Path:
    """A new private temp folder beside ``out``, named after ``out`` and this process's pid
    (so that :func:`_remove_stale_temps` can tell a live export's from a killed one's)."""
    return Path(
        tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".export-tmp", dir=out.parent)
    )


def _remove_stale_temps(out: Path) -> None:
    """Delete the temp folders of exports to ``out`` whose process is gone (kill -9, power)."""
    if not out.parent.is_dir():
        return
    for tmp in out.parent.glob(f".{out.name}.*.export-tmp"):
        parts = tmp.name[len(out.name) + 2 :].split(".")
        try:
            pid = int(parts[0])
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
            continue  # that export is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        log.info(f"removed {tmp.name}, left behind by an interrupted export")

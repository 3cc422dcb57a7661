"""Atomic file writing: temp file in the same folder, fsync, rename, fsync the folder.

A reader (or a resumed job) sees either the old file or the complete new one, never a torn one,
whatever happens in between (Ctrl-C, kill -9, power loss).

A target that exists and is not a regular file (``/dev/null``, a FIFO, a terminal, a socket) is
written directly: no temp file, no rename (which would replace the device node or the FIFO
itself), no fsync. A symlink is followed: the file it points to is replaced, the link stays.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (the rename itself) to disk; a no-op where unsupported."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_special_file(path: str | Path) -> bool:
    """``path`` exists and is neither a regular file nor a folder (a device, FIFO, socket):
    output goes into it as it is, never through a temp file and a rename."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))


def write_target(path: str | Path) -> Path:
    """Where writing ``path`` lands: the file a symlink points to (the link itself stays)."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temp file is removed and ``path`` is untouched. A special file
    (:func:`is_special_file`) is opened and written directly.
    """
    path = write_target(path)
    if is_special_file(path):
        with name_os_errors(path), open(path, mode, **kwargs) as fh:
            yield fh
        return
    with name_os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with name_os_errors(path):
            # mkstemp makes the file private (0600); give it the mode a plain open() would, so
            # datasets and models stay readable on shared clusters
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, mode, **kwargs) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def name_os_errors(path: str | Path) -> Iterator[None]:
    """Name the file being written in an OSError that names none (a failed write: no space
    left, file too large) or only the temp file standing in for it, so that the error says
    where it happened in the user's terms."""
    from biotrove_cli.core.errors import os_error_in

    try:
        yield
    except Exception as exc:
        os_exc = os_error_in(exc)  # also behind torch's or pyarrow's own error for it
        if os_exc is not None:
            name, given = Path(path).name, os_exc.filename
            temp = given is not None and Path(str(given)).name.startswith(f".{name}.")
            if given is None or (temp and str(given).endswith(".tmp")):
                os_exc.filename = str(path)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_parquet(table: Any, path: str | Path) -> Path:
    import pyarrow.parquet as pq

    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh)
    return Path(path)


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``.

    Raises:
        InputError: the file is not valid JSON (where, and what is wrong).
        OSError: the file cannot be read.
    """
    from biotrove_cli.core.errors import InputError

    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            hint="the file was edited or cut short; restore it from where it came from",
        ) from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON (not UTF-8 text at byte {exc.start})",
            hint="the file was edited or cut short; restore it from where it came from",
        ) from None


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def cleanup_temp_files(folder: str | Path, pattern: str = ".*.tmp") -> int:
    """Remove temp files a killed writer left behind; returns how many."""
    n = 0
    for p in Path(folder).glob(pattern):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n

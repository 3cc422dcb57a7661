"""One writer per output: an advisory lock on a run folder, a shard folder or an output file.

The lock is ``fcntl.flock`` on a small file (``.biotrove.lock`` inside a folder, ``.NAME.lock``
beside a file) that names its holder: pid, host, command and start time. A second job that
wants the same output refuses at once with :class:`~biotrove_cli.core.errors.BusyError` naming
that process. The kernel drops the lock when every process holding it has ended, however it
ended (kill -9 included), so a lock file left by a dead job is taken over silently. The holder
removes the file when it is done; a job that opened the file just before then sees that it
locked a removed file, and tries again on the new one.

Where flock is not supported (some network file systems), jobs run unlocked, as before.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import BusyError

log = logging.getLogger("biotrove")

#: The lock file inside a locked folder (names beside a file: ``.NAME.lock``).
FOLDER_LOCK = ".biotrove.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, getattr(errno, "ENOTSUP", -1)}


def folder_lock_path(folder: str | Path, name: str = FOLDER_LOCK) -> Path:
    return Path(folder) / name


def file_lock_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


def part_lock_name(k: int, n: int) -> str:
    """The lock of ``--part K/N`` of a dataset (parts may be written at the same time)."""
    return FOLDER_LOCK if n == 1 else f".biotrove.part-{k}-of-{n}.lock"


def is_lock_file(name: str) -> bool:
    """A lock file of this module (a folder may hold one beside its data)."""
    return name.startswith(".") and name.endswith(".lock")


class Lock:
    """An exclusive lock on ``target`` through the lock file ``path`` (see the module doc)."""

    def __init__(self, path: Path, target: Path, what: str):
        self.path = path
        self.target = target
        self.what = what
        self._fd: int | None = None
        self._made_folder = False  # the lock made the folder: removed again if left empty

    def acquire(self) -> Lock:
        """Take the lock or raise BusyError naming its holder (never waits)."""
        import fcntl

        self._made_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # each retry means the holder released it meanwhile
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in _UNSUPPORTED:
                    log.debug("%s: file locking is not supported here; running unlocked", self.path)
                    return self
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise self._busy(holder) from None
            if _same_file(fd, self.path):
                self._fd = fd
                self._write_holder()
                return self
            os.close(fd)  # we locked a file its holder had just removed: try the new one
        raise BusyError(f"{self.target}: cannot lock {self.path} (it keeps changing)")

    def _write_holder(self) -> None:
        assert self._fd is not None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(["biotrove", *sys.argv[1:]])[:500],
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(holder) + "\n").encode(), 0)

    def _busy(self, holder: dict[str, Any]) -> BusyError:
        pid = holder.get("pid")
        who = f"process {pid}" if pid else "another process"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on {holder['host']}"
        detail = ", ".join(f"{k} {holder[k]}" for k in ("command", "since") if holder.get(k))
        return BusyError(
            f"{self.target}: another job is writing this {self.what}: {who}"
            + (f" ({detail})" if detail else ""),
            hint="wait for it to finish (or stop it), then run this again; two jobs writing "
            f"the same {self.what} would spoil each other's output",
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock (removing first: see the module doc)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self._fd, self.path):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        if self._made_folder:  # a job that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        data = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lock_folder(folder: str | Path, what: str, name: str = FOLDER_LOCK) -> Lock:
    """A lock on a folder (the lock file inside it; the folder is created, and removed again
    when the job leaves it empty): use ``with``."""
    folder = Path(folder)
    return Lock(folder_lock_path(folder, name), folder, what)


@contextlib.contextmanager
def lock_output(output: str | Path | None, what: str = "file") -> Iterator[Lock | None]:
    """Hold a lock on an output file for the ``with`` block. Nothing is locked for stdout
    (None or ``-``) or a target that exists and is not a regular file (``/dev/null``, a FIFO)."""
    if output is None or str(output) == "-":
        yield None
        return
    path = Path(output)
    if path.exists() and not path.is_file():
        yield None
        return
    if path.is_symlink() or path.exists():
        path = path.resolve()
    with Lock(file_lock_path(path), Path(output), what) as lock:
        yield lock

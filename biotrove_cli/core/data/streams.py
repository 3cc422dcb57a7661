"""Opening a shard location as a byte stream: local files through webdataset's ``gopen``, URLs
and ``pipe:`` commands through webdataset's ``gopen.Pipe`` running the command
:func:`biotrove_cli.core.data.urls.command_for` gives.

A command's stream has a stall timeout: a read that waits longer than ``timeout`` seconds for
the next byte kills the command and raises :class:`SourceError` (webdataset's own http handler
runs ``curl`` with no timeout, so a stalled server would hang a worker for ever). A command
that exits with an error raises it too, with the last line it wrote on stderr, so a failed
download is never mistaken for a short shard. Each command runs in its own session and is
killed when its stream is closed early.
"""

from __future__ import annotations

import io
import os
import re
import select
import signal
import subprocess
import tempfile
from typing import IO, Any

from biotrove_cli.core.data.urls import command_for

#: stderr that says the object does not exist: retrying cannot help
_MISSING = re.compile(
    r"returned error: 4(?!08|29)\d\d|\(404\)|NoSuchKey|NoSuchBucket|No URLs matched|"
    r"No such file|not found|does not exist",
    re.IGNORECASE,
)


class SourceError(Exception):
    """Opening or reading a shard's source failed (not the tar inside it).

    ``permanent`` when retrying cannot help (a missing object, a missing command).
    """

    def __init__(self, reason: str, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class CommandStream(io.RawIOBase):
    """The stdout of a shell command (webdataset's ``gopen.Pipe``), with a stall timeout."""

    def __init__(self, command: str, timeout: float):
        from webdataset.gopen import Pipe

        self.command = command
        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile()
        try:
            self.pipe = Pipe(
                command,
                mode="rb",
                shell=True,
                bufsize=0,  # unbuffered: select() on the fd sees every byte not yet read
                ignore_status=[141],
                stderr=self._stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # killed as a group, never by the terminal's Ctrl-C
            )
        except OSError as exc:
            self._stderr.close()
            raise SourceError(f"cannot start `{command}` ({exc})") from exc
        self._fd = self.pipe.stream.fileno()
        _grow_pipe(self._fd)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        ready, _, _ = select.select([self._fd], [], [], self.timeout)
        if not ready:
            self._kill()
            raise SourceError(f"no data for {self.timeout:g} s (read timeout)")
        try:
            data = self.pipe.read(len(buffer))  # checks the exit status after each read
        except OSError:
            raise self._failure() from None
        if not data:
            self._wait_for_exit()
            return 0
        n = len(data)
        buffer[:n] = data
        return n

    def _wait_for_exit(self) -> None:
        """At end of stream the command must have succeeded, else its output is incomplete."""
        try:
            status = self.pipe.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            raise SourceError(
                f"the command closed its output but did not exit within {self.timeout:g} s"
            ) from None
        if status not in (0, 141):
            raise self._failure()

    def _failure(self) -> SourceError:
        status = self.pipe.proc.wait()
        self._stderr.seek(0)
        lines = self._stderr.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        said = lines[-1].strip() if lines else ""
        why = f"exit {status}" + (f": {said}" if said else "")
        permanent = status in (126, 127) or bool(_MISSING.search(said))
        return SourceError(why, permanent=permanent)

    def _kill(self) -> None:
        proc = self.pipe.proc
        if proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                proc.wait(timeout=2)
                return
            except subprocess.TimeoutExpired:  # still running after SIGTERM: SIGKILL
                continue

    def close(self) -> None:
        if not self.closed:
            self._kill()  # stopped reading early (the epoch ended mid-shard, or a retry)
            self.pipe.stream.close()
            self._stderr.close()
        super().close()


def _grow_pipe(fd: int) -> None:
    """Let the command run up to 1 MiB ahead of the reader (Linux; 64 KiB otherwise)."""
    import fcntl

    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:  # not Linux, or above /proc/sys/fs/pipe-max-size: the default stays
        pass


def open_location(location: str, timeout: float = 60.0) -> IO[bytes]:
    """A buffered byte stream of a shard (or any file) at ``location``.

    Raises:
        SourceError: it cannot be opened (a missing local file is permanent).
        InputError: a remote location needs a tool that is not installed.
    """
    from webdataset.gopen import gopen_file

    command = command_for(location, timeout)
    if command is None:
        try:
            return gopen_file(location, "rb")
        except OSError as exc:
            permanent = isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError))
            raise SourceError(exc.strerror or str(exc), permanent=permanent) from exc
    return io.BufferedReader(CommandStream(command, timeout), buffer_size=1 << 20)


def read_bytes(location: str, timeout: float = 60.0) -> bytes:
    """The whole file at ``location`` (a sizes.json or taxonomy.parquet beside shards)."""
    with open_location(location, timeout) as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise SourceError(exc.strerror or str(exc)) from exc

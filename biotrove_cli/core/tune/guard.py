"""Nothing of a local Ray cluster outlives the ``biotrove tune`` that started it, however it ends.

``ray.init()`` starts the cluster's processes (gcs_server, raylet, their agents, the workers) as
descendants of the calling process. They stop with ``ray.shutdown()``, and the raylet follows
its parent when that is killed, but its agents can hang for a minute or more after a
``kill -9``. So the cluster's processes carry a token in their environment (set before
``ray.init`` and inherited), and a small guard process, started first, learns them and their
children (some of Ray's agents lose the token) while it watches a pipe from ``biotrove tune``:
when the pipe closes (a normal end, an error, Ctrl-C or SIGKILL alike) it ends them all. Linux
only (it reads ``/proc``); elsewhere Ray's own parent checks remain.

``python -m biotrove_cli.core.tune.guard TOKEN`` (the guard; its standard input is the pipe).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

TOKEN_VAR = "BIOTROVE_TUNE_SESSION"
POLL_S = 1.0


def _processes() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (parent pid, start time, environment) of this machine's processes."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        out[int(entry.name)] = (int(fields[1]), int(fields[19]), environ)
    return out


class Session:
    """The processes of one local Ray cluster: those whose environment holds the token and
    everything they start (some of Ray's agents get an environment without it)."""

    def __init__(self, token: str):
        self.needle = f"{TOKEN_VAR}={token}".encode()
        self.known: dict[int, int] = {}  # pid -> start time (a reused pid is not ours)

    def refresh(self) -> list[int]:
        """Add the session's new processes; the pids of those alive."""
        procs = _processes()
        for pid, (_, start, environ) in procs.items():
            if pid != os.getpid() and self.needle in environ.split(b"\0"):
                self.known.setdefault(pid, start)
        grew = True
        while grew:  # children of known processes, down the tree
            grew = False
            for pid, (ppid, start, _) in procs.items():
                if ppid in self.known and pid not in self.known and pid != os.getpid():
                    self.known[pid] = start
                    grew = True
        return [p for p, start in self.known.items() if p in procs and procs[p][1] == start]

    def sweep(self, grace_s: float = 3.0) -> int:
        """SIGTERM every live process of the session, SIGKILL what is left after
        ``grace_s``; returns how many there were."""
        alive = self.refresh()
        for pid in alive:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.refresh():
            time.sleep(0.1)
        for pid in self.refresh():
            _signal(pid, signal.SIGKILL)
        return len(alive)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


class Guard:
    """Mark this process's future children with a fresh token and start the guard; use as a
    context manager around ``ray.init()`` .. ``ray.shutdown()``."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self._proc: subprocess.Popen | None = None
        self._previous = os.environ.get(TOKEN_VAR)

    def __enter__(self) -> Guard:
        if sys.platform.startswith("linux"):
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, self.token],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                # its own process group: a Ctrl-C at the terminal does not reach it
                start_new_session=True,
            )
        os.environ[TOKEN_VAR] = self.token  # after the guard started: it must not match
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is None:
            os.environ.pop(TOKEN_VAR, None)
        else:
            os.environ[TOKEN_VAR] = self._previous
        if self._proc is not None:
            self._proc.stdin.close()  # the guard sweeps what is left, then exits
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def main(argv: list[str] | None = None) -> int:
    """The guard: learn the session's processes while ``biotrove tune`` lives, then end them."""
    import select

    args = sys.argv[1:] if argv is None else argv
    session = Session(args[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        session.refresh()
        if ready and not os.read(stdin.fileno(), 4096):
            break  # biotrove tune closed the pipe, or died
    session.sweep()
    return 0


if __name__ == "__main__":
    sys.exit(main())

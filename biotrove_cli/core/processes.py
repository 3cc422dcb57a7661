"""Process lifetime: every process a command starts ends when the command ends, however it ends
(Ctrl-C, SIGTERM, or SIGKILL of the launching process, which no handler can catch).

Each child calls :func:`die_with_parent` first thing: on Linux the kernel then kills it the
moment its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); a watch thread that polls the
parent's pid covers the rest (systems without prctl, and a parent that died before the child
got that far). A child that leads its own process group (torchrun starts its workers in their
own sessions) takes the whole group with it, so its own helpers (data loader workers) go too.

Used by the torchrun workers (:mod:`biotrove_cli.cli.workers`), the shard writer pool, the data
loader workers of train, eval and classify (:func:`loader_worker_init`) and the export's
verification child (:func:`guarded_python`, for a fresh interpreter that cannot import
biotrove). This module uses the standard library only, so that its own text can run in such an
interpreter.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

#: The launching process's pid, handed to the processes it starts through their environment
#: (torchrun's workers inherit it): their parent to watch.
PARENT_ENV = "BIOTROVE_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.5
_watching: list[int] = []


def _set_pdeathsig(sig: int) -> bool:
    """Ask the kernel to send ``sig`` when the parent dies (Linux only); True when set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc prctl (e.g. a static or exotic runtime)
        return False


def _die() -> None:
    """End this process now; when it leads its process group, end the group with it."""
    try:
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(parent: int) -> None:
    stop = threading.Event()
    while not stop.wait(_POLL_S):
        if os.getppid() != parent:
            _die()


def die_with_parent(parent: int | None = None) -> None:
    """End this process (and the group it leads) when ``parent`` dies.

    Call it first thing in a child. ``parent`` defaults to :data:`PARENT_ENV` when the launcher
    set it, else to the current parent. A parent that is already gone ends this process at once.
    Nothing is written to stdout or stderr (a daemon thread that writes while the interpreter
    shuts down can abort it).
    """
    if parent is None:
        parent = int(os.environ.get(PARENT_ENV) or 0) or os.getppid()
    if parent in _watching:
        return
    _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect (or is not ours)
        _die()
    _watching.append(parent)
    threading.Thread(
        target=_watch, args=(parent,), name="biotrove-parent-watch", daemon=True
    ).start()


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default this process's) with :data:`PARENT_ENV` naming this process."""
    out = dict(os.environ if env is None else env)
    out[PARENT_ENV] = str(os.getpid())
    return out


def mark_launcher() -> None:
    """Name this process as the parent of the processes it starts from now on (torchrun's
    workers read :data:`PARENT_ENV` from the environment they inherit)."""
    os.environ[PARENT_ENV] = str(os.getpid())


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the DataLoaders: a worker ends with the process that started it,
    and leaves Ctrl-C to that process (which saves, reports and stops the workers itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(os.getppid())


# A fresh interpreter (``python -I -c``) runs this module's text, calls die_with_parent on its
# parent, then runs the script it was given as __main__ (its own sys.argv as if run directly).
_GUARD = (
    "import sys\n"
    "_ns = {'__name__': 'biotrove_lifetime'}\n"
    "exec(sys.argv.pop(1), _ns)\n"
    "_ns['die_with_parent'](int(sys.argv.pop(1)))\n"
    "_src = sys.argv.pop(1)\n"
    "del _ns\n"
    "exec(compile(_src, '<biotrove child>', 'exec'), {'__name__': '__main__'})\n"
)


def guarded_python(script: str, args: list[str]) -> list[str]:
    """The command line running Python source ``script`` with ``args`` in a fresh, isolated
    interpreter (``-I``) that dies with this process."""
    with open(__file__, encoding="utf-8") as fh:
        own = fh.read()
    return [sys.executable, "-I", "-c", _GUARD, own, str(os.getpid()), script, *args]

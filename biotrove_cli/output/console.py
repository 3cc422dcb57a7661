"""Two consoles: stdout for results only, stderr for logs, progress, warnings and errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape


@dataclass
class _State:
    quiet: bool = False
    verbose: int = 0
    rank0: bool = True


STATE = _State()
_out: Console | None = None
_err: Console | None = None


_LIVE: list = []  # progress displays drawing on stderr now (see live())


@contextlib.contextmanager
def live(display: Any) -> Iterator[None]:
    """While the block runs, ``display`` (a Rich Progress or Live) is the one drawing: it is
    stopped before any result is printed (:func:`out`)."""
    _LIVE.append(display)
    try:
        yield
    finally:
        _LIVE.remove(display)


def stop_live() -> None:
    """Stop every progress display, so that what follows is not drawn into it."""
    for display in _LIVE:
        display.stop()


def out() -> Console:
    """The stdout console (results: tables, records); any progress display is stopped first."""
    global _out
    stop_live()
    if _out is None or _out.file is not sys.stdout:
        _out = Console(file=sys.stdout, soft_wrap=False, highlight=False)
    return _out


def write_out(text: str) -> None:
    """Machine text on stdout exactly as given (a completion script, YAML): never through Rich,
    so never wrapped at the terminal's width and never styled, whatever stdout is."""
    sys.stdout.write(text)
    sys.stdout.flush()


def err() -> Console:
    """The stderr console (everything that is not a result)."""
    global _err
    if _err is None or _err.file is not sys.stderr:
        _err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
    return _err


def configure(quiet: bool = False, verbose: int = 0) -> None:
    """Set verbosity for the process and route the core's ``biotrove`` logger to stderr."""
    STATE.quiet = quiet
    STATE.verbose = verbose
    rank = os.environ.get("RANK")
    STATE.rank0 = rank in (None, "", "0")
    logger = logging.getLogger("biotrove")
    logger.handlers[:] = [_RichLogHandler()]
    logger.propagate = False
    if quiet:
        logger.setLevel(logging.WARNING)
    elif verbose:
        logger.setLevel(logging.DEBUG)
    else:
        logger.setLevel(logging.INFO)
    # third-party libraries log on the root logger; keep their chatter out unless -v
    root = logging.getLogger()
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(logging.NullHandler())
    root.setLevel(logging.DEBUG if verbose > 1 else logging.ERROR)


class _RichLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if not STATE.rank0:
            return
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover - a bad log call must not crash a job
            msg = str(record.msg)
        if record.levelno >= logging.ERROR:
            err().print(f"[bold red]Error:[/] {escape(msg)}")
        elif record.levelno >= logging.WARNING:
            warn(msg)
        elif record.levelno >= logging.INFO:
            info(msg)
        else:
            debug(msg)


def info(message: str) -> None:
    """A narrative line on stderr (hidden by --quiet, and on non-zero ranks)."""
    if STATE.quiet or not STATE.rank0:
        return
    err().print(escape(message))


def step(message: str) -> None:
    """A highlighted narrative step on stderr."""
    if STATE.quiet or not STATE.rank0:
        return
    err().print(f"[bold cyan]==>[/] {escape(message)}")


def warn(message: str) -> None:
    if not STATE.rank0:
        return
    err().print(f"[yellow]Warning:[/] {escape(message)}")


def debug(message: str) -> None:
    if STATE.verbose and STATE.rank0:
        err().print(f"[dim]{escape(message)}[/]")


def error(message: str, hint: str | None = None) -> None:
    """The one way errors are shown: ``Error: ...`` and ``Hint: ...`` on stderr."""
    err().print(f"[bold red]Error:[/] {escape(message)}")
    if hint:
        err().print(f"[bold]Hint:[/] {escape(hint)}")


def interrupted(message: str, hint: str | None = None) -> None:
    """A job stopped by Ctrl-C after saving its place: not an error, but what to do next."""
    err().print(f"[bold yellow]Interrupted:[/] {escape(message)}")
    if hint:
        err().print(f"[bold]Hint:[/] {escape(hint)}")


def worker_flags() -> list[str]:
    """This process's verbosity as the flags of a torchrun worker (``cli/workers.py``)."""
    return (["--quiet"] if STATE.quiet else []) + (
        ["--verbose", str(STATE.verbose)] if STATE.verbose else []
    )


def debug_enabled() -> bool:
    """``BIOTROVE_DEBUG`` set (and not 0/false/no): error boundaries re-raise for the traceback."""
    import os

    return os.environ.get("BIOTROVE_DEBUG", "").lower() not in ("", "0", "false", "no")


def stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False

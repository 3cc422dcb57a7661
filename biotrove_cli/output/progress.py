"""Progress on stderr: a Rich bar for humans, nothing when stderr is not a TTY or with --quiet.

Results never pass through the bar: stdout is not redirected into it (Rich would print what a
command writes to stdout on the bar's console, stderr), and the bar stops before any result is
printed on the terminal (:func:`biotrove_cli.output.console.out` stops it)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from biotrove_cli.core.runtime import ProgressFn
from biotrove_cli.output import console


def enabled() -> bool:
    return console.stderr_is_tty() and not console.STATE.quiet and console.STATE.rank0


@contextlib.contextmanager
def progress(description: str, total: int | None = None, unit: str = "") -> Iterator[ProgressFn]:
    """Yield a ``(done, total)`` callback for the core; draws a bar only for a human.

    Extra ``key=value`` text can be shown by calling ``callback.postfix("...")``.
    """
    if not enabled():

        def silent(done: int, total_: int) -> None:
            return None

        silent.postfix = lambda text: None  # type: ignore[attr-defined]
        yield silent
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
    ]
    bar = Progress(
        *columns,
        console=console.err(),
        transient=False,
        refresh_per_second=8,
        redirect_stdout=False,  # results go to stdout, whatever the bar does on stderr
        redirect_stderr=False,  # our stderr lines go through the same console: above the bar
    )
    with bar, console.live(bar):
        task = bar.add_task(description, total=total, postfix="")
        last = [0.0]

        def update(done: int, total_: int) -> None:
            now = time.monotonic()
            if now - last[0] < 0.05 and done != total_:
                return
            last[0] = now
            bar.update(task, completed=done, total=total_ or None)

        def postfix(text: str) -> None:
            bar.update(task, postfix=text)

        update.postfix = postfix  # type: ignore[attr-defined]
        yield update
        if bar.live.is_started:
            bar.refresh()

"""Preemption signals: SIGTERM / SIGUSR1 (what SLURM sends before it preempts a job).

The handler only sets a flag; the loop checks it at the next step boundary on every rank (one
collective), saves a checkpoint and stops with PreemptedError (exit 75 -> requeue).
"""

from __future__ import annotations

import signal
from typing import Any


class StopSignals:
    """SIGTERM / SIGUSR1 set a flag; the loop saves and stops at the next step boundary."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            if sig is None:
                continue
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. a Ray Train worker's thread)
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        self._old.clear()

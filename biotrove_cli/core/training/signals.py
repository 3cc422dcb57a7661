"""Stop signals: SIGTERM / SIGUSR1 (what SLURM sends before it preempts a job) and SIGINT (Ctrl-C).

The handler only sets a flag; the loop checks it at the next step boundary on every rank (one
collective), saves a checkpoint and stops: PreemptedError (exit 75 -> requeue) after SIGTERM or
SIGUSR1, InterruptedByUser (exit 130) after Ctrl-C. Rerunning the same command continues the run
from that checkpoint. A second Ctrl-C stops at once (KeyboardInterrupt), without saving.
"""

from __future__ import annotations

import signal
from typing import Any

#: The signals that stop a run after a checkpoint.
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class StopSignals:
    """SIGTERM / SIGUSR1 / SIGINT set a flag; the loop saves and stops at the next step boundary."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    @property
    def interrupted(self) -> bool:
        """The flag was set by Ctrl-C (SIGINT), not by a scheduler."""
        return self.received == "SIGINT"

    def install(self) -> None:
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. a Ray Train worker's thread)
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            raise KeyboardInterrupt  # Ctrl-C twice: stop now
        if self.received is None:
            self.received = name

    def restore(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        self._old.clear()

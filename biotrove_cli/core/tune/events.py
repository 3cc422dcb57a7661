"""The progress of a search as it happens: what the CLI prints on stderr (plain hooks; Ray
calls them through :class:`biotrove_cli.core.tune.monitor.SearchMonitor`)."""

from __future__ import annotations

from typing import Any


class SearchEvents:
    """Hooks of a running search; the default does nothing."""

    def on_trial_start(self, trial_id: str, params: dict[str, Any]) -> None:
        """A trial's driver started, with its sampled values."""

    def on_trial_result(self, trial_id: str, metrics: dict[str, Any]) -> None:
        """A trial reported (after a validation)."""

    def on_trial_end(self, trial_id: str, status: str, detail: str) -> None:
        """``finished``, ``stopped`` (by the scheduler) or ``error``, with a one-line detail."""

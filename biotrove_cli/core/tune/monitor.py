"""What the search's driver (the ``biotrove tune`` process) does as trials start, report and
end: a Ray Tune callback that passes the events on to the progress callbacks, marks the run
folder of a trial the scheduler stopped, and frees the Ray placement group of that trial's
workers.

Why the last: Tune stops a trial by ending its trial actor, which takes the Ray Train
controller with it before that can remove its workers' placement group. Ray's own cleaner for
this needs Ray's state API (the dashboard, not installed with ``ray[tune,train]``); without it
the CPUs stay reserved and the next trials wait for them forever. Each trial reports the id of
its placement group, and this callback removes it when the trial ends.

Imports Ray at import time: :mod:`biotrove_cli.core.tune.search` imports it when Ray runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray import tune

from biotrove_cli.core.layout import SEARCH_RUNS
from biotrove_cli.core.tune.events import SearchEvents
from biotrove_cli.core.tune.trial import PLACEMENT_GROUP, find_biotrove_error, mark_stopped

log = logging.getLogger("biotrove")


class _Active:
    """The running search's progress callbacks and the placement groups of its trials. Module
    state, not the callback's: Tune pickles its callbacks with the search (``tuner.pkl``) and
    a resumed search gets those copies back."""

    events: SearchEvents = SearchEvents()
    placement_groups: dict[str, str] = {}


def activate(events: SearchEvents | None) -> None:
    _Active.events = events or SearchEvents()
    _Active.placement_groups = {}


class SearchMonitor(tune.Callback):
    """The Tune callback of a search (see the module docstring)."""

    def __init__(self, search_dir: str, time_attr: str, max_t: int):
        self.search_dir = search_dir
        self.time_attr = time_attr
        self.max_t = max_t

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _Active.events.on_trial_start(trial.trial_id, dict(trial.config))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        group = result.get(PLACEMENT_GROUP)
        if group:
            _Active.placement_groups[trial.trial_id] = group
        _Active.events.on_trial_result(trial.trial_id, dict(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        release(trial.trial_id)
        reached = int((trial.last_result or {}).get(self.time_attr) or 0)
        if reached >= self.max_t:
            _Active.events.on_trial_end(trial.trial_id, "finished", "")
            return
        detail = f"stopped by the scheduler at {self.time_attr} {reached}"
        mark_stopped(Path(self.search_dir, SEARCH_RUNS, trial.trial_id), detail)
        _Active.events.on_trial_end(trial.trial_id, "stopped", detail)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        release(trial.trial_id)
        _Active.events.on_trial_end(trial.trial_id, "error", trial_error(trial))


def trial_error(trial: Any) -> str:
    """A trial's error in one line: biotrove's own message when it is one."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # the error file may be unreadable; the status still says error
        error = None
    if error is None:
        return "failed"
    found = find_biotrove_error(error)
    if found is not None:
        return found.message + (f" ({found.hint})" if found.hint else "")
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def release(trial_id: str) -> None:
    """Remove the placement group of a trial's workers if it is still there."""
    group = _Active.placement_groups.pop(trial_id, None)
    if group:
        _remove_placement_group(group)


def release_all() -> None:
    for trial_id in list(_Active.placement_groups):
        release(trial_id)


def _remove_placement_group(group_id: str) -> None:
    import ray
    from ray.util.placement_group import (
        PlacementGroup,
        placement_group_table,
        remove_placement_group,
    )

    try:
        pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id)))
        if placement_group_table(pg).get("state") not in (None, "REMOVED"):
            remove_placement_group(pg)
    except Exception as exc:  # the group or the cluster may be gone already
        log.debug("placement group %s: %s", group_id, exc)

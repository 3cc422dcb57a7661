"""``biotrove tune`` for people: the search's plan and each trial's start, reports and end on
stderr, and the trials table (best first) on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biotrove_cli.core.tune.events import SearchEvents
from biotrove_cli.output import console
from biotrove_cli.output.render import Format, emit


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class TuneReporter(SearchEvents):
    """One line per trial event on stderr (``-q`` silences them)."""

    def __init__(self, metric: str, time_attr: str):
        self.metric = metric
        self.time_attr = time_attr

    def on_trial_start(self, trial_id: str, params: dict[str, Any]) -> None:
        values = ", ".join(f"{k}={_num(v)}" for k, v in params.items())
        console.info(f"trial {trial_id} started: {values}")

    def on_trial_result(self, trial_id: str, metrics: dict[str, Any]) -> None:
        value = metrics.get(self.metric)
        shown = _num(value) if value is not None else "-"
        console.info(
            f"trial {trial_id} at {self.time_attr} {metrics.get(self.time_attr)}: "
            f"{self.metric} {shown}"
        )

    def on_trial_end(self, trial_id: str, status: str, detail: str) -> None:
        text = f"trial {trial_id} {status}" + (f": {detail}" if detail else "")
        if status == "error":
            console.warn(text)
        else:
            console.info(text)


def describe_plan(scfg: Any) -> None:
    """The search about to run, in one step line."""
    space = ", ".join(p.key for p in scfg.space.params if p.kind != "value")
    grid = scfg.space.grid_size()
    trials = scfg.num_samples * grid
    scheduler = (
        f"ASHA (grace {scfg.grace}, reduction {scfg.reduction_factor})"
        if scfg.scheduler == "asha"
        else "FIFO"
    )
    what = "resuming" if scfg.resume else "searching"
    console.step(
        f"{what} {scfg.name}: {trials} trial(s) over {space}, {scfg.max_t} "
        f"{scfg.time_attr}s each, {scheduler} on {scfg.metric} ({scfg.mode}), "
        f"{scfg.workers_per_trial} worker(s) per trial"
    )
    console.info(f"search folder: {scfg.search_dir}")


def emit_trials(
    result: Any, fmt: Format, output: str | None, summary_path: Path | None = None
) -> None:
    """The trials table: searched values, metric, length, status, run folder (best first);
    the search's summary (best trial, best config) to ``--summary FILE``."""
    records = result.records
    columns = list(records[0]) if records else ["trial", "status"]
    table_columns = [c for c in columns if c not in ("run_dir", "error")]
    if any(r.get("error") for r in records):
        table_columns.append("error")
    best = result.best
    title = f"Search {Path(result.search_dir).name}: {len(records)} trial(s)"
    if best is not None:
        title += f", best {best['trial']} ({result.metric} {_num(best[result.metric])})"
    emit(
        records,
        fmt,
        output,
        title=title,
        columns=columns,
        table_columns=table_columns,
        summary={
            "search_dir": str(result.search_dir),
            "metric": result.metric,
            "best": best,
            "best_config": str(result.best_path) if result.best_path else None,
            "interrupted": result.interrupted,
        },
        summary_path=summary_path,
    )

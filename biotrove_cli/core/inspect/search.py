"""``biotrove info`` of a search folder (``biotrove tune``): its settings, each trial's run folder
(status, steps, last value of the search's metric) and the best config, read from the files
(no Ray needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biotrove_cli.core.inspect.report import Report
from biotrove_cli.core.layout import SEARCH_BEST, SEARCH_CONFIG, SEARCH_RUNS
from biotrove_cli.core.training.run import read_metrics, read_run_json
from biotrove_cli.core.training.trackers import tracker_metrics


def describe_search(path: Path) -> Report:
    from biotrove_cli.core import config as configlib

    settings = configlib.load_yaml(path / SEARCH_CONFIG)
    rep = Report("search", f"{path.name}: hyperparameter search")
    for key in ("metric", "mode", "scheduler", "num_samples", "time_attr", "max_t", "grace"):
        rep.add("search", key, settings.get(key))
    for key, spec in (settings.get("space") or {}).items():
        rep.add("space", key, spec)
    metric = str(settings.get("metric", ""))
    trials = []
    for run in sorted((path / SEARCH_RUNS).glob("*/")):
        info = read_run_json(run)
        evals = [m for m in read_metrics(run) if m.get("kind") == "eval"]
        value = tracker_metrics(evals[-1]).get(metric) if evals else None
        trials.append({"trial": run.name, "status": info.get("status"), "steps": info.get("steps")})
        shown = f"{info.get('status', 'unknown')}, step {info.get('steps', '-')}"
        if value is not None:
            shown += f", {metric} {value:.4g}"
        rep.add("trials", run.name, shown)
    best = path / SEARCH_BEST
    rep.add("best", "config", str(best) if best.is_file() else "(none yet)")
    rep.document = {"search": _plain(settings), "trials": trials}
    return rep


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "base"}

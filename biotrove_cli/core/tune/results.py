"""The outcome of a search: one record per trial (its searched values, metric, length, status,
run folder), the best trial, and its config as ``best.yaml``.

The best trial is the best value of the metric among the trials that trained longest: ASHA
stops the weak trials early, and a trial's metric after a few steps is not comparable with
another's at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biotrove_cli.core import config as configlib
from biotrove_cli.core.layout import SEARCH_BEST, SEARCH_RUNS

_DONE = ("finished", "stopped")


@dataclass
class SearchResult:
    search_dir: Path
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_path: Path | None
    interrupted: bool  # some trials had not ended (Ctrl-C): --resume continues them
    metric: str = ""


def collect(scfg: Any) -> SearchResult:
    """The SearchResult of the search in ``scfg.search_dir`` (from Tune's saved state)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(scfg.search_dir))
    records = [trial_record(scfg, trial) for trial in analysis.trials]
    records.sort(key=lambda r: _order(r, scfg.metric, scfg.mode))
    best = best_record(records, scfg.metric, scfg.mode)
    best_path = write_best(scfg, best) if best else None
    interrupted = any(r["status"] in ("pending", "interrupted") for r in records)
    return SearchResult(scfg.search_dir, records, best, best_path, interrupted, scfg.metric)


def trial_record(scfg: Any, trial: Any) -> dict[str, Any]:
    from biotrove_cli.core.tune.monitor import trial_error

    last = dict(trial.last_result or {})
    reached = int(last.get(scfg.time_attr) or 0)
    status = {"TERMINATED": "stopped", "ERROR": "error"}.get(trial.status, "interrupted")
    if status == "stopped" and reached >= scfg.max_t:
        status = "finished"
    elif status == "interrupted" and not last:
        status = "pending"  # not started yet
    record: dict[str, Any] = {"trial": trial.trial_id, "status": status}
    for key in scfg.space.keys:
        record[key] = trial.config.get(key)
    value = last.get(scfg.metric)
    record[scfg.metric] = float(value) if isinstance(value, (int, float)) else None
    record["step"] = last.get("step")
    record["epoch"] = last.get("epoch")
    record["run_dir"] = str(scfg.search_dir / SEARCH_RUNS / trial.trial_id)
    record["error"] = trial_error(trial) if status == "error" else ""
    return record


def _order(record: dict[str, Any], metric: str, mode: str) -> tuple:
    value = record.get(metric)
    done = record["status"] in _DONE and value is not None
    length = record.get("step") or 0
    score = (value if mode == "max" else -value) if done else 0.0
    return (not done, -length, -score, record["trial"])


def best_record(records: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The best trial: the best metric among the trials that trained longest."""
    done = [r for r in records if r["status"] in _DONE and r.get(metric) is not None]
    if not done:
        return None
    longest = max(r.get("step") or 0 for r in done)
    finalists = [r for r in done if (r.get("step") or 0) == longest]
    pick = max if mode == "max" else min
    return pick(finalists, key=lambda r: r[metric])


def write_best(scfg: Any, best: dict[str, Any]) -> Path:
    """``best.yaml``: the search's base config with the best trial's values (not the trials'
    shortened schedule), ready for ``biotrove train --config best.yaml``."""
    from biotrove_cli.core.io import atomic_write_text
    from biotrove_cli.core.tune.trial import build_config

    data = configlib.to_dict(scfg.base)
    params = {key: best[key] for key in scfg.space.keys}
    fixed = {p.key: p.args[0] for p in scfg.space.params if p.kind == "value"}
    data = configlib.deep_merge(data, configlib.nest({**fixed, **params}))
    data["run_dir"] = ""  # train picks a new run folder (runs/NAME-TIMESTAMP)
    cfg = build_config(data)
    header = (
        f"the best trial ({best['trial']}) of biotrove tune search {scfg.name}: "
        f"{scfg.metric} {best[scfg.metric]:.4g} at step {best.get('step')}\n"
        + "".join(f"  {k}: {v!r}\n" for k, v in params.items())
        + "train with it: biotrove train --config best.yaml (the trials ran "
        + f"{scfg.max_t} {scfg.time_attr}s; this config keeps the base schedule)"
    )
    path = scfg.search_dir / SEARCH_BEST
    atomic_write_text(path, configlib.dump_yaml(cfg, header=header))
    return path

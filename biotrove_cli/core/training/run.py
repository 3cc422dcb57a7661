"""The run folder: resolved config, label bank, metrics, checkpoints; and ``info`` for it.

runs/NAME/
  config.yaml       the resolved TrainConfig (biotrove version in its header)
  run.json          launch facts: version, world size, data, start/finish times, status
  labels.parquet    the label bank of the training data
  metrics.jsonl     one JSON object per logged step / evaluation
  checkpoints/      step-00000100.pt ... and ``latest`` (points at a complete file)
  tensorboard/      when tensorboard is installed
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli import __version__

CONFIG = "config.yaml"
RUN_JSON = "run.json"
LABELS = "labels.parquet"
METRICS = "metrics.jsonl"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_run_dir(data: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"run-{stamp}"


def read_run_json(run_dir: Path) -> dict[str, Any]:
    p = run_dir / RUN_JSON
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def write_run_json(run_dir: Path, **updates: Any) -> None:
    from biotrove_cli.core.io import atomic_write_json

    data = read_run_json(run_dir)
    data.update(updates)
    data.setdefault("biotrove_version", __version__)
    atomic_write_json(run_dir / RUN_JSON, data)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete line of metrics.jsonl (a torn last line after a crash is ignored)."""
    p = run_dir / METRICS
    out = []
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def summarize(run_dir: Path) -> list[dict[str, Any]]:
    """The result of a training run as key/value records (what ``biotrove train`` prints)."""
    from biotrove_cli.core.models.checkpoint import resolve_latest

    info = read_run_json(run_dir)
    metrics = read_metrics(run_dir)
    steps = [m for m in metrics if m.get("kind") == "train"]
    evals = [m for m in metrics if m.get("kind") == "eval"]
    rows: list[dict[str, Any]] = [
        {"key": "run_dir", "value": str(run_dir)},
        {"key": "status", "value": info.get("status", "unknown")},
        {"key": "steps", "value": info.get("steps", steps[-1]["step"] if steps else 0)},
    ]
    if steps:
        rows.append({"key": "loss_first", "value": round(steps[0]["loss"], 4)})
        rows.append({"key": "loss_last", "value": round(steps[-1]["loss"], 4)})
        rows.append({"key": "samples_per_s", "value": round(steps[-1].get("samples_per_s", 0), 1)})
    latest = resolve_latest(run_dir)
    rows.append({"key": "checkpoint", "value": str(latest) if latest else ""})
    if evals:
        for k, v in evals[-1].items():
            if (k.startswith("top1_") or k == "top5_species") and isinstance(v, (int, float)):
                rows.append({"key": f"val_{k}", "value": round(v, 4)})
    return rows

"""The run folder of ``biotrove train`` (its file names are in :mod:`biotrove_cli.core.layout`):
the resolved config, launch facts, label bank, metrics and checkpoints; and its summary.

runs/NAME/
  config.yaml       the resolved TrainConfig (biotrove version in its header)
  launch.yaml       the config handed to the torchrun workers
  run.json          launch facts: version, world size, data, start/finish times, status
  labels.parquet    the label bank of the training data
  metrics.jsonl     one JSON object per logged step / evaluation
  checkpoints/      step-00000100.pt ... and ``latest`` (points at a complete file)
  tensorboard/ wandb/ mlruns/   the experiment trackers of ``--report-to`` (trackers.py)
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli import __version__
from biotrove_cli.core import config as configlib
from biotrove_cli.core.layout import (
    LAUNCH_CONFIG,
    METRICS,
    RUN_CONFIG,
    RUN_JSON,
    RUN_LABELS,
)
from biotrove_cli.core.training.trackers import tracker_metrics

log = logging.getLogger("biotrove")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_run_dir(name: str) -> Path:
    """``runs/NAME-TIMESTAMP`` (NAME: the preset, else the architecture)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "run"
    return Path("runs") / f"{safe}-{stamp}"


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


def write_launch_config(run_dir: Path, cfg: Any) -> Path:
    """``launch.yaml``: the resolved config every worker of the run reads."""
    from biotrove_cli.core.io import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LAUNCH_CONFIG
    atomic_write_text(
        path, configlib.dump_yaml(cfg, header="written by biotrove train for its workers")
    )
    return path


def start_run_folder(
    run_dir: Path,
    cfg: Any,
    bank: Any,
    *,
    world_size: int,
    device: str,
    precision: str,
    resumed_from: Path | None,
) -> None:
    """Write the resolved config, the label bank (once) and run.json (status running); a
    resumed run keeps its first start time."""
    from biotrove_cli.core.io import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    header = f"biotrove {__version__} resolved training config"
    atomic_write_text(run_dir / RUN_CONFIG, configlib.dump_yaml(cfg, header=header))
    if bank is not None and not (run_dir / RUN_LABELS).exists():
        bank.save(run_dir / RUN_LABELS)
    started = now_iso()
    if resumed_from is not None:
        started = read_run_json(run_dir).get("started", started)
    write_run_json(
        run_dir,
        status="running",
        world_size=world_size,
        started=started,
        data=cfg.data.train,
        device=device,
        precision=precision,
        resumed_from=str(resumed_from) if resumed_from else None,
    )


class MetricsLog:
    """metrics.jsonl (one JSON object a line, flushed), and the same records to the run's
    experiment trackers (:mod:`biotrove_cli.core.training.trackers`)."""

    def __init__(self, run_dir: Path, trackers: list[Any] | None = None):
        self._fh = open(run_dir / METRICS, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.trackers = list(trackers or [])
        self.status = "stopped"  # what the trackers are told at close unless the run says

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self.trackers:
            metrics = tracker_metrics(record)
            for tracker in self.trackers:
                tracker.log(metrics, int(record.get("step", 0)))

    def close(self) -> None:
        self._fh.close()
        for tracker in self.trackers:
            try:
                tracker.close(self.status)
            except Exception as exc:  # a tracker failing at the end must not hide the run's end
                log.warning("%s did not close cleanly: %s", tracker.name, exc)


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
        for key in ("skipped_shards", "truncated_shards", "lost_samples"):
            if key in steps[-1]:  # shards unreadable or ended early, over the whole run
                rows.append({"key": key, "value": steps[-1][key]})
    latest = resolve_latest(run_dir)
    rows.append({"key": "checkpoint", "value": str(latest) if latest else ""})
    if evals:
        for k, v in evals[-1].items():
            if (k.startswith("top1_") or k == "top5_species") and isinstance(v, (int, float)):
                rows.append({"key": f"val_{k}", "value": round(v, 4)})
    return rows

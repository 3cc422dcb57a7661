"""``biotrove info`` of a training run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError
from biotrove_cli.core.inspect.report import Report
from biotrove_cli.core.layout import RUN_CONFIG, RUN_LABELS
from biotrove_cli.core.training.run import read_metrics, read_run_json


def describe_run(path: Path):
    from biotrove_cli.core.models.checkpoint import list_checkpoints, resolve_latest

    if not path.is_dir():
        raise InputError(f"{path}: not a run folder")
    rep = Report("run", f"{path.name}: training run")
    info = read_run_json(path)
    cfg_text = (path / RUN_CONFIG).read_text() if (path / RUN_CONFIG).is_file() else ""
    cfg: dict[str, Any] = {}
    if cfg_text:
        import yaml

        try:
            cfg = yaml.safe_load(cfg_text) or {}
        except yaml.YAMLError:
            cfg = {}
    model = cfg.get("model", {}) if isinstance(cfg, dict) else {}
    data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
    rep.add("run", "status", info.get("status", "unknown"))
    for key in ("started", "finished", "world_size", "biotrove_version"):
        if key in info:
            rep.add("run", key, info[key])
    rep.add("config", "arch", model.get("arch"))
    rep.add("config", "init", model.get("init"))
    rep.add("config", "data", data.get("train"))
    rep.add("config", "text_type", data.get("text_type"))
    rep.add("config", "batch_size", data.get("batch_size"))
    if cfg.get("max_steps"):
        rep.add("config", "steps", cfg.get("max_steps"))
    else:
        rep.add("config", "epochs", cfg.get("epochs"))
    rep.add("config", "precision", cfg.get("precision"))
    ckpts = list_checkpoints(path)
    latest = resolve_latest(path)
    rep.add("checkpoints", "count", len(ckpts))
    rep.add("checkpoints", "latest", latest.name if latest else "(none)")
    metrics = read_metrics(path)
    steps = [m for m in metrics if m.get("kind") == "train"]
    evals = [m for m in metrics if m.get("kind") == "eval"]
    if steps:
        first, last = steps[0], steps[-1]
        rep.add("training", "steps logged", len(steps))
        rep.add("training", "last step", last.get("step"))
        rep.add(
            "training", "loss first -> last", f"{first.get('loss'):.4f} -> {last.get('loss'):.4f}"
        )
        if "samples_per_s" in last:
            rep.add("training", "samples/s (last)", round(last["samples_per_s"], 1))
    if evals:
        last = evals[-1]
        for key, value in last.items():
            if key.startswith("top1_"):
                rep.add("zero-shot (last eval)", key, round(value, 4))
    for name, where in _trackers(info.get("trackers") or {}):
        rep.add("trackers", name, where)
    if (path / RUN_LABELS).is_file():
        from biotrove_cli.core.taxonomy.labelbank import LabelBank

        rep.add("labels", "species", len(LabelBank.load(path / RUN_LABELS)))
    rep.document = {"run": info, "config": cfg, "checkpoints": [p.name for p in ckpts]}
    return rep


def _trackers(trackers: dict[str, Any]) -> list[tuple[str, str]]:
    """Where each experiment tracker of the run wrote (run.json's ``trackers``)."""
    rows = []
    for name, info in trackers.items():
        if not isinstance(info, dict):
            continue
        if name == "mlflow":
            where = (
                f"{info.get('uri')} (experiment {info.get('experiment')}, run {info.get('run_id')})"
            )
        elif name == "wandb":
            where = (
                f"{info.get('url') or info.get('dir')} ({info.get('mode')}, run {info.get('id')})"
            )
        else:
            where = str(info.get("dir"))
        rows.append((name, where))
    return rows

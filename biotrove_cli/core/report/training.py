"""The training-run section of a report: loss, learning rate, throughput and zero-shot accuracy
by rank over the steps of ``metrics.jsonl``, the run's facts (what ``biotrove info`` says of
it), its resolved configuration and its checkpoints.

A resumed run logs again the steps after the checkpoint it resumed from: the later record of a
step wins, as in the run's TensorBoard. Long runs are thinned to a few hundred points per
curve, keeping each stretch's lowest and highest value so spikes stay visible.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli.core.layout import RUN_CONFIG, checkpoint_step
from biotrove_cli.core.report.figures import Block, Column, LineChart, LineSeries, Section, Table
from biotrove_cli.core.taxonomy.rank import RANKS

MAX_POINTS = 600
_FACT_SECTIONS = ("run", "config", "training", "trackers", "labels")


def build_run(path: Path, *, max_points: int = MAX_POINTS) -> Section:
    """The section of one run folder."""
    from biotrove_cli.core.inspect.run import describe_run
    from biotrove_cli.core.training.run import read_metrics

    info = describe_run(path)
    section = Section("run", f"Training run {path.resolve().name}", [str(path)])
    section.facts = [
        (r["key"].replace("_", " "), str(r["value"]))
        for r in info.rows
        if r["section"] in _FACT_SECTIONS and r["value"] not in (None, "")
    ]
    steps, evals = latest_records(read_metrics(path))
    section.blocks += curves(steps, evals, max_points)
    if not steps and not evals:
        section.notes.append(f"{path}/metrics.jsonl holds no steps yet")
    if steps:
        last = steps[-1]
        problems = {
            k: last[k]
            for k in ("bad_samples", "skipped_shards", "truncated_shards", "lost_samples")
            if last.get(k)
        }
        if problems:
            section.notes.append(
                "data problems over the run: " + ", ".join(f"{k} {v}" for k, v in problems.items())
            )
    section.blocks.append(checkpoints_block(path))
    config = path / RUN_CONFIG
    if config.is_file():
        section.blocks.append(
            Block("Resolved configuration", text=str(config), code=config.read_text(), open=False)
        )
    return section


def latest_records(metrics: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """The train and eval records of metrics.jsonl, one per step: when a resumed run logs a step
    again, the records from that step on of the earlier attempt are dropped."""
    kept: dict[str, list[dict]] = {"train": [], "eval": []}
    for rec in metrics:
        kind, step = rec.get("kind"), rec.get("step")
        if kind not in kept or not isinstance(step, (int, float)):
            continue
        records = kept[kind]
        while records and records[-1]["step"] >= step:
            records.pop()
        records.append(rec)
    return kept["train"], kept["eval"]


def thin(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """At most about ``max_points`` points: the first and last, and in each of
    ``max_points / 2`` equal stretches its lowest and highest point (in step order)."""
    if len(points) <= max_points:
        return list(points)
    buckets = max(1, (max_points - 2) // 2)
    inner = points[1:-1]
    size = len(inner) / buckets
    out = [points[0]]
    for b in range(buckets):
        chunk = inner[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        lo = min(chunk, key=lambda p: p[1])
        hi = max(chunk, key=lambda p: p[1])
        out += sorted({lo, hi}, key=lambda p: p[0])
    out.append(points[-1])
    return out


def _series(records: list[dict], key: str, max_points: int) -> list[tuple[float, float]]:
    pts = [
        (float(r["step"]), float(r[key]))
        for r in records
        if isinstance(r.get(key), (int, float)) and r[key] == r[key]
    ]
    return thin(pts, max_points)


def curves(steps: list[dict], evals: list[dict], max_points: int) -> list[Block]:
    """Loss, learning rate, throughput and zero-shot accuracy by rank over the steps."""
    blocks = []
    loss = [LineSeries("training loss", _series(steps, "loss", max_points))]
    val_loss = _series(evals, "loss", max_points)
    if val_loss:
        loss.append(LineSeries("validation loss", val_loss, markers=True))
    if loss[0].points or val_loss:
        text = "The contrastive loss of each logged step"
        if val_loss:
            text += (
                "; at each evaluation, the zero-shot species cross-entropy on the validation data"
            )
        blocks.append(
            Block("Loss", text=text + ".", figures=[LineChart("Loss", loss, y_label="loss")])
        )
    lr = _series(steps, "lr", max_points)
    throughput = _series(steps, "samples_per_s", max_points)
    figures = []
    if lr:
        figures.append(
            LineChart(
                "Learning rate",
                [LineSeries("learning rate", lr)],
                y_label="learning rate",
                fmt="sci",
            )
        )
    if throughput:
        figures.append(
            LineChart("Throughput", [LineSeries("samples/s", throughput)], y_label="samples/s")
        )
    if figures:
        blocks.append(Block("Learning rate and throughput", figures=figures))
    ranks = [r.value for r in RANKS if any(f"top1_{r.value}" in e for e in evals)]
    if ranks:
        series = [
            LineSeries(r, _series(evals, f"top1_{r}", max_points), markers=True) for r in ranks
        ]
        last = evals[-1]
        text = (
            f"Zero-shot top-1 on the validation data ({last.get('val_images')} images) at each "
            f"evaluation; the last, at step {last['step']}: "
            + ", ".join(
                f"{r} {100 * last[f'top1_{r}']:.1f}%"
                for r in ranks
                if isinstance(last.get(f"top1_{r}"), (int, float))
            )
        )
        blocks.append(
            Block(
                "Zero-shot accuracy by rank",
                text=text,
                figures=[LineChart("Zero-shot top-1 by rank", series, y_label="top-1", fmt="pct")],
            )
        )
    return blocks


def checkpoints_block(path: Path) -> Block:
    """Every step checkpoint: step, size, time, whether it is complete and the latest."""
    from biotrove_cli.core.models.checkpoint import list_checkpoints, looks_complete, resolve_latest

    latest = resolve_latest(path)
    rows = []
    for ck in list_checkpoints(path):
        st = ck.stat()
        when = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc).isoformat(timespec="seconds")
        state = "latest" if ck == latest else ("complete" if looks_complete(ck) else "incomplete")
        rows.append([ck.name, checkpoint_step(ck.name), st.st_size, when, state])
    cols = [
        Column("checkpoint"),
        Column("step", "int"),
        Column("size", "bytes"),
        Column("written (UTC)"),
        Column("state"),
    ]
    text = "" if rows else "No checkpoint yet."
    return Block("Checkpoints", text=text, tables=[Table(cols, rows)] if rows else [])

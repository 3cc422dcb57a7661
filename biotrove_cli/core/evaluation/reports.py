"""What ``biotrove eval`` reports: one record per model x mode x rank, notes about the rows
left out, the document around them, and the optional files (per-class CSV, confusion CSV,
accuracy plot)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from biotrove_cli import __version__
from biotrove_cli.core.errors import UsageError
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.data import Dataset
from biotrove_cli.core.evaluation.metrics import CI_METHOD
from biotrove_cli.core.evaluation.scoring import ModelTally
from biotrove_cli.core.evaluation.zeroshot import TextSettings
from biotrove_cli.core.fmt import plural
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.rank import Rank


def round_value(v: Any) -> Any:
    """Floats to 6 decimals (NaN stays NaN); anything else as it is."""
    if isinstance(v, float) and not math.isnan(v):
        return round(v, 6)
    return v


def build_records(models: list[ModelTally], cfg: EvalConfig) -> list[dict[str, Any]]:
    """One flat record per model x mode x rank: metrics with CIs (and severity at species)."""
    records = []
    for m in models:
        for mode in cfg.modes:
            for rank in cfg.ranks:
                t = m.tallies[(mode, rank)]
                rec: dict[str, Any] = {"model": m.label, "model_spec": m.spec, "mode": mode.value}
                rec["rank"] = rank.value
                rec.update({k: round_value(v) for k, v in t.metrics().items()})
                rec["n_unreadable"] = sum(m.unreadable.values())
                if rank is Rank.SPECIES:
                    rec.update({k: round_value(v) for k, v in m.severity[mode].metrics().items()})
                records.append(rec)
    return records


def build_document(
    models: list[ModelTally],
    ds: Dataset,
    cfg: EvalConfig,
    text: TextSettings,
    world_size: int,
    seconds: float,
) -> dict[str, Any]:
    """What was evaluated and how: the data, labels, settings and each model's facts."""
    return {
        "biotrove_version": __version__,
        **ds.describe(),
        "labels": {"source": ds.bank.source, "n_species": len(ds.bank)},
        "ranks": [r.value for r in cfg.ranks],
        "modes": [m.value for m in cfg.modes],
        "text_type": text.text_type,
        "templates": text.templates_name,
        "n_templates": len(text.templates),
        "ci": {"level": 0.95, **CI_METHOD},
        "world_size": world_size,
        "seconds": seconds,
        "models": [
            {
                "model": m.label,
                "spec": m.spec,
                **{k: v for k, v in m.info.items() if k not in ("spec",)},
                "n_images": m.n_seen,
                "n_unreadable": sum(m.unreadable.values()),
                "unreadable": dict(m.unreadable),
                "lost_samples": m.lost_samples,
                "shard_problems": m.shard_problems,
                "timings": m.timings,
            }
            for m in models
        ],
    }


def write_files(
    models: list[ModelTally], records: list[dict[str, Any]], bank: LabelBank, cfg: EvalConfig
) -> dict[str, str]:
    """Write the files the config asks for (per-class, confusion, plot); what -> path."""
    files: dict[str, str] = {}
    if cfg.per_class:
        write_per_class(cfg.per_class, models, bank, cfg)
        files["per_class"] = cfg.per_class
    if cfg.confusion is not None:
        write_confusion(cfg.confusion[1], cfg.confusion[0], models, bank)
        files["confusion"] = cfg.confusion[1]
    if cfg.plot:
        write_plot(cfg.plot, records, cfg, title=f"Zero-shot top-1 by rank: {Path(cfg.data).name}")
        files["plot"] = cfg.plot
    return files


def build_notes(models: list[ModelTally], cfg: EvalConfig) -> list[str]:
    """Plain sentences about excluded rows, for stderr."""
    notes: list[str] = []
    if not models:
        return notes
    m = models[0]
    mode = cfg.modes[0]
    for rank in cfg.ranks:
        t = m.tallies[(mode, rank)]
        if t.n_blank:
            notes.append(
                f"{plural(t.n_blank, 'image')} without a {rank.value} left out of the "
                f"{rank.value} metrics"
            )
        if t.n_not_in_bank:
            ex = ", ".join(t.not_in_bank_examples)
            notes.append(
                f"{plural(t.n_not_in_bank, 'image')} with a {rank.value} the label bank lacks "
                f"(e.g. {ex}) left out of the {rank.value} metrics"
            )
    bad = sum(m.unreadable.values())
    if bad:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(m.unreadable.items()))
        ex = "; ".join(m.unreadable_examples[:3])
        notes.append(f"{plural(bad, 'image')} unreadable, skipped ({reasons}; e.g. {ex})")
    notes.extend(shard_notes(m))
    return notes


def shard_notes(m: ModelTally) -> list[str]:
    """One sentence per shard that failed or ended early (the first few), and the total lost."""
    from biotrove_cli.core.data.shards import ShardProblem

    problems = [ShardProblem.from_dict(p) for p in m.shard_problems]
    notes = [p.message() for p in problems[:5]]
    if len(problems) > 5:
        notes.append(f"... and {plural(len(problems) - 5, 'more shard')}")
    if problems:
        skipped = sum(p.kind == "failed" for p in problems)
        notes.append(
            f"{plural(len(problems), 'shard')} unreadable or ended early ({skipped} skipped); "
            f"{plural(m.lost_samples, 'sample')} lost against sizes.json"
        )
    return notes


def write_per_class(path: str, models: list[ModelTally], bank: LabelBank, cfg: EvalConfig) -> None:
    """Per-class support, recall (top-1, top-5), predictions and precision, as CSV."""
    from biotrove_cli.core.io import atomic_write_text

    cols = [
        "model",
        "mode",
        "rank",
        "class",
        "common_name",
        "support",
        "correct_top1",
        "recall_top1",
        "correct_top5",
        "recall_top5",
        "predicted",
        "precision",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for m in models:
        for mode in cfg.modes:
            for rank in cfg.ranks:
                rc = bank.classes(rank)
                for row in m.tallies[(mode, rank)].per_class():
                    c = row.pop("index")
                    common = rc.taxa[c].common_name if rank is Rank.SPECIES else ""
                    w.writerow(
                        {
                            "model": m.label,
                            "mode": mode.value,
                            "rank": rank.value,
                            "class": rc.names[c],
                            "common_name": common,
                            **{k: _fmt(v) for k, v in row.items()},
                        }
                    )
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_confusion(path: str, rank: Rank, models: list[ModelTally], bank: LabelBank) -> None:
    """The confusion matrix at one rank as non-zero cells: model, mode, truth, predicted, count."""
    from biotrove_cli.core.io import atomic_write_text

    names = bank.classes(rank).names
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "mode", "rank", "truth", "predicted", "count"])
    for m in models:
        for (mode, r), t in m.tallies.items():
            if r is not rank:
                continue
            for ti, pi, n in t.confusion_pairs():
                w.writerow([m.label, mode.value, rank.value, names[ti], names[pi], n])
    atomic_write_text(path, buf.getvalue())


def check_plot_available() -> None:
    """Fail before any work when ``--plot`` cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "--plot needs matplotlib, which is not installed",
            hint="pip install 'biotrove[plot]' (or pip install matplotlib)",
        ) from exc


def write_plot(path: str, records: list[dict[str, Any]], cfg: EvalConfig, title: str) -> None:
    """A PNG bar chart of top-1 accuracy by rank, one bar per model x mode, with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biotrove_cli.core.io import atomic_open

    series: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        name = f"{r['model']} ({r['mode']})" if len(cfg.modes) > 1 else r["model"]
        series.setdefault(name, {})[r["rank"]] = r
    ranks = [r.value for r in cfg.ranks]
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(ranks) + 2), 4.5), dpi=120)
    for i, (name, by_rank) in enumerate(series.items()):
        xs, ys, lo, hi = [], [], [], []
        for j, rank in enumerate(ranks):
            rec = by_rank.get(rank)
            if rec is None or rec["top1"] is None or _nan(rec["top1"]):
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(100 * rec["top1"])
            lo.append(100 * (rec["top1"] - rec["top1_ci_low"]))
            hi.append(100 * (rec["top1_ci_high"] - rec["top1"]))
        ax.bar(xs, ys, width=width * 0.95, label=name, yerr=[lo, hi], capsize=2)
    ax.set_xticks(range(len(ranks)), ranks)
    ax.set_ylabel("top-1 accuracy (%), 95% Wilson CI")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)

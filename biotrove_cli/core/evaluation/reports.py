"""What ``biotrove eval`` reports: one record per model x mode x rank, notes about the rows
left out, and the optional files (per-class CSV, confusion CSV, accuracy plot)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from biotrove_cli.core.errors import UsageError
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.scoring import ModelTally
from biotrove_cli.core.fmt import plural
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.rank import Rank


def round_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isnan(v):
        return round(v, 6)
    return v


def build_records(models: list[ModelTally], cfg: EvalConfig) -> list[dict[str, Any]]:
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
    return notes


def write_per_class(path: str, models: list[ModelTally], bank: LabelBank, cfg: EvalConfig) -> None:
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

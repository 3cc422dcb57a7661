"""What ``biotrove eval`` reports: one record per model x text type x mode x rank (or per
candidate-set group), notes about how the data was read and the rows left out, the document
around them, and the optional files (per-class CSV, confusion CSV, the plot of :mod:`.plots`)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from biotrove_cli import __version__
from biotrove_cli.core.evaluation.candidates import CandidateTally
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.data import Dataset
from biotrove_cli.core.evaluation.metrics import CI_METHOD, RankTally
from biotrove_cli.core.evaluation.scoring import LABEL, ModelTally
from biotrove_cli.core.evaluation.zeroshot import TextSettings
from biotrove_cli.core.fmt import plural
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.rank import Rank


def round_value(v: Any) -> Any:
    """Floats to 6 decimals (NaN stays NaN); anything else as it is."""
    if isinstance(v, float) and not math.isnan(v):
        return round(v, 6)
    return v


def _base(m: ModelTally) -> dict[str, Any]:
    return {"model": m.label, "model_spec": m.spec, "text_type": m.text_type}


def build_records(models: list[ModelTally], cfg: EvalConfig) -> list[dict[str, Any]]:
    """Flat records: one per model x text type x mode x rank (and the label level) with
    metrics, CIs and chance (severity at species); for candidate sets, one per model x text
    type x group, then the macro and micro averages."""
    records = []
    for m in models:
        bad = sum(m.unreadable.values())
        if m.candidates is not None:
            for row in m.candidates.metrics():
                rec = {**_base(m), **{k: round_value(v) for k, v in row.items()}}
                records.append({**rec, "n_unreadable": bad})
            continue
        for mode in cfg.modes:
            levels: list[tuple[Any, Any]] = [(r, m.tallies[(mode, r)]) for r in cfg.ranks or ()]
            if m.label_tally is not None:
                levels.append((LABEL, m.label_tally))
            for rank, t in levels:
                rec: dict[str, Any] = {**_base(m), "mode": mode.value}
                rec["rank"] = rank.value if isinstance(rank, Rank) else rank
                rec.update({k: round_value(v) for k, v in t.metrics().items()})
                rec["n_unreadable"] = bad
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
        "ranks": [r.value for r in cfg.ranks or ()],
        "modes": [m.value for m in cfg.modes],
        "text_type": text.text_type,
        "text_types": cfg.text_types,
        "templates": text.templates_name,
        "n_templates": len(text.templates),
        "ci": {"level": 0.95, **CI_METHOD},
        "world_size": world_size,
        "seconds": seconds,
        "models": [
            {
                "model": m.label,
                "spec": m.spec,
                "text_type": m.text_type,
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
    models: list[ModelTally], records: list[dict[str, Any]], ds: Dataset, cfg: EvalConfig
) -> dict[str, str]:
    """Write the files the config asks for (per-class, confusion, plot); what -> path."""
    files: dict[str, str] = {}
    if cfg.per_class:
        write_per_class(cfg.per_class, models, ds, cfg)
        files["per_class"] = cfg.per_class
    if cfg.confusion is not None:
        write_confusion(cfg.confusion[1], cfg.confusion[0], models, ds.bank)
        files["confusion"] = cfg.confusion[1]
    if cfg.plot:
        from biotrove_cli.core.evaluation.plots import write_plot

        write_plot(cfg.plot, records, ds, cfg)
        files["plot"] = cfg.plot
    return files


def build_notes(models: list[ModelTally], cfg: EvalConfig, ds: Dataset | None = None) -> list[str]:
    """Plain sentences about the rows left out, for stderr."""
    notes: list[str] = []
    if not models:
        return notes
    m = models[0]
    mode = cfg.modes[0]
    levels = [(r.value, m.tallies[(mode, r)]) for r in cfg.ranks or ()]
    if m.label_tally is not None:
        levels.append(
            (f"label ({ds.table.label_col})" if ds and ds.table else LABEL, m.label_tally)
        )
    for name, t in levels:
        if t.n_blank:
            notes.append(
                f"{plural(t.n_blank, 'image')} without a {name} left out of the {name} metrics"
            )
        if t.n_not_in_bank:
            ex = ", ".join(t.not_in_bank_examples)
            notes.append(
                f"{plural(t.n_not_in_bank, 'image')} with a {name} the label bank lacks "
                f"(e.g. {ex}) left out of the {name} metrics"
            )
    if m.candidates is not None:
        notes += _candidate_notes(m.candidates)
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


def _candidate_notes(c: CandidateTally) -> list[str]:
    notes = []
    missing = int(c.not_in_candidates.sum())
    if missing:
        ex = "; ".join(c.not_in_candidates_examples[:3])
        notes.append(
            f"{plural(missing, 'photo')} whose true name is none of its candidates left out "
            f"(names match exactly, ignoring case and spacing; e.g. {ex})"
        )
    if c.n_blank:
        notes.append(f"{plural(c.n_blank, 'photo')} without a true name left out")
    if c.n_no_candidates:
        notes.append(f"{plural(c.n_no_candidates, 'photo')} without candidate names left out")
    return notes


def build_info(ds: Dataset) -> list[str]:
    """Plain sentences about how a table was read (its image paths, its label column)."""
    notes: list[str] = []
    src = ds.table
    if src is None:
        return notes
    if src.paths is not None:
        notes.append(describe_paths(src.paths))
    if src.label_kind == "free" and src.names is not None and not src.candidates:
        notes.append(
            f"{src.label_col}: {plural(len(src.names), 'class name')} that are not all "
            "scientific names, scored as a level of their own ('label') and used as written "
            "whatever the text type"
        )
    return notes


def describe_paths(paths: dict[str, Any]) -> str:
    """One sentence: how many image paths were found, and how."""
    ways = {
        "under_images": "under --images as written",
        "as_written": "at their own path",
        "beside_table": "beside the table",
        "by_photo_id": "by photo id under --images",
        "by_suffix": "by the longest suffix that exists under --images",
    }
    parts = [f"{paths[k]} {label}" for k, label in ways.items() if paths.get(k)]
    if paths.get("dropped_prefixes"):
        parts[-1 if paths.get("by_suffix") else 0] += (
            " (dropping " + ", ".join(paths["dropped_prefixes"]) + ")"
        )
    text = "image paths: " + ("; ".join(parts) if parts else "none found")
    if paths.get("not_found"):
        ex = ", ".join(paths.get("not_found_examples") or [])
        text += f"; {paths['not_found']} not found (e.g. {ex})"
    return text


def write_per_class(path: str, models: list[ModelTally], ds: Dataset, cfg: EvalConfig) -> None:
    """Per-class support, recall (top-1, top-5), predictions and precision, as CSV."""
    from biotrove_cli.core.io import atomic_write_text

    cols = [
        "model",
        "text_type",
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
            levels: list[tuple[str, RankTally, list[str], list[str]]] = []
            for rank in cfg.ranks or ():
                rc = ds.bank.classes(rank)
                common = [t.common_name if rank is Rank.SPECIES else "" for t in rc.taxa]
                levels.append((rank.value, m.tallies[(mode, rank)], rc.names, common))
            if m.label_tally is not None and ds.names is not None:
                levels.append((LABEL, m.label_tally, ds.names.names, [""] * len(ds.names)))
            for level, tally, names, common in levels:
                for row in tally.per_class():
                    c = row.pop("index")
                    w.writerow(
                        {
                            "model": m.label,
                            "text_type": m.text_type,
                            "mode": mode.value,
                            "rank": level,
                            "class": names[c],
                            "common_name": common[c],
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
    w.writerow(["model", "text_type", "mode", "rank", "truth", "predicted", "count"])
    for m in models:
        for (mode, r), t in m.tallies.items():
            if r is not rank:
                continue
            for ti, pi, n in t.confusion_pairs():
                w.writerow([m.label, m.text_type, mode.value, rank.value, names[ti], names[pi], n])
    atomic_write_text(path, buf.getvalue())

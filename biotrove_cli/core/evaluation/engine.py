"""``biotrove eval``: zero-shot accuracy at every rank, in one image pass per model.

Data is a shard folder / split folder / brace pattern written by ``biotrove shard`` (its label
bank is the folder's ``taxonomy.parquet``), or a CSV/Parquet table with lineage columns and an
image path (or photo id) column plus ``--images DIR``. Images are decoded in DataLoader worker
processes (JPEG draft decoding near the model's input size), encoded in batches, and every
requested rank and mode is scored from the same features.

Distributed: :func:`evaluate` takes the process's rank and world size; shards (or table rows)
are split across processes and the tallies are gathered to rank 0, which alone returns the
result.

This module imports torch at import time; the CLI imports it inside the command body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli import __version__
from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.data import Dataset, open_dataset, share
from biotrove_cli.core.evaluation.metrics import CI_METHOD
from biotrove_cli.core.evaluation.reports import (
    build_notes,
    build_records,
    check_plot_available,
    round_value,
    write_confusion,
    write_per_class,
    write_plot,
)
from biotrove_cli.core.evaluation.scoring import ModelTally, evaluate_model, gather
from biotrove_cli.core.evaluation.zeroshot import TextSettings
from biotrove_cli.core.runtime import ProgressFn
from biotrove_cli.core.taxonomy.rank import Rank

log = logging.getLogger("biotrove")


# -- results ---------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Records (one per model x mode x rank) and the document around them."""

    records: list[dict[str, Any]]
    document: dict[str, Any]
    models: list[ModelTally]
    dataset: Dataset
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def severity_rows(self) -> list[dict[str, Any]]:
        """Mistake severity per model and mode (when the species rank was scored)."""
        rows = []
        for m in self.models:
            for mode, sev in m.severity.items():
                if (mode, Rank.SPECIES) in m.tallies:
                    rows.append({"model": m.label, "mode": mode.value, **sev.metrics()})
        return rows

    def payload(self) -> dict[str, Any]:
        """Everything the CLI renders, as plain JSON values."""
        return {
            "records": self.records,
            "document": self.document,
            "severity": [{k: round_value(v) for k, v in r.items()} for r in self.severity_rows()],
            "notes": self.notes,
            "files": self.files,
        }


def _model_label(spec: str, others: Sequence[str]) -> str:
    name = Path(spec).name if ("/" in spec or "\\" in spec) else spec
    return name if sum(1 for o in others if o == spec) <= 1 else spec


# -- entry point -----------------------------------------------------------------------------
def evaluate(
    cfg: EvalConfig,
    progress: ProgressFn | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> EvalResult | None:
    """Evaluate every model on the data; rank 0 (or a single process) returns the result.

    Args:
        progress: a ``(done, total)`` callback over all models' image passes (this process's
            share of the samples; total is None-safe: ``done`` when the size is unknown).
        rank, world_size: this process's place among distributed processes; read from
            ``torch.distributed`` when it is initialised and these are None.
    """
    if not cfg.models:
        raise UsageError("no model given", hint="pass --model MODEL (repeat it to compare)")
    if cfg.plot:
        check_plot_available()
    text = TextSettings.from_spec(cfg.text_type, cfg.templates)  # bad values fail before work
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.limit is not None and cfg.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {cfg.limit}")
    if rank is None or world_size is None:
        rank, world_size = _dist_place()
    ds = open_dataset(cfg)
    for r in cfg.ranks:
        if len(ds.bank.classes(r)) == 0:
            raise InputError(
                f"the label bank has no {r.value} names, so {r.value} cannot be scored",
                hint="leave that rank out with --ranks, or use labels with that rank filled",
            )
    t0 = time.perf_counter()
    per_model = None if ds.total is None else share(ds.total, rank, world_size)
    total = None if per_model is None else per_model * len(cfg.models)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total if total is not None else done[0])

    models: list[ModelTally] = []
    for spec in cfg.models:
        label = _model_label(spec, cfg.models)
        tally = evaluate_model(spec, ds, cfg, step, rank, world_size, label=label)
        if world_size > 1:
            tally = gather(tally, world_size)
            if tally is None:
                continue
        models.append(tally)
    if rank != 0:
        return None
    seen = models[0].n_seen if models else 0
    if seen == 0:
        raise InputError(f"{cfg.data}: the dataset is empty (no samples)", hint="nothing to score")
    usable = any(m.tallies[k].n_images for m in models for k in m.tallies)
    if not usable:
        t = models[0].tallies[(cfg.modes[0], cfg.ranks[-1])]
        bad = sum(models[0].unreadable.values())
        why = (
            f"all {bad} images were unreadable"
            if bad >= seen
            else "no image's lineage matches the label bank at any requested rank"
            + (f" (e.g. {', '.join(t.not_in_bank_examples)})" if t.not_in_bank_examples else "")
        )
        raise InputError(
            f"{cfg.data}: nothing to score: {why}",
            hint="check the images folder and that --labels covers the data's species",
        )
    records = build_records(models, cfg)
    document = {
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
        "seconds": round(time.perf_counter() - t0, 3),
        "models": [
            {
                "model": m.label,
                "spec": m.spec,
                **{k: v for k, v in m.info.items() if k not in ("spec",)},
                "n_images": m.n_seen,
                "n_unreadable": sum(m.unreadable.values()),
                "unreadable": dict(m.unreadable),
                "timings": m.timings,
            }
            for m in models
        ],
    }
    result = EvalResult(records, document, models, ds, notes=build_notes(models, cfg))
    if cfg.per_class:
        write_per_class(cfg.per_class, models, ds.bank, cfg)
        result.files["per_class"] = cfg.per_class
    if cfg.confusion is not None:
        write_confusion(cfg.confusion[1], cfg.confusion[0], models, ds.bank)
        result.files["confusion"] = cfg.confusion[1]
    if cfg.plot:
        write_plot(cfg.plot, records, cfg, title=f"Zero-shot top-1 by rank: {Path(cfg.data).name}")
        result.files["plot"] = cfg.plot
    document["files"] = dict(result.files)
    return result


def _dist_place() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1

"""``biotrove eval``: zero-shot accuracy at every rank, in one image pass per model.

:func:`evaluate` checks the config, opens the data (:mod:`.data`), scores each model on this
process's share of it (:mod:`.scoring`), and on rank 0 builds the records, the document around
them and the requested files (:mod:`.reports`).

Distributed: :func:`evaluate` takes the process's rank and world size; shards (or table rows)
are split across processes and the tallies are gathered to rank 0, which alone returns the
result.

This module imports torch at import time; the CLI imports it inside the command body.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.data import Dataset, open_dataset, share
from biotrove_cli.core.evaluation.plots import check_plot_available
from biotrove_cli.core.evaluation.reports import (
    build_document,
    build_info,
    build_notes,
    build_records,
    round_value,
    write_files,
)
from biotrove_cli.core.evaluation.scoring import ModelTally, evaluate_model, gather
from biotrove_cli.core.evaluation.zeroshot import TextSettings
from biotrove_cli.core.runtime import ProgressFn
from biotrove_cli.core.taxonomy.rank import Rank


# -- results ---------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Records (one per model x text type x mode x level) and the document around them."""

    records: list[dict[str, Any]]
    document: dict[str, Any]
    models: list[ModelTally]
    dataset: Dataset
    notes: list[str] = field(default_factory=list)  # rows left out (warnings)
    files: dict[str, str] = field(default_factory=dict)
    info: list[str] = field(default_factory=list)  # how the data was read

    def severity_rows(self) -> list[dict[str, Any]]:
        """Mistake severity per model, text type and mode (when the species rank was scored)."""
        rows = []
        for m in self.models:
            for mode, sev in m.severity.items():
                if (mode, Rank.SPECIES) in m.tallies:
                    row = {"model": m.label, "text_type": m.text_type, "mode": mode.value}
                    rows.append({**row, **sev.metrics()})
        return rows

    def payload(self) -> dict[str, Any]:
        """Everything the CLI renders, as plain JSON values."""
        return {
            "records": self.records,
            "document": self.document,
            "severity": [{k: round_value(v) for k, v in r.items()} for r in self.severity_rows()],
            "notes": self.notes,
            "info": self.info,
            "files": self.files,
        }


def model_labels(specs: Sequence[str]) -> list[str]:
    """A unique, short name per model spec: the shortest path suffix that no other spec ends
    with (``a/model`` and ``b/model`` stay ``a/model`` and ``b/model``; ``runs/x/model`` beside
    ``clip-o`` is ``model``). The names key the table, the records and the plot series, so two
    models must never share one.

    Raises:
        UsageError: the same model is given twice.
    """
    seen: set[str] = set()
    for spec in specs:
        if spec in seen:
            raise UsageError(
                f"--model {spec} is given twice", hint="give each model to compare once"
            )
        seen.add(spec)
    parts = [_path_parts(s) for s in specs]
    labels = []
    for i, mine in enumerate(parts):
        label = specs[i]  # paths that differ only in spelling (./a, a) keep the spec as given
        for k in range(1, len(mine) + 1):
            suffix = mine[-k:]
            if all(other[-k:] != suffix for j, other in enumerate(parts) if j != i):
                label = "/".join(suffix)
                break
        labels.append(label)
    return labels


def _path_parts(spec: str) -> tuple[str, ...]:
    """A spec's path components (one for a tag such as ``clip-o`` or ``ViT-B-16:openai``)."""
    if "/" not in spec and "\\" not in spec:
        return (spec,)
    return tuple(p for p in spec.replace("\\", "/").split("/") if p)


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
    text = _check_config(cfg)
    if rank is None or world_size is None:
        rank, world_size = _dist_place()
    ds = open_dataset(cfg)
    cfg = replace(cfg, ranks=ds.ranks)  # from here on, the ranks actually scored
    if cfg.confusion is not None and cfg.confusion[0] not in cfg.ranks:
        raise UsageError(
            f"--confusion {cfg.confusion[0].value}: that rank is not scored on {cfg.data}",
            hint=f"ranks scored: {', '.join(r.value for r in cfg.ranks) or 'none'}",
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
    for spec, label in zip(cfg.models, model_labels(cfg.models), strict=True):
        for tally in evaluate_model(spec, ds, cfg, step, rank, world_size, label=label):
            if world_size > 1:
                tally = gather(tally, world_size)
                if tally is None:
                    continue
            models.append(tally)
    if rank != 0:
        return None
    _check_scored(models, cfg)
    records = build_records(models, cfg)
    seconds = round(time.perf_counter() - t0, 3)
    document = build_document(models, ds, cfg, text, world_size, seconds)
    result = EvalResult(records, document, models, ds, notes=build_notes(models, cfg, ds))
    result.info = build_info(ds)
    result.files = write_files(models, records, ds, cfg)
    document["files"] = dict(result.files)
    return result


def _check_config(cfg: EvalConfig) -> TextSettings:
    """Usage errors before any work; the class-text settings."""
    if not cfg.models:
        raise UsageError("no model given", hint="pass --model MODEL (repeat it to compare)")
    model_labels(cfg.models)  # a model given twice is refused before any work
    if cfg.plot:
        check_plot_available()
    text = TextSettings.from_spec(cfg.text_types[0], cfg.templates)
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.limit is not None and cfg.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {cfg.limit}")
    return text


def _check_scored(models: list[ModelTally], cfg: EvalConfig) -> None:
    """Fail clearly when the pass saw no sample, or none that could be scored."""
    seen = models[0].n_seen if models else 0
    if seen == 0:
        raise InputError(f"{cfg.data}: the dataset is empty (no samples)", hint="nothing to score")
    if any(m.n_scored for m in models):
        return
    m = models[0]
    bad = sum(m.unreadable.values())
    if bad >= seen:
        why = f"all {bad} images were unreadable"
    elif m.candidates is not None:
        why = "no photo's true name is among its candidates"
    elif not cfg.ranks:
        why = "no row has a name in the label column"
    else:
        t = m.tallies[(cfg.modes[0], cfg.ranks[-1])]
        why = "no image's lineage matches the label bank at any requested rank" + (
            f" (e.g. {', '.join(t.not_in_bank_examples)})" if t.not_in_bank_examples else ""
        )
    raise InputError(
        f"{cfg.data}: nothing to score: {why}",
        hint="check the images folder and that --labels covers the data's species",
    )


def _dist_place() -> tuple[int, int]:
    """(rank, world size) of an initialised process group; (0, 1) without one. A process that
    has not imported torch has none (the ONNX backend never imports it)."""
    import sys

    if "torch" not in sys.modules:
        return 0, 1
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1

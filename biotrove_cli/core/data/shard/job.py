"""The sharding job behind ``biotrove shard``: metadata + images -> WebDataset tar shards.

The job runs in four steps:

1. **Plan** (:func:`.plan.make_plan`): read the metadata, drop rows without a species, exact
   duplicate photos and photos whose rows disagree on the species, keep the ``--categories``,
   set rare species aside into ``unseen`` (``--min-per-species``), cap frequent ones
   (``--max-per-species``), split the rest into ``train``/``val`` by sample, shuffle, and cut
   every split into units of ``--samples-per-shard``. The plan is a pure function of the
   metadata rows, the arguments and the seed (rows are sorted by photo identity first, so file
   order does not matter either): every rerun, and every ``--part K/N`` on N machines, computes
   the same plan without talking to the others. Its fingerprint lands in ``plan.json``; an
   output folder holding another plan is refused before any work.
2. **Download** (optional, :mod:`.sources`, :mod:`..download`): fetch the photos of this
   part's units that are not on disk.
3. **Write** (:func:`.unit.write_unit`, :mod:`.pool`): each unit becomes
   ``{split}/shard-{index:06d}.tar`` (plus ``_1``, ``_2``... parts when ``--max-shard-bytes`` is
   reached), each followed by its ``.stats.json``. Both are written atomically; a unit is
   complete only when the stats of its final part exist. Units are spread over ``--workers``
   processes; unit ``u`` (counted over all splits) belongs to part ``u % N + 1``.
4. **Finalize** (:func:`.finalize.finalize`): once every unit of the plan is complete, write
   ``sizes.json`` per split, ``taxonomy.parquet`` and ``manifest.json``.

A rerun keeps complete units and deletes then redoes incomplete ones, so the final dataset holds
every selected sample exactly once, whatever interrupted the earlier run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.images import IMAGE_SUFFIXES
from biotrove_cli.core.data.shard.config import ShardConfig
from biotrove_cli.core.data.shard.files import read_json
from biotrove_cli.core.data.shard.finalize import SplitSummary, finalize, prepare_output, summarize
from biotrove_cli.core.data.shard.plan import Sample, ShardPlan, Unit, make_plan
from biotrove_cli.core.data.shard.pool import write_all
from biotrove_cli.core.data.shard.sources import download_photos, resolve_sources, to_download
from biotrove_cli.core.data.shard.unit import MAX_FAILED_LISTED, WriteSettings, complete_units
from biotrove_cli.core.errors import BiotroveError, InputError
from biotrove_cli.core.fmt import plural
from biotrove_cli.core.layout import PLAN
from biotrove_cli.core.runtime import ProgressFn, timed
from biotrove_cli.core.taxonomy.captions import check_text_type

log = logging.getLogger("biotrove.shard")

PhaseFn = Callable[[str, int], None]


@dataclass
class ShardResult:
    out: Path
    fingerprint: str
    selection: dict[str, int]
    splits: list[SplitSummary]
    resumed: bool
    kept_units: int  # complete before this run
    written_units: int  # written by this run
    other_parts_units: int  # units of other --part runs (this run did not touch them)
    pending_units: int  # units still missing after this run (other parts)
    finalized: bool
    seconds: float
    images_per_second: float
    download: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    failed_samples: list[dict[str, str]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        rows = [s.record() for s in self.splits]
        if len(rows) > 1:
            total = SplitSummary("total")
            for s in self.splits:
                for f in ("shards", "pending", "planned", "written", "failed", "bytes"):
                    setattr(total, f, getattr(total, f) + getattr(s, f))
                total.failures.update(s.failures)
                total.converted.update(s.converted)
                total.species_keys |= s.species_keys
            total.species = len(total.species_keys)
            rows.append(total.record())
        return rows


def shard_dataset(
    cfg: ShardConfig,
    progress: ProgressFn | None = None,
    phase: PhaseFn | None = None,
) -> ShardResult:
    """Plan, (download,) write this part's units, and finalize when the whole plan is done.

    The output folder is locked for the job (one writer per folder and ``--part``).

    Args:
        progress: ``(done, total)`` callback for the current phase.
        phase: called with (phase name, total) when a phase (``download``, ``shard``) starts.

    Raises:
        ConfigError: bad arguments (all listed).
        BusyError: another live job is writing this folder (the same ``--part``).
        InputError / SchemaError: metadata or images unusable, empty selection; with
            ``--strict``, the first bad sample.
        OutputExistsError: ``--out`` holds another dataset.
        BiotroveError (exit 130): interrupted; rerunning resumes.
    """
    from biotrove_cli.core.locks import lock_folder, part_lock_name

    _check(cfg)
    t_start = time.monotonic()
    with timed("shard: plan"):
        plan = make_plan(cfg)  # the metadata is checked before the output folder is touched
    with lock_folder(Path(cfg.out), "dataset", name=part_lock_name(*cfg.part)):
        return _shard_locked(cfg, plan, t_start, progress, phase)


def _shard_locked(
    cfg: ShardConfig,
    plan: ShardPlan,
    t_start: float,
    progress: ProgressFn | None,
    phase: PhaseFn | None,
) -> ShardResult:
    started_iso = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _log_plan(plan)
    out = Path(cfg.out)
    resumed = prepare_output(out, plan)
    work = _PartWork.of(plan, cfg.part, out)
    _log_part(work, plan, cfg.part, out, resumed)
    samples = [s for u in work.todo for s in u.samples]
    download = _find_photos(samples, cfg, out, progress, phase, plan, work.done_before)

    workers = cfg.workers if cfg.workers > 0 else 1
    if phase is not None:
        phase("shard", len(samples))
    t_write = time.monotonic()
    try:
        write_all(work.todo, _write_settings(cfg, plan), workers, progress)
    except KeyboardInterrupt:
        raise _interrupted(out, None, plan) from None
    write_seconds = time.monotonic() - t_write

    done_now = complete_units(out, plan.unit_docs(), plan.fingerprint)
    missing = [i for i in range(len(plan.units)) if i not in done_now]
    if not missing:
        k, n = cfg.part
        run = {
            "started": started_iso,
            "seconds": round(time.monotonic() - t_start, 3),
            "write_seconds": round(write_seconds, 3),
            "workers": workers,
            "part": f"{k}/{n}",
            "units_written": len(work.todo),
            "samples_processed": len(samples),
            "images_per_second": round(len(samples) / write_seconds, 1) if write_seconds else None,
        }
        finalize(out, run=run)
    failed = [f for st in done_now.values() for f in st.get("failed_samples", [])]
    return ShardResult(
        out=out,
        fingerprint=plan.fingerprint,
        selection={**plan.selection, "species": len(plan.taxa)},
        splits=summarize(plan.document(), done_now),
        resumed=resumed,
        kept_units=len(work.mine) - len(work.todo),
        written_units=len(work.todo),
        other_parts_units=len(plan.units) - len(work.mine),
        pending_units=len(missing),
        finalized=not missing,
        seconds=time.monotonic() - t_start,
        images_per_second=len(samples) / write_seconds if write_seconds and samples else 0.0,
        download=download,
        warnings=plan.warnings,
        failed_samples=failed[:MAX_FAILED_LISTED],
    )


def _check(cfg: ShardConfig) -> None:
    """Every bad argument at once, then the photo folder (unless photos are downloaded)."""
    from biotrove_cli.core.errors import ConfigError

    problems = cfg.validate()
    if problems:
        raise ConfigError(problems, hint="see `biotrove shard --help`")
    images = Path(cfg.images)
    if not cfg.download and not images.is_dir():
        raise InputError(
            f"--images {images}: no such folder",
            hint="point --images at the photo folder, or add --download to fetch photo_url",
        )


def _log_plan(plan: ShardPlan) -> None:
    for w in plan.warnings:
        log.warning(w)
    sel = plan.selection
    log.info(
        f"plan: {sel['rows']} rows -> {sel['selected']} samples in "
        f"{plural(len(plan.units), 'shard')}"
        + "".join(
            f", {sel[k]} {k.replace('_', ' ')}"
            for k in ("duplicates", "conflicting", "no_species", "outside_categories", "capped")
            if sel.get(k)
        )
        + (
            f", {sel['unseen_species']} rare species set aside as unseen"
            if sel.get("unseen_species")
            else ""
        )
    )


@dataclass
class _PartWork:
    """This ``--part``'s share of the plan, against what is complete on disk already."""

    mine: list[Unit]  # the units of this part
    todo: list[Unit]  # those not complete yet
    done_before: dict[int, dict]  # ordinal -> stats of every unit complete before this run

    @classmethod
    def of(cls, plan: ShardPlan, part: tuple[int, int], out: Path) -> _PartWork:
        k, n = part
        mine = [u for u in plan.units if u.part_of(n) == k]
        done_before = complete_units(out, plan.unit_docs(), plan.fingerprint)
        todo = [u for u in mine if u.ordinal not in done_before]
        return cls(mine, todo, done_before)


def _log_part(
    work: _PartWork, plan: ShardPlan, part: tuple[int, int], out: Path, resumed: bool
) -> None:
    k, n = part
    if n > 1:
        kept = len(work.mine) - len(work.todo)
        log.info(
            f"part {k}/{n}: {len(work.mine)} of the {len(plan.units)} shards, {kept} already "
            f"complete ({len(work.done_before)} complete in all)"
        )
    elif resumed:
        log.info(
            f"resuming {out}: {len(work.done_before)} of {len(plan.units)} shards already complete"
        )


def _find_photos(
    samples: list[Sample],
    cfg: ShardConfig,
    out: Path,
    progress: ProgressFn | None,
    phase: PhaseFn | None,
    plan: ShardPlan,
    done_before: dict[int, dict],
) -> dict[str, Any] | None:
    """Set each sample's source (downloading what is missing with ``--download``); returns the
    download summary (None when nothing was fetched).

    Raises:
        InputError: not one of the samples has a photo.
    """
    images = Path(cfg.images)
    found = resolve_sources(samples, images)
    summary = None
    wanted = to_download(samples) if cfg.download else []
    if wanted:
        if phase is not None:
            phase("download", len(wanted))
        try:
            summary, fetched = download_photos(wanted, cfg, out, progress)
        except KeyboardInterrupt:
            raise _interrupted(out, done_before, plan) from None
        found += fetched
    if samples and not found:
        other = [s.problem for s in samples if s.problem and s.problem[0] != "missing"]
        if other:  # the photos are there, but none can be used
            reasons = Counter(reason for reason, _ in other)
            raise InputError(
                f"none of the {len(samples)} images to write can be used: "
                + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
                + f" (e.g. {other[0][1]})",
                hint=f"biotrove reads {', '.join(s[1:] for s in IMAGE_SUFFIXES)} photos, found "
                "by the path column or as {photo_id}.EXT with the exact photo id",
            )
        example = samples[0].path or samples[0].photo_id or samples[0].url
        raise InputError(
            f"none of the {len(samples)} images to write is under --images {images} "
            f"(e.g. {example!r})",
            hint="point --images at the photo folder: files are found by the path column, or "
            f"as {{photo_id}}.{'|'.join(s[1:] for s in IMAGE_SUFFIXES)} anywhere below it"
            + ("" if cfg.download else "; add --download to fetch photo_url"),
        )
    return summary


def _write_settings(cfg: ShardConfig, plan: ShardPlan) -> WriteSettings:
    k, n = cfg.part
    return WriteSettings(
        out=str(Path(cfg.out)),
        fingerprint=plan.fingerprint,
        resize_mode=cfg.resize_mode,
        image_size=cfg.image_size,
        jpeg_quality=cfg.jpeg_quality,
        caption=check_text_type(cfg.caption),
        captions=tuple(check_text_type(c) for c in cfg.captions),
        max_shard_bytes=cfg.max_shard_bytes,
        strict=cfg.strict,
        part_label=f"{k}/{n}",
    )


def _interrupted(out: Path, done: dict | None, plan: ShardPlan) -> BiotroveError:
    if done is None:
        done = complete_units(out, plan.unit_docs(), plan.fingerprint)
    return BiotroveError(
        f"interrupted: {len(done)} of {len(plan.units)} shards are complete in {out}",
        hint="run the same command again: it keeps the complete shards and redoes the rest",
        exit_code=130,
    )


def finalize_dataset(out: Path) -> ShardResult:
    """``biotrove shard --finalize DIR``: index a dataset whose parts were written separately."""
    t0 = time.monotonic()
    out = Path(out)
    manifest = finalize(out)
    doc = read_json(out / PLAN)
    done = complete_units(out, doc["units"], doc["fingerprint"])
    sel = dict(doc.get("selection", {}))
    sel["species"] = manifest["counts"]["species"]
    return ShardResult(
        out=out,
        fingerprint=doc["fingerprint"],
        selection=sel,
        splits=summarize(doc, done),
        resumed=True,
        kept_units=len(done),
        written_units=0,
        other_parts_units=0,
        pending_units=0,
        finalized=True,
        seconds=time.monotonic() - t0,
        images_per_second=0.0,
    )

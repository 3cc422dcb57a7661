"""The plan (:func:`make_plan`): read the metadata, drop rows without a species, exact
duplicate photos and photos whose rows disagree on the species (``conflicting``), keep the
``--categories``, set rare species aside into ``unseen`` (``--min-per-species``), cap frequent
ones (``--max-per-species``), split the rest into ``train``/``val`` by sample, shuffle, and cut
every split into units of ``--samples-per-shard``. The plan is a pure function of the
metadata rows, the arguments and the seed (rows are sorted by photo identity first, so file
order does not matter either): every rerun, and every ``--part K/N`` on N machines, computes
the same plan without talking to the others. Its fingerprint lands in ``plan.json``; an
output folder holding another plan is refused before any work.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.sample import sanitize_key
from biotrove_cli.core.data.shard.config import ShardConfig
from biotrove_cli.core.errors import InputError
from biotrove_cli.core.layout import SPLITS, shard_name
from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import RANKS

FORMAT = "biotrove-shards/1"


# -- keys -------------------------------------------------------------------------------------
def _key_base(photo_id: str, path: str, url: str) -> str:
    if photo_id:
        return sanitize_key(photo_id)
    if path:
        p = Path(path)
        return sanitize_key(str(p.with_suffix("")) if p.suffix else str(p))
    return "u" + hashlib.sha1(url.encode()).hexdigest()[:16]


# -- the plan ---------------------------------------------------------------------------------
@dataclass
class Sample:
    """One selected photo: where to find it and what it shows."""

    key: str
    ident: str  # identity used for de-duplication and ordering ("id:123", "path:a/b.jpg"...)
    photo_id: str
    path: str
    url: str
    taxon: Taxon
    split: str = ""
    source: str = ""  # the local file found under --images ('' = not found)
    problem: tuple[str, str] | None = None  # why no file was found: (reason, detail)


@dataclass
class Unit:
    """A planned shard: ``split/shard-{index:06d}.tar`` (and its overflow parts)."""

    split: str
    index: int
    ordinal: int  # position over all splits; decides the part that writes it
    samples: list[Sample]

    @property
    def name(self) -> str:
        return shard_name(self.index)

    def part_of(self, n_parts: int) -> int:
        return self.ordinal % n_parts + 1


@dataclass
class ShardPlan:
    """The shard plan: which sample goes to which unit (the training data plan is
    :class:`biotrove_cli.core.training.data.StreamPlan`)."""

    fingerprint: str
    args: dict[str, Any]
    units: list[Unit]
    selection: dict[str, int]
    taxa: list[Taxon]
    metadata: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def split_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for u in self.units:
            s = out.setdefault(u.split, {"samples": 0, "shards": 0})
            s["samples"] += len(u.samples)
            s["shards"] += 1
        return out

    def unit_docs(self) -> list[dict[str, Any]]:
        """The units as ``plan.json`` lists them (what :func:`.unit.complete_units` reads)."""
        return [{"split": u.split, "index": u.index, "samples": len(u.samples)} for u in self.units]

    def document(self) -> dict[str, Any]:
        """What goes into ``plan.json`` (small: no per-sample lists)."""
        return {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "args": self.args,
            "metadata": self.metadata,
            "selection": self.selection,
            "splits": self.split_counts(),
            "units": self.unit_docs(),
            "taxa": [
                {
                    "species_key": t.species_key,
                    "names": list(t.names),
                    "scientific_name": t.scientific_name,
                    "common_name": t.common_name,
                }
                for t in self.taxa
            ],
        }


#: The counts of ``plan.json``'s ``selection``, in order: what happened to the metadata rows.
SELECTION_COUNTS = (
    "rows",
    "no_species",
    "no_image_reference",
    "duplicates",
    "conflicting",
    "outside_categories",
    "unseen_species",
    "capped",
    "renamed_keys",
    "selected",
)


def make_plan(cfg: ShardConfig) -> ShardPlan:
    """Read the metadata and decide, deterministically, which sample goes to which shard.

    Raises:
        InputError/SchemaError: a metadata file is missing, unreadable or lacks columns.
        InputError: the selection is empty.
    """
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.readers import read_metadata

    args = cfg.dataset_args()
    metas = [read_metadata(p) for p in cfg.metadata]  # every schema problem before any work
    sel: Counter = Counter()
    warn: list[str] = []
    unique = _unique_samples(metas, sel, warn)
    wanted = set(args["categories"])
    if wanted:
        unique = _within_categories(unique, wanted, sel, warn)
    if not unique:
        raise _empty_selection(cfg, bool(wanted))
    splits = _split(unique, cfg, sel)
    _assign_keys(splits, sel)
    units, fingerprint = _cut_units(splits, args, cfg.samples_per_shard)
    sel["selected"] = sum(len(g) for g in splits.values())
    bank = LabelBank.from_taxa([s.taxon for g in splits.values() for s in g])
    return ShardPlan(
        fingerprint=fingerprint,
        args=args,
        units=units,
        selection={k: int(sel.get(k, 0)) for k in SELECTION_COUNTS},
        taxa=bank.taxa,
        metadata=[{"path": str(m.path), "schema": m.schema, "rows": len(m)} for m in metas],
        warnings=warn,
    )


def _unique_samples(metas: list[Any], sel: Counter, warn: list[str]) -> list[Sample]:
    """One sample per photo identity over every metadata file, in identity order.

    Rows of the same photo with the same species are duplicates: the first (in file then row
    order) is kept, so the plan ignores file order. Rows of the same photo with different
    species contradict each other: none of them can be trusted, so all are left out and
    counted as ``conflicting``.
    """
    candidates: list[tuple[str, int, int, Sample]] = []
    for fi, meta in enumerate(metas):
        for rec in meta.records:
            sel["rows"] += 1
            if not rec.taxon.species_key:
                sel["no_species"] += 1
                continue
            if rec.photo_id:
                ident = f"id:{rec.photo_id}"
            elif rec.path:
                ident = f"path:{rec.path}"
            elif rec.url:
                ident = f"url:{rec.url}"
            else:
                sel["no_image_reference"] += 1
                continue
            s = Sample(
                key="",
                ident=ident,
                photo_id=rec.photo_id,
                path=rec.path,
                url=rec.url,
                taxon=rec.taxon,
            )
            candidates.append((ident, fi, rec.row, s))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    unique: list[Sample] = []
    conflicts: list[list[Sample]] = []
    for _ident, group in itertools.groupby(candidates, key=lambda c: c[0]):
        rows = [c[3] for c in group]
        if len({r.taxon.species_key for r in rows}) > 1:
            sel["conflicting"] += len(rows)
            conflicts.append(rows)
            continue
        sel["duplicates"] += len(rows) - 1
        unique.append(rows[0])
    if conflicts:
        warn.append(_conflict_warning(conflicts, sel["conflicting"]))
    return unique


def _conflict_warning(conflicts: list[list[Sample]], n_rows: int) -> str:
    """What the plan says about photos whose rows name different species."""
    first = conflicts[0]
    ident = first[0].ident.split(":", 1)
    species = sorted({r.taxon.scientific_name or r.taxon.species_key for r in first})
    what = {"id": "photo_id", "path": "path", "url": "photo_url"}.get(ident[0], ident[0])
    return (
        f"{n_rows} rows left out as conflicting: {len(conflicts)} "
        f"{'photo is' if len(conflicts) == 1 else 'photos are'} given different species by "
        f"different rows (e.g. {what} {ident[1]}: {' vs '.join(species)}); fix the metadata "
        "to keep them"
    )


def _matches(taxon: Taxon, wanted: set[str]) -> bool:
    return any(taxon.name_at(r).lower() in wanted for r in RANKS)


def _within_categories(
    samples: list[Sample], wanted: set[str], sel: Counter, warn: list[str]
) -> list[Sample]:
    """The samples within ``--categories`` (names at any rank, lower case)."""
    kept = [s for s in samples if _matches(s.taxon, wanted)]
    found = {n for s in kept for r in RANKS if (n := s.taxon.name_at(r).lower()) in wanted}
    unknown = sorted(wanted - found)
    if unknown and kept:
        warn.append(f"--categories: no row lies within {', '.join(unknown)}")
    sel["outside_categories"] = len(samples) - len(kept)
    return kept


def _empty_selection(cfg: ShardConfig, by_categories: bool) -> InputError:
    where = ", ".join(str(p) for p in cfg.metadata)
    if by_categories:
        return InputError(
            f"empty selection: no row of {where} lies within {', '.join(cfg.categories)}",
            hint="--categories matches names at any rank (e.g. Aves, Araneae, Quercus); "
            "check the spelling with `biotrove info METADATA`",
        )
    return InputError(
        f"empty selection: {where} has no row with a species and an image reference",
        hint="rows need a species (genus + epithet or a scientific name) and a photo_id, "
        "path or photo_url",
    )


def _split(samples: list[Sample], cfg: ShardConfig, sel: Counter) -> dict[str, list[Sample]]:
    """Rare species to ``unseen``, frequent ones capped, the rest shuffled into train/val."""
    by_species: dict[str, list[Sample]] = {}
    for s in samples:
        by_species.setdefault(s.taxon.species_key, []).append(s)
    seen: list[Sample] = []
    unseen: list[Sample] = []
    for skey in sorted(by_species):
        group = by_species[skey]
        if cfg.min_per_species and len(group) < cfg.min_per_species:
            unseen.extend(group)
            sel["unseen_species"] += 1
            continue
        if cfg.max_per_species and len(group) > cfg.max_per_species:
            rng = random.Random(f"{cfg.seed}:cap:{skey}")
            group = list(group)
            rng.shuffle(group)
            sel["capped"] += len(group) - cfg.max_per_species
            group = sorted(group[: cfg.max_per_species], key=lambda s: s.ident)
        seen.extend(group)
    seen.sort(key=lambda s: s.ident)
    unseen.sort(key=lambda s: s.ident)
    random.Random(f"{cfg.seed}:split").shuffle(seen)
    random.Random(f"{cfg.seed}:unseen").shuffle(unseen)
    n_val = round(len(seen) * cfg.val_fraction)
    return {"train": seen[n_val:], "val": seen[:n_val], "unseen": unseen}


def _assign_keys(splits: dict[str, list[Sample]], sel: Counter) -> None:
    """Sanitised keys, unique within the dataset (a clash gets _2, _3... in identity order)."""
    taken: set[str] = set()
    everyone = sorted((s for group in splits.values() for s in group), key=lambda s: s.ident)
    for s in everyone:
        base = _key_base(s.photo_id, s.path, s.url) or "sample"
        key, n = base, 1
        while key in taken:
            n += 1
            key = f"{base}_{n}"
        taken.add(key)
        s.key = key
        if s.photo_id and key != s.photo_id:
            sel["renamed_keys"] += 1


def _cut_units(
    splits: dict[str, list[Sample]], args: dict[str, Any], per_shard: int
) -> tuple[list[Unit], str]:
    """Every split cut into units of ``per_shard`` samples, and the plan's fingerprint: the
    format, the arguments and every unit's samples (key, identity, taxon) in order."""
    units: list[Unit] = []
    h = hashlib.sha256()
    h.update(FORMAT.encode())
    h.update(json.dumps(args, sort_keys=True).encode())
    for split in SPLITS:
        group = splits[split]
        for i in range(0, len(group), per_shard):
            unit = Unit(split, i // per_shard, len(units), group[i : i + per_shard])
            units.append(unit)
            h.update(f"\n#{split}/{unit.index}".encode())
            for s in unit.samples:
                t = s.taxon
                h.update(
                    "\x1f".join(
                        (s.key, s.ident, *t.names, t.scientific_name, t.common_name)
                    ).encode()
                    + b"\x1e"
                )
        for s in group:
            s.split = split
    return units, h.hexdigest()
